"""The three transformer families side by side: what each learns, what it sees, what it is for.

This is the table a user reads before choosing ``model.family`` (``lmkit families``, also shown
by ``lmkit families --help``). Each row names the pre-training objective lmkit uses for the
family (``model.objective``: an encoder-decoder trains by T5's span corruption unless it names
BART's ``infill``), the context a position sees, the tasks the family suits, well-known models of
that kind, the foundation models ``lmkit import-hf`` brings in and the objective each continues
pre-training with (with its own tokenizer's mask token or sentinels), the lmkit commands that use
it and the ``transformers`` class its weights map onto.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One row of the table."""

    name: str  # the value of model.family
    kind: str
    objective: str
    context: str
    tasks: str
    models: str
    imported: str  # foundation models lmkit imports of this family, and the objective each continues with
    commands: str
    hf_class: str
    config: str


FAMILIES: tuple[Family, ...] = (
    Family(
        name="encoder",
        kind="encoder-only (BERT / RoBERTa-like)",
        objective="masked language modeling: 15% of tokens chosen (80% -> [MASK], 10% -> random, "
        "10% unchanged); predict the originals",
        context="bidirectional: every token sees the whole text, left and right",
        tasks="understanding a given text: sentence classification (sentiment, topic), token "
        "classification (named entities), filling a blank, embeddings for search; not text generation",
        models="BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA, DeBERTa, ModernBERT",
        imported="BERT (mlm with its [MASK]), RoBERTa and DistilRoBERTa (mlm with its <mask>)",
        commands="lmkit fill-mask, lmkit finetune-head --task sequence-classification|token-classification",
        hf_class="BertForMaskedLM (learned positions) / RobertaForMaskedLM (one token type) / "
        "RoFormerForMaskedLM (rotary)",
        config="configs/tiny-encoder.yaml, configs/cpu-small-encoder.yaml",
    ),
    Family(
        name="decoder",
        kind="decoder-only (GPT / Llama-like)",
        objective="causal language modeling: predict each next token from the ones before it",
        context="unidirectional: a token sees only the tokens before it",
        tasks="writing text: completion, chat, code, and (with prompts and few-shot examples) almost any "
        "task phrased as text to continue",
        models="GPT-2, GPT-3, GPT-4, Llama, Mistral, Falcon, BLOOM, BloombergGPT, Chinchilla",
        imported="GPT-2, SmolLM2, TinyLlama, Llama-3.2, Qwen2.5, Pythia, BLOOM (clm, each with its own tokenizer)",
        commands="lmkit generate",
        hf_class="LlamaForCausalLM",
        config="configs/tiny.yaml, configs/cpu-small.yaml, configs/gpu-124m.yaml",
    ),
    Family(
        name="encdec",
        kind="encoder-decoder (T5 / BART-like)",
        objective="span corruption (model.objective: span, the default; T5): 15% of tokens in spans of "
        "mean length 3 replaced by sentinels <extra_id_i>; the decoder writes <extra_id_0> span0 <extra_id_1> "
        "span1 ... </s>. Or text infilling (model.objective: infill; BART): sentences shuffled, then 30% of "
        "tokens in spans of Poisson(3) lengths, each span replaced by one mask token (an empty span inserts "
        "one); the decoder writes the original text",
        context="encoder bidirectional over the input; decoder unidirectional over its output, with "
        "cross-attention to the whole input",
        tasks="text-to-text: translation, summarisation, question answering, rewriting: an input text "
        "mapped to a new output text",
        models="T5, Flan-T5, mT5, BART, mBART, UL2",
        imported="T5 and Flan-T5 (span, with their own sentinels: <extra_id_0> is the highest id), "
        "BART (infill, with its <mask>)",
        commands="lmkit generate, lmkit finetune-head --task seq2seq",
        hf_class="T5ForConditionalGeneration / BartForConditionalGeneration (BART's layout)",
        config="configs/tiny-encdec.yaml, configs/cpu-small-encdec.yaml",
    ),
)

# What model hubs call each family's task (the card's pipeline_tag, the hub's task filter).
PIPELINE_TAG: dict[str, str] = {"decoder": "text-generation", "encoder": "fill-mask", "encdec": "text2text-generation"}

_ROWS = (
    ("kind", "Kind"),
    ("objective", "Objective"),
    ("context", "Context"),
    ("tasks", "Suits"),
    ("models", "Known models"),
    ("imported", "Imported"),
    ("commands", "lmkit commands"),
    ("hf_class", "Hugging Face class"),
    ("config", "Ready configs"),
)


def family(name: str) -> Family:
    """The row of ``model.family`` ``name``."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise KeyError(name)


def table(width: int = 100) -> str:
    """The families as a readable text table, one block per family."""
    label_w = max(len(label) for _, label in _ROWS) + 2
    wrap_w = max(40, width - label_w - 2)
    blocks = []
    for f in FAMILIES:
        lines = [f"model.family: {f.name}"]
        for key, label in _ROWS:
            text = textwrap.wrap(getattr(f, key), wrap_w) or [""]
            lines.append(f"  {label + ':':<{label_w}}{text[0]}")
            lines.extend(f"  {'':<{label_w}}{t}" for t in text[1:])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


HOW_TO_CHOOSE = (
    "How to choose: to understand or label text you are given, an encoder; to write text, a decoder; "
    "to turn one text into another (translate, summarise, answer from a passage), an encoder-decoder."
)
