"""The model card's description sections: what the model is, what it suits, its limits, how to load it.

Each ``*_section(f)`` takes the facts :func:`lmkit.ship.card.render.card_facts` read from a checkpoint
and returns Markdown lines; a figure the checkpoint does not hold is written as ``NOT_RECORDED``.
The family texts (:data:`FAMILY_TITLE`, :data:`FAMILY_USES`), the objective's description and a
checkpoint's display name are here too. The number formatting and the record readers every section
shares are ``lmkit.ship.card.figures``; the training and evaluation sections
``lmkit.ship.card.training``; the card itself (front matter, order of the sections)
``lmkit.ship.card.render``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmkit.models.hf import AUTO_CLASS, export_blocker, hf_architecture
from lmkit.models.int8 import quant_label
from lmkit.models.registry import spec_of
from lmkit.ship.card.figures import NOT_RECORDED, is_number, si, source_tokens, thousands

FAMILY_TITLE = {
    "decoder": "decoder-only (GPT/Llama-style) causal language model",
    "encoder": "encoder-only (BERT-style) masked language model",
    "encdec": "encoder-decoder (T5-style) text-to-text model",
}
FAMILY_USES = {
    "decoder": (
        "A decoder reads text left to right and predicts the next token from the ones before it, so "
        "it **generates**: it continues a prompt.",
        [
            "text generation and completion of a prompt (`lmkit generate`)",
            "zero-, one- and few-shot prompting: a task described and shown by examples in the prompt",
            "a base to fine-tune for a domain, for instructions or for chat",
        ],
        [
            "tasks that need the whole input seen in both directions at once (an encoder does those better)",
            "answering questions reliably: it continues text plausibly, it does not check facts",
        ],
    ),
    "encoder": (
        "An encoder sees the whole text in both directions at once and was trained to recover "
        "masked tokens, so it **understands** a text rather than writing one.",
        [
            "filling a blank: the most likely tokens for `[MASK]` (`lmkit fill-mask`)",
            "after adding a head and fine-tuning: sentence classification (e.g. sentiment), token "
            "classification (e.g. named entities), extractive question answering",
            "contextual token and sentence representations (e.g. for retrieval)",
        ],
        ["generating text left to right: it has no causal decoder"],
    ),
    "encdec": (
        "An encoder-decoder reads an input with its bidirectional encoder and writes an output with its "
        "causal decoder, attending to the input: it maps **text to text**.",
        [
            "filling masked spans: the input marks spans with `<extra_id_0>`, `<extra_id_1>`, ... and the "
            "output gives each span after its sentinel (its pre-training task)",
            "after fine-tuning on input/output pairs: summarisation, translation, question answering",
        ],
        [
            "open-ended continuation of a prompt as a decoder-only model does it",
            "the tasks above without fine-tuning: pre-training only taught it to fill spans",
        ],
    ),
}


def objective_text(objective: str) -> str:
    from lmkit import objectives as o

    if objective == "clm":
        return "causal language modeling: predict each next token from the previous ones only"
    if objective == "mlm":
        return (
            f"masked language modeling: {o.MLM_PROBABILITY:.0%} of the tokens chosen for prediction, of which "
            f"{o.MLM_MASK_SHARE:.0%} replaced by `[MASK]`, {o.MLM_RANDOM_SHARE:.0%} by a random token and the "
            "rest left unchanged; the model recovers the originals from context on both sides"
        )
    if objective == "span":
        return (
            f"span corruption: random spans covering {o.NOISE_DENSITY:.0%} of the tokens (mean span length "
            f"{o.MEAN_SPAN_LENGTH:g}) each replaced by a sentinel `<extra_id_N>`; the decoder writes "
            "`<extra_id_0> span <extra_id_1> span ...`"
        )
    if objective == "infill":
        return (
            f"text infilling (BART): sentences shuffled, then spans of Poisson({o.INFILL_POISSON_MEAN:g}) lengths "
            f"covering {o.INFILL_NOISE_DENSITY:.0%} of the tokens, each replaced by one mask token; the decoder "
            "writes the original text"
        )
    return objective


def default_name(path: Path) -> str:
    """A checkpoint's display name: its folder, or its run's folder for ``ckpt-NNNNNNN``."""
    path = Path(path).resolve()
    return path.parent.name if path.name.startswith("ckpt-") else path.name


# --------------------------------------------------------------------------- sections


def model_section(f: dict[str, Any], name: str, export: bool = False) -> list[str]:
    cfg, meta = f["cfg"], f["meta"]
    fam = cfg.family
    imported = meta.get("imported_from")
    base = meta.get("base_model") if isinstance(meta.get("base_model"), dict) else {}
    at = f" at revision `{base['revision']}`" if base.get("revision") else ""
    if imported:
        arch = imported.get("architecture") or hf_architecture(cfg) or "transformers"
        where = f"`{base['name']}`{at} on the hub" if base.get("hub") else f"`{imported.get('path', NOT_RECORDED)}`"
        origin = f"imported into lmkit from a Hugging Face `{arch}` ({where})"
    elif base.get("name"):
        origin = f"continued pre-training of the foundation model `{base['name']}`{at} with lmkit"
    else:
        origin = f"pre-trained from scratch with lmkit by {objective_text(cfg.objective).split(':')[0]}"
    lines = [f"# {name}", "", f"**{name}** is a {si(f['params'])}-parameter {FAMILY_TITLE[fam]}, {origin}.", ""]
    positions = {
        "rotary": f"rotary (θ = {cfg.rope_theta:g})",
        "learned": "learned absolute",
        "sinusoidal": "sinusoidal (fixed)",
        "alibi": "ALiBi (linear attention biases)",
    }[cfg.pos_encoding]
    if fam == "encdec" and cfg.residual != "post":  # T5's; BART (post-norm) has learned positions
        positions = "T5 relative position buckets (32 buckets, max distance 128)"
    heads = f"{cfg.n_heads} (head size {cfg.head_dim})"
    ffn, norm = "GELU", "LayerNorm, post-norm"  # an encoder: BERT's and RoBERTa's layout
    if fam != "encoder":  # the architecture variants of imported models (lmkit.model_variants)
        act = {"silu": "SiLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh approximation)", "relu": "ReLU"}
        gated = {"silu": "SwiGLU", "gelu": "GeGLU", "gelu_tanh": "GeGLU (tanh)", "relu": "ReGLU"}
        ffn = (gated if cfg.mlp == "gated" else act)[cfg.activation]
        norm = ("RMSNorm" if cfg.norm == "rms" else "LayerNorm") + {
            "parallel": ", parallel attention and MLP",
            "post": ", post-norm",
        }.get(cfg.residual, ", pre-norm")
    if fam == "decoder":
        if cfg.pos_encoding == "rotary" and cfg.rotary_fraction < 1:
            positions += f" on {cfg.rotary_fraction:.0%} of each head"
        if cfg.rope_scaling is not None and cfg.rope_scaling.type != "none":
            positions += f", {cfg.rope_scaling.type} scaling x{cfg.rope_scaling.factor:g}"
        if cfg.kv_heads != cfg.n_heads:
            kv = f"{cfg.kv_heads} key/value head" + ("s" if cfg.kv_heads > 1 else "")
            heads = f"{cfg.n_heads} query heads sharing {kv} (grouped-query), head size {cfg.head_dim}"
    rows = [("family", f"{fam}: {FAMILY_TITLE[fam]}"), ("parameters", f"{thousands(f['params'])} ({si(f['params'])})")]
    if spec_of(fam).attention == "encoder-decoder":
        rows.append(("layers", f"{cfg.n_layers} encoder + {cfg.n_decoder_layers or cfg.n_layers} decoder"))
    else:
        rows.append(("layers", str(cfg.n_layers)))
    rows += [
        ("model width (d_model)", str(cfg.d_model)),
        ("attention heads", heads),
        ("feed-forward", f"{ffn}, width {cfg.ffn_width}"),
        ("normalisation", f"{norm}, eps {cfg.norm_eps:g}"),
        ("positions", positions),
        ("context window", f"{thousands(cfg.max_seq_len)} tokens"),
        ("vocabulary", f"{thousands(cfg.vocab_size)} tokens ({(f['tokenizer'] or {}).get('kind', 'byte-level BPE')})"),
        ("tied input/output embeddings", "yes" if cfg.tie_embeddings else "no"),
    ]
    blocker = export_blocker(cfg)
    rows.append(("transformers class", f"`{hf_architecture(cfg)}`" if blocker is None else f"none: {blocker}"))
    q = f["quantization"]
    if q and export:
        rows.append(("weights", f"float32, dequantized from {quant_label(q)}"))
    elif q:
        rows.append(("weights stored as", quant_label(q)))
    lines += ["## Model", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    intro, uses, not_for = FAMILY_USES[fam]
    lines += ["## Intended uses", "", intro, "", "Suited to:", ""] + [f"- {u}" for u in uses]
    lines += ["", "Not suited to:", ""] + [f"- {u}" for u in not_for] + [""]
    return lines


def limitations_section(f: dict[str, Any]) -> list[str]:
    from lmkit.plan import TOKENS_PER_PARAM

    cfg, meta = f["cfg"], f["meta"]
    params = f["params"]
    lines = ["## Limitations and risks", ""]
    scale = (
        f"about 1/{124e6 / params:,.0f} of GPT-2 small (124 M)"
        if params < 124e6
        else f"{params / 124e6:.1f}x GPT-2 small (124 M)"
    )
    lines.append(
        f"- **Size.** {si(params)} parameters, {scale}: expect fluent-looking text only within what "
        "its training data covers, little world knowledge, and frequent factual errors."
    )
    sources = source_tokens(meta)
    paths = (meta.get("data") or {}).get("paths")
    if sources or paths:
        names = ", ".join(sorted(sources)) if sources else ", ".join(map(str, paths or ()))
        lines.append(
            f"- **Data domain.** It saw only {names}; text from other domains, languages or styles is out "
            "of distribution, and it reproduces the biases, errors and register of that data. "
            "Memorised passages, including personal data that filtering missed, can be regenerated."
        )
    else:
        lines.append(f"- **Data domain.** The training data was {NOT_RECORDED}; judge the model's domain by testing.")
    tokens = meta.get("tokens")
    if is_number(tokens) and params:
        tpp = tokens / params
        if tpp < TOKENS_PER_PARAM:
            lines.append(
                f"- **Training amount.** {tpp:.2g} tokens per parameter, below the ≈{TOKENS_PER_PARAM:g} "
                "of a compute-optimal (Chinchilla) run: the model is under-trained for its size."
            )
        else:
            lines.append(
                f"- **Training amount.** {tpp:.2g} tokens per parameter (compute-optimal is ≈{TOKENS_PER_PARAM:g})."
            )
    lines.append(
        "- **No alignment.** It is a pre-trained base model: no instruction tuning, no preference or "
        "safety tuning, no content filter at generation time. It can produce false, offensive or "
        "harmful text and should not be put in front of users without further work."
    )
    lines.append(f"- **Context.** It reads at most {thousands(cfg.max_seq_len)} tokens at a time.")
    decodes = spec_of(cfg.family).decodes
    if decodes == "none":
        lines.append(
            "- **Family.** An encoder cannot generate text; downstream tasks need a task head and fine-tuning."
        )
    elif decodes == "seq2seq":
        lines.append(
            "- **Family.** Pre-trained by span corruption only: it fills masked spans, and needs "
            "fine-tuning on input/output pairs for other tasks."
        )
    if any(is_number((meta.get("eval") or {}).get(k)) for k in ("loss", "perplexity", "bits_per_byte")):
        lines.append(
            "- **Evaluation.** The figures above are on held-out text from the same sources as the training "
            "data; no downstream benchmark was run."
        )
    else:  # an imported model: lmkit scored nothing yet
        lines.append(
            "- **Evaluation.** lmkit recorded no evaluation; score it on your text with `lmkit evaluate --data`."
        )
    if f["quantization"]:
        lines.append("- **Quantization.** Lower-precision weights change the outputs slightly (see Evaluation).")
    lines.append("")
    return lines


def _typed_specials(f: dict[str, Any]) -> list[str]:
    """Special tokens of this model's own tokenizer to name as examples (its eos, a T5 sentinel)."""
    eos = (f["tokenizer"] or {}).get("eos_tokens") or ["</s>"]
    return [eos[0], "<extra_id_0>"] if spec_of(f["cfg"].family).decodes == "seq2seq" else [eos[0]]


def usage_section(f: dict[str, Any], export: bool, load_path: str | None, hub_name: str | None) -> list[str]:
    cfg = f["cfg"]
    fam = cfg.family
    decodes = spec_of(fam).decodes
    ckpt = str(f["path"])
    lines = ["## How to use", "", "### With lmkit", "", "```bash"]
    if hub_name:
        lines.append(f"lmkit hub pull {hub_name} --out {hub_name.replace('/', '-')}")
        ckpt = hub_name.replace("/", "-")
    if export:
        lines.append(f"lmkit import-hf {load_path or '.'} --out {default_name(f['path'])}-lmkit")
        ckpt = f"{default_name(f['path'])}-lmkit"
    if decodes == "causal":
        lines.append(f'lmkit generate {ckpt} "Once upon a time" --max-new-tokens 50')
    elif decodes == "none":
        lines.append(f'lmkit fill-mask {ckpt} "The capital of France is [MASK]."')
    else:
        lines.append(f'lmkit generate {ckpt} "The <extra_id_0> sat on the <extra_id_1>."')
    if not export and export_blocker(cfg) is None and not f["quantization"]:
        lines.append(f"lmkit export {ckpt} --format hf --out {default_name(f['path'])}-hf")
    lines += ["```", "", "### With transformers", ""]
    blocker = export_blocker(cfg)
    if blocker:
        lines += [f"Not loadable in transformers: {blocker}.", ""]
        return lines
    if f["quantization"] and not export:
        lines += [
            "transformers takes float weights: export the checkpoint from before quantization, or export "
            "this one's quantized values as float32 with "
            f"`lmkit export {ckpt} --format hf --dequantize --out {default_name(f['path'])}-hf`.",
            "",
        ]
        return lines
    folder = load_path if export else f"{default_name(f['path'])}-hf"
    if not export:
        lines += [f"After `lmkit export` (above) the folder `{folder}` loads offline:", ""]
    auto = AUTO_CLASS[fam]
    if not f["tokenizer"]:
        lines += [
            "```python",
            f"from transformers import {auto}",
            "",
            f'model = {auto}.from_pretrained("{folder}").eval()',
            "```",
            "",
            "This checkpoint has no tokenizer.json, so there is no tokenizer for `AutoTokenizer` to load: "
            f"tokenize with the one the model was trained with (vocabulary {thousands(cfg.vocab_size)}).",
            "",
        ]
        return lines
    lines += [
        "```python",
        "import torch",
        f"from transformers import AutoTokenizer, {auto}",
        "",
        f'tok = AutoTokenizer.from_pretrained("{folder}")',
        f'model = {auto}.from_pretrained("{folder}").eval()',
    ]
    if decodes == "causal":
        lines += [
            'ids = tok("Once upon a time", return_tensors="pt")',
            "out = model.generate(**ids, max_new_tokens=50, do_sample=False)",
            "print(tok.decode(out[0], skip_special_tokens=True))",
        ]
    elif decodes == "none":
        lines += [
            'ids = tok("The capital of France is [MASK].", return_tensors="pt")',
            "with torch.no_grad():",
            "    logits = model(**ids).logits",
            "pos = (ids.input_ids[0] == tok.mask_token_id).nonzero()[0, 0]",
            "print(tok.decode(logits[0, pos].topk(5).indices))",
        ]
    else:
        lines += [
            'ids = tok("The <extra_id_0> sat on the <extra_id_1>.", return_tensors="pt")',
            "out = model.generate(**ids, max_new_tokens=20, do_sample=False)",
            "print(tok.decode(out[0], skip_special_tokens=False))",
        ]
    from lmkit.ship.verify_hf import PARITY_RTOL

    lines += [
        "```",
        "",
        (
            f"The tokenizer puts BOS (`{f['tokenizer']['bos_token']}`) before the text and no other special token, "
            "as lmkit does for this model; "
            if f["tokenizer"].get("adds_bos")
            else "The tokenizer adds no special tokens (no BOS/EOS, no [CLS]/[SEP]), exactly as lmkit encodes text; "
        )
        + "special-token text typed in the input ("
        + ", ".join(f"`{t}`" for t in _typed_specials(f))
        + ") becomes the special token. "
        f"Logits match lmkit's within {PARITY_RTOL:g} x max(1, max |logit|) in float32, and greedy decoding "
        "gives the same tokens (checked at export).",
        "",
    ]
    return lines
