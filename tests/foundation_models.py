"""Tiny foundation models for the tests, built offline: shrunken real ``config.json`` files, the
transformers model of each (``build_hf``), and imports through ``lmkit import-hf`` that carry the model's
own tokenizer (``Imports``: BERT with WordPiece, RoBERTa with byte-level BPE and ``<mask>``, Flan-T5 with
a unigram tokenizer, 100 sentinels and 28 padding rows, BART with byte-level BPE), shared by the test
modules that take a model downstream of its import.

Nothing here is a test. The tokenizers are tests/test_foreign_objectives.py's builders.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import transformers  # noqa: E402

from lmkit.cli import main  # noqa: E402
from test_foreign_objectives import CORPUS, _byte_bpe, _unigram, _wordpiece  # noqa: E402

transformers.logging.set_verbosity_error()

# Shrunken copies of real config.json files: every key as the real file spells it, sizes made tiny.
DISTILROBERTA = {  # distilroberta-base: 514 position rows for 512 positions, one token type, pad 1
    "architectures": ["RobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 34,
    "model_type": "roberta",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "type_vocab_size": 1,
    "vocab_size": 160,
}
FLAN_T5_SMALL = {  # google/flan-t5-small: gated-gelu, 6 heads × d_kv 64 on a 512 width, untied head
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 48,
    "d_kv": 8,
    "d_model": 32,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_decoder_layers": 2,
    "num_heads": 6,
    "num_layers": 2,
    "output_past": True,
    "pad_token_id": 0,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.23.1",
    "use_cache": True,
    "vocab_size": 160,
}
BART_BASE = {  # facebook/bart-base's keys (the hub file names BartModel; the head class is what lmkit maps)
    "activation_dropout": 0.1,
    "activation_function": "gelu",
    "add_bias_logits": False,
    "add_final_layer_norm": False,
    "architectures": ["BartForConditionalGeneration"],
    "attention_dropout": 0.1,
    "bos_token_id": 0,
    "classif_dropout": 0.1,
    "classifier_dropout": 0.0,
    "d_model": 32,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 2,
    "decoder_start_token_id": 2,
    "dropout": 0.1,
    "early_stopping": True,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 2,
    "eos_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "gradient_checkpointing": False,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_position_embeddings": 40,
    "model_type": "bart",
    "no_repeat_ngram_size": 3,
    "normalize_before": False,
    "normalize_embedding": True,
    "num_beams": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "scale_embedding": False,
    "torch_dtype": "float32",
    "transformers_version": "4.12.0.dev0",
    "use_cache": True,
    "vocab_size": 160,
}
BERT_BASE_UNCASED = {  # bert-base-uncased's config.json keys, sizes made tiny
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 64,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.6.0.dev0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 160,
}
ROBERTA_BASE = {**DISTILROBERTA, "max_position_embeddings": 66}  # 64 positions past the offset of 2


def build_hf(real: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A random transformers model of config ``real``, float32, eager attention, every 1-D parameter perturbed."""
    kw = {k: v for k, v in copy.deepcopy(real).items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = transformers.CONFIG_MAPPING[real["model_type"]](**kw)
    config.architectures = real["architectures"]
    torch.manual_seed(seed)
    hf = getattr(transformers, real["architectures"][0])._from_config(
        config, attn_implementation="eager", torch_dtype=torch.float32
    )
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:  # biases start at 0 and norms at 1, which would hide a mapping error
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)  # spread-out logits: no near-ties for greedy decoding to trip on
    return hf.eval()


def tol(x: torch.Tensor) -> float:
    return 1e-5 * max(1.0, float(x.abs().max()))


# --------------------------------------------------------------------------- imports with their own tokenizers

# each import: the shrunken real config, the tokenizer its real model has, rows past the tokenizer's size
KINDS: dict[str, tuple[dict[str, Any], Callable[[Path], Path], int]] = {
    "bert": (BERT_BASE_UNCASED, _wordpiece, 0),
    "roberta": (ROBERTA_BASE, _byte_bpe, 0),
    "flan-t5": (FLAN_T5_SMALL, _unigram, 28),  # t5's 32,128 rows for 32,100 tokens
    "bart": (BART_BASE, _byte_bpe, 0),
}
AUTO = {
    "BertForMaskedLM": transformers.AutoModelForMaskedLM,
    "RobertaForMaskedLM": transformers.AutoModelForMaskedLM,
    "T5ForConditionalGeneration": transformers.AutoModelForSeq2SeqLM,
    "BartForConditionalGeneration": transformers.AutoModelForSeq2SeqLM,
}
TOK_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
LICENSE = "apache-2.0"
PROMPT = "The quick brown fox jumps over the lazy dog."


def build_import(name: str, root: Path) -> dict[str, Any]:
    """A transformers folder of ``name`` with its own tokenizer files and a card, imported with `lmkit import-hf`."""
    real, make_tok, extra_rows = KINDS[name]
    tokdir = make_tok(root / "tok")
    auto = transformers.AutoTokenizer.from_pretrained(str(tokdir))
    ids = json.loads((tokdir / "config.json").read_text())  # the model's special ids, as the tokenizer has them
    real = {**real, **ids, "vocab_size": len(auto) + extra_rows}
    hf, stop_after = build_hf(real), None
    if extra_rows:  # rows past the tokenizer tie with <unk>'s and never win an argmax (a trained T5 never picks them)
        with torch.no_grad():
            head = hf.get_output_embeddings().weight  # (rows, C)
            head[len(auto) :] = head[auto.unk_token_id]
    for seed in range(1, 20) if name == "bart" else ():  # a model whose answer can be made to end a few tokens in
        stop_after = _stop_at_eos(hf, auto(PROMPT)["input_ids"], real)
        if stop_after is not None:
            break
        hf = build_hf(real, seed)
    assert name != "bart" or stop_after is not None
    folder = root / "hf"
    hf.save_pretrained(str(folder))
    for f in TOK_FILES:
        if (tokdir / f).is_file():  # transformers 5 writes no special_tokens_map.json
            shutil.copy(tokdir / f, folder / f)
    (folder / "README.md").write_text(f"---\nlicense: {LICENSE}\n---\n# tiny {name}\n", encoding="utf-8")
    assert main(["import-hf", str(folder), "--out", str(root / "ckpt"), "--json"]) == 0
    back = AUTO[real["architectures"][0]].from_pretrained(str(folder), attn_implementation="eager").eval()
    return {
        "name": name,
        "real": real,
        "hf_dir": folder,
        "ckpt": root / "ckpt",
        "auto": auto,
        "hf": back,
        "stop_after": stop_after,
    }


def _stop_at_eos(hf: torch.nn.Module, prompt: list[int], real: dict[str, Any]) -> int | None:
    """Raise BART's ``final_logits_bias`` of eos so that its greedy answer to ``prompt`` ends with eos a few
    tokens in (a constant on one logit leaves every earlier choice alone); the number of tokens it then writes,
    None where no step after the second brings eos nearer winning than every step before it."""
    eos, start = real["eos_token_id"], real["decoder_start_token_id"]
    dec = [start]
    with torch.no_grad():
        for _ in range(8):  # greedy by full forwards, never stopping
            logits = hf(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([dec])).logits[0, -1]
            dec.append(int(logits.argmax()))
        logits = hf(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([dec[:-1]])).logits[0]
    gap = logits.max(-1).values - logits[:, eos]  # (8,) how far eos is from winning at each step
    closer = [k for k in range(2, 8) if gap[k] < gap[:k].min()]  # steps where eos is nearer winning than before
    if not closer:
        return None
    k = closer[-1]
    lift = float(gap[k]) + (float(gap[:k].min()) - float(gap[k])) / 2
    with torch.no_grad():
        hf.final_logits_bias[0, eos] += lift
    return k + 1


class Imports:
    """The imports of :data:`KINDS`, each built the first time a test asks for it (``imports["bert"]``);
    conftest.py's ``foundation_imports`` fixture is one for the whole session, shared by the modules."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.built: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self.built:
            self.built[name] = build_import(name, self.factory.mktemp(name.replace("-", "_")))
        return self.built[name]


# --------------------------------------------------------------------------- running commands, texts


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    """Run ``lmkit ARGV`` in-process (it must succeed) and parse what it printed as JSON."""
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def write_texts(path: Path, seed: int, n: int) -> Path:
    """``n`` documents of several sentences drawn from the tokenizers' own corpus (so every word has pieces)."""
    rng = random.Random(seed)
    sents = [s.strip() + "." for text in CORPUS[:4] for s in text.replace("?", ".").replace("!", ".").split(".")]
    sents = [s for s in sents if len(s) > 3]
    docs = [" ".join(rng.choice(sents) for _ in range(4)) for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path
