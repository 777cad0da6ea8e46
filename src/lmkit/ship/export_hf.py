"""Hugging Face interoperability: export a checkpoint to a ``transformers`` folder, and import one back.

What this module owns:

* ``lmkit export CKPT --format hf --out DIR`` (:func:`export_hf`) writes a folder that
  ``transformers`` loads with its Auto classes, offline::

      config.json              the transformers config (LlamaConfig / BertConfig / RoFormerConfig / T5Config)
      model.safetensors        the weights under transformers' names
      tokenizer.json           lmkit's tokenizer file, unchanged
      tokenizer_config.json    + special_tokens_map.json: bos/eos/pad/unk/mask and the sentinels
      generation_config.json   bos/eos/pad (and T5's decoder_start_token_id), greedy by default
      README.md                the model card (lmkit.ship.card)
      lmkit_meta.json          the checkpoint's meta.json and the sha256 of model.safetensors

  Families map onto classes transformers already has: decoder -> ``LlamaForCausalLM``
  (``AutoModelForCausalLM``), encoder -> ``BertForMaskedLM`` with learned positions or
  ``RoFormerForMaskedLM`` with rotary ones (both ``AutoModelForMaskedLM``), encdec ->
  ``T5ForConditionalGeneration`` (``AutoModelForSeq2SeqLM``). The weight names come from each
  family's explicit ``hf_name_map(cfg)`` (in ``lmkit.models.<family>``): every tensor of the lmkit
  model must have a slot, nothing is matched by guessing. RoFormer rotates interleaved pairs of
  dimensions where lmkit rotates halves, so its query/key rows are permuted (:func:`row_orders`),
  and back on import. Tied weights are written once, the way ``save_pretrained`` writes them
  (Llama's ``lm_head``, BERT's decoder weight and T5's ``embed_tokens``/``lm_head`` are re-tied by
  transformers on load); BERT's and RoFormer's ``cls.predictions.decoder.bias`` is written as a
  copy of ``cls.predictions.bias`` so the folder loads the same whether transformers ties the two
  or not (transformers 5 ties them only with tied embeddings; untied, its logits use the decoder's
  bias, which import therefore reads).

  After writing, the export is checked (unless ``--no-verify``): the folder is loaded with the
  Auto class and its logits on a probe batch are compared with lmkit's, and greedy decoding
  (decoder, encdec) or the top-1 fill-mask prediction (encoder) must agree token for token. The
  tolerance is ``max |Δlogit| <= PARITY_RTOL · max(1, max |logit|)`` in fp32 (1e-4 relative: far
  above float32 rounding, far below any mapping mistake, which moves logits by O(1)). Observed on
  the tiny configs: 0 for the decoder and encdec (same kernels), up to about 1e-6 for BERT and
  RoFormer (a different order of the same float operations; RoFormer's sinusoid table is computed
  in float64).

  Not exportable, with a message saying why: a decoder with learned or sinusoidal positions (Llama
  has rotary only), an encoder with sinusoidal positions or a rotary theta other than 10000
  (RoFormer's), and a quantized checkpoint unless ``--dequantize`` (its int8 ``q · scale`` or
  fp16/bf16 values are then written as float32).

  ``AutoTokenizer.from_pretrained(DIR)`` gives a ``PreTrainedTokenizerFast`` over the same
  ``tokenizer.json``: ordinary text gets exactly lmkit's ids, and **no special tokens are added**
  (no BOS, no EOS, no [CLS]/[SEP]), which is also how lmkit encodes (the packer puts ``</s>``
  between documents). One difference: transformers turns special-token text typed in the input
  (``"</s>"``, ``"<extra_id_0>"``) into the special ids, as lmkit's ``encode(text,
  allow_special=True)`` does; lmkit's plain ``encode`` keeps such text as ordinary characters.

* ``lmkit import-hf DIR --out CKPT`` (:func:`import_hf`) reads such a folder (one of the four
  classes, saved on disk: safetensors, sharded safetensors, or ``pytorch_model.bin`` read with
  ``torch.load(weights_only=True)``) into an lmkit checkpoint, when lmkit can represent its config
  exactly; otherwise it says which setting has no lmkit equivalent (grouped-query attention,
  biases, gated/other activations, rope scaling, ...). ``tokenizer.json`` is carried over when it
  is an lmkit tokenizer (lmkit's special tokens at ids 0..104); for another tokenizer the message
  says what to pass instead. Weights become float32. ``meta.json`` records where the model came
  from; when the folder is an lmkit export whose weights are unchanged (``lmkit_meta.json``'s
  sha256 matches), the original training record is kept too.

Why by hand: ``transformers`` could load and re-save these folders, but the name maps are the
contract the parity tests pin down, and import must refuse what lmkit cannot represent rather
than load it approximately.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, replace_dir, sha256_file

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lmkit.config import ModelConfig
    from lmkit.tokenizer import Tokenizer

PARITY_RTOL = 1e-4  # max |Δlogit| allowed, relative to max(1, max |logit|), in fp32
LMKIT_META_FILE = "lmkit_meta.json"
EXPORT_FORMAT = "lmkit-hf-export/1"


@dataclass(frozen=True)
class HFTarget:
    """The transformers class one lmkit family maps onto, and what the hub calls its task."""

    family: str
    architecture: str
    model_type: str
    auto_class: str
    pipeline_tag: str


# The default class of each family; an encoder with rotary positions maps onto ROFORMER instead.
TARGETS: dict[str, HFTarget] = {
    "decoder": HFTarget("decoder", "LlamaForCausalLM", "llama", "AutoModelForCausalLM", "text-generation"),
    "encoder": HFTarget("encoder", "BertForMaskedLM", "bert", "AutoModelForMaskedLM", "fill-mask"),
    "encdec": HFTarget("encdec", "T5ForConditionalGeneration", "t5", "AutoModelForSeq2SeqLM",
                       "text2text-generation"),
}
ROFORMER = HFTarget("encoder", "RoFormerForMaskedLM", "roformer", "AutoModelForMaskedLM", "fill-mask")
TARGET_OF_ARCHITECTURE: dict[str, HFTarget] = {t.architecture: t for t in (*TARGETS.values(), ROFORMER)}
TARGET_OF_MODEL_TYPE: dict[str, HFTarget] = {t.model_type: t for t in (*TARGETS.values(), ROFORMER)}

# HF tensors that are copies of another tensor of the same file (written on export, checked on import).
HF_COPIES: dict[str, dict[str, str]] = {
    "LlamaForCausalLM": {},
    "BertForMaskedLM": {"cls.predictions.decoder.bias": "cls.predictions.bias"},
    "RoFormerForMaskedLM": {"cls.predictions.decoder.bias": "cls.predictions.bias"},
    "T5ForConditionalGeneration": {},
}
# HF tensors that are the embedding itself when embeddings are tied (absent from a save_pretrained file).
HF_TIED_TO_EMBEDDING: dict[str, tuple[str, ...]] = {
    "LlamaForCausalLM": ("lm_head.weight",),
    "BertForMaskedLM": ("cls.predictions.decoder.weight",),
    "RoFormerForMaskedLM": ("cls.predictions.decoder.weight",),
    "T5ForConditionalGeneration": ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"),
}
HF_EMBEDDING: dict[str, str] = {
    "LlamaForCausalLM": "model.embed_tokens.weight",
    "BertForMaskedLM": "bert.embeddings.word_embeddings.weight",
    "RoFormerForMaskedLM": "roformer.embeddings.word_embeddings.weight",
    "T5ForConditionalGeneration": "shared.weight",
}


def family_module(family: str) -> ModuleType:
    """The module of one family, which holds its ``hf_name_map`` and ``hf_config``."""
    if family == "decoder":
        from lmkit.models import decoder as mod
    elif family == "encoder":
        from lmkit.models import encoder as mod
    elif family == "encdec":
        from lmkit.models import encdec as mod
    else:
        raise LmkitError(f"unknown model family {family!r} (expected encoder, decoder or encdec)")
    return mod


def export_blocker(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` has no transformers class, or None when :func:`target_of` maps it."""
    if cfg.family == "decoder" and cfg.pos_encoding != "rotary":
        return (f"a decoder with {cfg.pos_encoding} positions has no LlamaForCausalLM equivalent "
                "(Llama uses rotary positions only)")
    if cfg.family == "encoder":
        try:
            family_module("encoder").hf_architecture(cfg)
        except ValueError as e:
            return str(e)
    return None


def target_of(cfg: ModelConfig, where: str = "") -> HFTarget:
    """The transformers class of ``cfg``: its family's, or RoFormer for a rotary encoder; else a clear error."""
    blocker = export_blocker(cfg)
    if blocker is not None:
        fix = {"decoder": "model.pos_encoding: rotary",
               "encoder": "model.pos_encoding: learned or rotary (rope_theta 10000)"}.get(cfg.family, "")
        raise LmkitError(f"{where + ': ' if where else ''}{blocker}; train with {fix} to export")
    if cfg.family == "encoder" and family_module("encoder").hf_architecture(cfg) == ROFORMER.architecture:
        return ROFORMER
    return TARGETS[cfg.family]


def name_map(cfg: ModelConfig, where: str = "") -> dict[str, str]:
    """lmkit parameter name -> transformers parameter name, or a clear error if there is no mapping."""
    target = target_of(cfg, where)
    try:
        return dict(family_module(cfg.family).hf_name_map(cfg))
    except ValueError as e:
        raise LmkitError(f"{where + ': ' if where else ''}cannot map onto {target.architecture}: {e}") from None


def row_orders(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmkit tensor name -> the order of its rows in the transformers tensor (absent: rows unchanged).

    Only RoFormer needs one: it rotates interleaved pairs of each head's dimensions where lmkit rotates
    the two halves, so the query and key projections (weights and biases) are permuted alike
    (``lmkit.models.encoder.hf_rotary_permutation``); attention scores are unchanged by it.
    """
    if target_of(cfg) is not ROFORMER:
        return {}
    from lmkit.models.encoder import hf_rotary_permutation

    perm = hf_rotary_permutation(cfg)
    return {f"blocks.{i}.attn.{p}.{w}": perm for i in range(cfg.n_layers)
            for p in ("q_proj", "k_proj") for w in ("weight", "bias")}


ROFORMER_TABLE = "roformer.encoder.embed_positions.weight"


def roformer_sinusoid_table(n_positions: int, head_dim: int) -> torch.Tensor:
    """RoFormer's fixed (n_positions, head_dim) table: sin of pos·10000^(-2i/head_dim), then cos.

    Computed the way ``RoFormerSinusoidalPositionalEmbedding.create_weight`` does (float64 NumPy,
    then float32), so the tensor written on export is bit for bit the one transformers would build;
    it equals lmkit's rotary angles with rope_theta 10000.
    """
    import numpy as np
    import torch

    j = np.arange(head_dim)
    angle = np.arange(n_positions)[:, None] / np.power(10000, 2 * (j // 2) / head_dim)[None, :]  # (P, hd)
    half = head_dim // 2
    out = np.empty((n_positions, head_dim), dtype=np.float64)
    out[:, :half] = np.sin(angle[:, 0::2])
    out[:, half:] = np.cos(angle[:, 1::2])
    return torch.from_numpy(out).to(torch.float32)


# --------------------------------------------------------------------------- weights


def to_hf_state(model: nn.Module, cfg: ModelConfig, where: str = "") -> dict[str, torch.Tensor]:
    """The model's tensors under transformers' names, tied tensors once, as ``save_pretrained`` would."""
    names = name_map(cfg, where)
    target = target_of(cfg, where)
    orders = row_orders(cfg)
    full = model.state_dict()  # every name, aliases of tied tensors included
    missing = [k for k in names if k not in full]
    if missing:
        raise LmkitError(f"{where}: the name map lists {missing[:3]} which the model does not have")
    mapped_ptrs = {full[k].data_ptr() for k in names}
    orphans = [k for k, t in full.items() if k not in names and t.data_ptr() not in mapped_ptrs]
    if orphans:
        raise LmkitError(f"{where}: weights with no slot in {target.architecture}: {orphans[:5]}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for ours, theirs in names.items():
        t = full[ours].detach().cpu()
        if ours in orders:
            out[theirs] = t.index_select(0, orders[ours])  # a new tensor in transformers' row order
            continue
        # safetensors refuses two names on one storage: a second name of a tied tensor gets a copy
        out[theirs] = t.clone() if t.data_ptr() in seen else t.contiguous()
        seen.add(t.data_ptr())
    for copy, source in HF_COPIES[target.architecture].items():
        out[copy] = out[source].clone()
    if target is ROFORMER:  # a frozen parameter of RoFormer: written, as save_pretrained does
        out[ROFORMER_TABLE] = roformer_sinusoid_table(cfg.max_seq_len, cfg.head_dim)
    return out


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """lmkit's tensors from a transformers state (names by the family's map), after checking every key.

    Tensors tied in lmkit may appear in the file as copies; they must then equal the embedding. Keys
    that carry no weights (rotary ``inv_freq``, ``position_ids``) and the parts of BERT/RoFormer
    that a masked LM does not use (pooler, next-sentence head) are skipped; RoFormer's sinusoid
    table must be the standard one. RoFormer's query/key rows are put back into lmkit's order
    (:func:`row_orders`).
    """
    import torch

    names = name_map(cfg, source)
    hf = _legacy_renames(hf)
    fam = cfg.family
    arch = target_of(cfg, source).architecture
    if arch in ("BertForMaskedLM", "RoFormerForMaskedLM") and not cfg.tie_embeddings \
            and "cls.predictions.decoder.bias" in hf:
        # Untied, transformers computes logits with the decoder's own bias and never reads
        # cls.predictions.bias (tied, it is the reverse): lmkit's one bias is the one in use.
        hf["cls.predictions.bias"] = hf["cls.predictions.decoder.bias"]
    missing = [theirs for theirs in names.values() if theirs not in hf]
    if missing:
        raise LmkitError(f"{source}: weights missing for {arch}: {missing[:4]}"
                         + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""))
    used = set(names.values())
    emb = hf[HF_EMBEDDING[arch]]
    for key in hf:
        if key in used or _ignorable(key):
            continue
        if key in HF_COPIES[arch]:
            if not torch.equal(hf[key], hf[HF_COPIES[arch][key]]):
                raise LmkitError(f"{source}: {key} differs from {HF_COPIES[arch][key]}; lmkit has one tensor for both")
            continue
        if cfg.tie_embeddings and key in HF_TIED_TO_EMBEDDING[arch]:
            if hf[key].shape != emb.shape or not torch.equal(hf[key], emb):
                raise LmkitError(f"{source}: {key} differs from the word embedding although the config ties them")
            continue
        if arch == ROFORMER.architecture and key == ROFORMER_TABLE:
            t = hf[key]
            ref = roformer_sinusoid_table(t.shape[0], cfg.head_dim) if t.dim() == 2 else None
            if ref is None or t.shape != ref.shape or not torch.allclose(t.to(torch.float32), ref, atol=1e-5):
                raise LmkitError(f"{source}: {key} is not RoFormer's sinusoid table; lmkit computes rotary positions "
                                 "with theta 10000 and cannot hold another table")
            continue
        if fam == "encdec" and key == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
            continue  # transformers ignores this key too: cross-attention has no position bias
        raise LmkitError(f"{source}: tensor {key!r} has no place in lmkit's {fam} "
                         f"(a layer or bias lmkit does not have)")
    orders = row_orders(cfg)
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in names.items():
        t = hf[theirs].to(torch.float32)
        if ours in orders:
            if t.shape[0] != len(orders[ours]):
                raise LmkitError(f"{source}: {theirs} has {t.shape[0]} rows, the config needs {len(orders[ours])}")
            t = t.index_select(0, torch.argsort(orders[ours]))  # back to lmkit's row order
        out[ours] = t.contiguous()
    return out


def _legacy_renames(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old BERT files name LayerNorm parameters gamma/beta (TensorFlow's names): rename explicitly."""
    out = {}
    for k, v in hf.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _ignorable(key: str) -> bool:
    """Keys that hold no weights (rotary inv_freq, position ids) or parts a masked LM does not use."""
    return (key.endswith("rotary_emb.inv_freq") or key.endswith("embeddings.position_ids")
            or key.startswith(("bert.pooler.", "roformer.pooler.", "cls.seq_relationship.")))


# --------------------------------------------------------------------------- config and tokenizer files


def hf_config(cfg: ModelConfig, tok: Tokenizer | None, dtype: str = "float32") -> dict[str, Any]:
    """transformers config.json of ``cfg`` (the family's ``hf_config``) with the tokenizer's ids."""
    out: dict[str, Any] = dict(family_module(cfg.family).hf_config(cfg))
    if tok is not None:
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
        out.update({k: v for k, v in ids.items() if v >= 0})
        if cfg.family == "encdec" and tok.pad_id >= 0:
            out["decoder_start_token_id"] = tok.pad_id  # lmkit's span objective starts targets with <pad>, as T5
    out["torch_dtype"] = dtype
    out["use_cache"] = True
    return out


def generation_config(cfg: ModelConfig, tok: Tokenizer | None) -> dict[str, Any]:
    """generation_config.json: special ids and greedy decoding (lmkit generate's default)."""
    out: dict[str, Any] = {"do_sample": False}
    if tok is not None:
        for key, i in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id), ("pad_token_id", tok.pad_id)):
            if i >= 0:
                out[key] = i
        if cfg.family == "encdec" and tok.pad_id >= 0:
            out["decoder_start_token_id"] = tok.pad_id
    return out


def tokenizer_files(tok: Tokenizer, max_len: int) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json and special_tokens_map.json for ``AutoTokenizer`` over lmkit's tokenizer.json."""
    from lmkit.tokenizer import BOS, EOS, MASK, PAD, SENTINELS, UNK

    specials: dict[str, Any] = {}
    for key, text, i in (("bos_token", BOS, tok.bos_id), ("eos_token", EOS, tok.eos_id),
                         ("unk_token", UNK, tok.unk_id), ("pad_token", PAD, tok.pad_id),
                         ("mask_token", MASK, tok.mask_id)):
        if i >= 0:
            specials[key] = text
    sentinels = [t for t, i in zip(SENTINELS, tok.sentinel_ids) if i >= 0]
    if sentinels:
        specials["additional_special_tokens"] = sentinels
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


# --------------------------------------------------------------------------- output folders


#: every file an export folder may hold (what export_hf writes); --overwrite replaces nothing else
EXPORT_FILES = re.compile(r"model\.safetensors|config\.json|generation_config\.json|tokenizer\.json|"
                          r"tokenizer_config\.json|special_tokens_map\.json|lmkit_meta\.json|README\.md")


def is_export(folder: Path) -> bool:
    """True if ``folder`` is an lmkit export (its ``lmkit_meta.json`` has this module's format)."""
    try:
        record = json.loads((folder / LMKIT_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == EXPORT_FORMAT


def is_lmkit_checkpoint(folder: Path) -> bool:
    """True if ``folder`` is an lmkit checkpoint (what import-hf may replace with --overwrite)."""
    from lmkit.models.checkpoint import is_checkpoint

    return is_checkpoint(folder)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- export


def dequantized_state(state: dict[str, torch.Tensor], quant: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Float32 weights holding exactly the values of a quantized checkpoint (``lmkit.ship.quantize`` formats).

    ``cast`` (fp16/bf16): every tensor widened to float32 (exact). ``int8-absmax-per-channel``: each
    listed module's ``qweight`` · ``scale`` becomes its ``weight``; the rest were kept in float.
    """
    import torch

    from lmkit.numerics import absmax_dequantize

    method = quant.get("method") if isinstance(quant, dict) else None
    out = dict(state)
    if method == "int8-absmax-per-channel":
        for name in quant.get("modules") or []:
            q, s = out.pop(f"{name}.qweight", None), out.pop(f"{name}.scale", None)
            if q is None or s is None:
                raise LmkitError(f"{source}: quantized module {name!r} lacks its qweight/scale tensors")
            out[f"{name}.weight"] = absmax_dequantize(q, s)
    elif method != "cast":
        raise LmkitError(f"{source}: unknown quantization method {method!r}; cannot dequantize")
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in out.items()}


def export_hf(ckpt: str | Path, out: str | Path, overwrite: bool = False, verify: bool = True,
              card_sections: list[str | Path] | None = None, license: str | None = None,
              language: list[str] | None = None, dequantize: bool = False) -> dict[str, Any]:
    """Write the transformers folder of checkpoint ``ckpt`` to ``out``; returns a report.

    The report has ``out``, ``architecture``, ``auto_class``, ``files`` and (with ``verify``) the
    parity check: ``max_abs_diff``, ``tolerance``, ``greedy_match``. A quantized checkpoint is
    refused unless ``dequantize``: then its quantized values are exported as float32 weights.
    """
    import torch
    from safetensors.torch import save_file

    from lmkit.config import model_config_from_dict
    from lmkit.models import build_model
    from lmkit.models.checkpoint import load_meta, load_state, load_weights_into, read_config, resolve_checkpoint
    from lmkit.ship.card import render_card
    from lmkit.tokenizer import Tokenizer

    path = resolve_checkpoint(ckpt)
    raw = read_config(path)
    cfg = model_config_from_dict(raw["model"])
    target = target_of(cfg, str(path))  # refuses unmappable configs before any work
    quant = raw.get("quantization")
    if quant and not dequantize:
        from lmkit.ship.card import quant_label

        raise LmkitError(f"{path}: is quantized ({quant_label(quant)}); {target.architecture} takes float weights: "
                         "export the checkpoint from before `lmkit quantize`, or pass --dequantize to export this "
                         "one's quantized values as float32 weights")
    names = name_map(cfg, str(path))
    out = Path(out)
    check_out_dir(out, overwrite, [ckpt, path, *(card_sections or [])], ours=[EXPORT_FILES, is_export],
                  kind="export")
    tok = Tokenizer.load(path / "tokenizer.json", strict=False) if (path / "tokenizer.json").is_file() else None
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        raise LmkitError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")

    model = build_model(cfg)
    state = load_state(path)
    if quant:
        state = dequantized_state(state, quant, str(path))
    load_weights_into(model, state, path)
    model.eval()
    dtypes = {t.dtype for t in model.state_dict().values()}
    if dtypes != {torch.float32}:
        raise LmkitError(f"{path}: weights are {sorted(map(str, dtypes))}; export expects float32 weights")
    state = to_hf_state(model, cfg, str(path))
    meta = load_meta(path)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", hf_config(cfg, tok))
        _write_json(tmp / "generation_config.json", generation_config(cfg, tok))
        if tok is not None:
            tok.save(tmp / "tokenizer.json")
            for name, data in tokenizer_files(tok, cfg.max_seq_len).items():
                _write_json(tmp / name, data)
        _write_json(tmp / LMKIT_META_FILE, {
            "format": EXPORT_FORMAT, "checkpoint": str(path.resolve()), "lmkit_model": raw["model"],
            "model_safetensors_sha256": sha256_file(tmp / "model.safetensors"), "meta": meta,
            "name_map": names,
        })
        card = render_card(path, sections=card_sections or [], license=license, language=language, export=True,
                           load_path=str(out))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        report: dict[str, Any] = {"out": str(out), "checkpoint": str(path), "family": cfg.family,
                                  "dequantized_from": quant.get("dtype") if quant else None,
                                  "architecture": target.architecture, "auto_class": target.auto_class,
                                  "tensors": len(state), "files": sorted(p.name for p in tmp.iterdir())}
        if verify:
            report["parity"] = verify_export(model, cfg, tmp, tok)
            if not report["parity"]["ok"]:
                p = report["parity"]
                raise LmkitError(f"{path}: exported model disagrees with lmkit (max |Δlogit| {p['max_abs_diff']:.3g} > "
                                 f"{p['tolerance']:.3g}, greedy match {p['greedy_match']}); nothing was written")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def probe_ids(cfg: ModelConfig, tok: Tokenizer | None, length: int = 16) -> list[int]:
    """Token ids to compare logits on: a sentence when there is a tokenizer, else fixed ids."""
    length = min(length, cfg.max_seq_len)
    ids: list[int] = []
    if tok is not None:
        ids = tok.encode("The quick brown fox jumps over the lazy dog, and then it sleeps.")
    if len(ids) < length:
        start = 105 if cfg.vocab_size > 105 + length else 0  # past lmkit's special tokens when possible
        ids += [start + (7 * i + 3) % (cfg.vocab_size - start) for i in range(length - len(ids))]
    return ids[:length]


def lmkit_greedy(model: nn.Module, cfg: ModelConfig, ids: list[int], steps: int, eos: int,
                 start: int = 0) -> list[int]:
    """Greedy tokens by ``lmkit.infer.generate`` (KV cache, as ``lmkit generate`` runs), for parity checks.

    Decoder: the tokens after the prompt ``ids``. Encdec: the decoder tokens after ``start`` for the
    input ``ids``. At most ``steps`` tokens; with ``eos`` >= 0, stops after producing it.
    """
    import torch

    from lmkit.infer.generate import GenerationConfig, generate_ids, generate_seq2seq_ids

    gen = GenerationConfig(max_new_tokens=steps, do_sample=False, stop_at_eos=eos >= 0)
    x = torch.tensor([ids])
    eos_id = eos if eos >= 0 else None
    if cfg.family == "decoder":
        out = generate_ids(model, x, gen, cache=True, eos_id=eos_id)[0, len(ids):].tolist()
    elif cfg.family == "encdec":
        out = generate_seq2seq_ids(model, x, gen, start_id=start, eos_id=eos_id, cache=True)[0].tolist()
    else:
        raise ValueError("greedy decoding needs a decoder or an encoder-decoder")
    if eos_id is not None and eos_id in out:
        out = out[: out.index(eos_id) + 1]  # a finished row is padded with eos
    return out


def verify_export(model: nn.Module, cfg: ModelConfig, folder: Path, tok: Tokenizer | None,
                  steps: int = 8) -> dict[str, Any]:
    """Load ``folder`` with transformers and compare logits and greedy output with lmkit's ``model``."""
    import torch
    import transformers

    target = target_of(cfg)
    auto = getattr(transformers, target.auto_class)
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # e.g. T5's notice about untied heads
    transformers.logging.disable_progress_bar()  # its "Loading weights" bar is noise in lmkit's output
    try:
        hf = auto.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as e:  # anything transformers raises means the folder is not loadable
        raise LmkitError(f"{folder}: transformers cannot load the export ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300]})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    loaded = type(hf).__name__
    if loaded != target.architecture:
        raise LmkitError(f"{folder}: {target.auto_class} built {loaded}, expected {target.architecture}")
    ids = probe_ids(cfg, tok)
    x = torch.tensor([ids])
    eos = tok.eos_id if tok is not None and tok.eos_id >= 0 else -1
    start = tok.pad_id if tok is not None and tok.pad_id >= 0 else 0
    with torch.no_grad():
        if cfg.family == "encdec":
            y = torch.tensor([[start, *ids[: max(1, len(ids) // 2) - 1]]])
            ours, theirs = model(x, y), hf(input_ids=x, decoder_input_ids=y).logits
        else:
            ours, theirs = model(x), hf(input_ids=x).logits
    diff = float((ours - theirs).abs().max())
    tol = PARITY_RTOL * max(1.0, float(ours.abs().max()))
    report: dict[str, Any] = {"loaded_class": loaded, "probe_tokens": len(ids), "max_abs_diff": diff,
                              "max_abs_logit": float(ours.abs().max()), "tolerance": tol}
    if cfg.family == "encoder":
        report["greedy_match"] = bool(torch.equal(ours.argmax(-1), theirs.argmax(-1)))
        report["greedy_what"] = "top-1 prediction at every position"
    else:
        prompt = ids[: max(1, min(len(ids), cfg.max_seq_len - steps))] if cfg.family == "decoder" else ids
        mine = lmkit_greedy(model, cfg, prompt, steps, eos, start)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": len(mine) if eos < 0 else steps, "do_sample": False}
        if eos < 0:
            gen_kwargs["eos_token_id"] = None
        with torch.no_grad():
            seq = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              **gen_kwargs)[0].tolist()
        theirs_gen = seq[len(prompt):] if cfg.family == "decoder" else seq[1:]
        report["greedy_match"] = theirs_gen == mine
        report["greedy_tokens"] = len(mine)
        report["greedy_what"] = f"{len(mine)} greedy tokens"
    report["ok"] = diff <= tol and report["greedy_match"]
    return report


# --------------------------------------------------------------------------- import


def _need(ok: bool, source: str, message: str) -> None:
    if not ok:
        raise LmkitError(f"{source}: {message}")


def lmkit_config_from_hf(hf: dict[str, Any], source: str, max_seq_len: int | None = None,
                         tokenizer_max_len: int | None = None) -> ModelConfig:
    """The lmkit ModelConfig equal to transformers config ``hf``, or an error naming what has no equivalent."""
    from lmkit.config import ModelConfig

    archs = hf.get("architectures") or []
    target = next((TARGET_OF_ARCHITECTURE[a] for a in archs if a in TARGET_OF_ARCHITECTURE), None)
    if target is None:
        if archs:
            supported = ", ".join(TARGET_OF_ARCHITECTURE)
            raise LmkitError(f"{source}: architecture {', '.join(map(str, archs))} is not supported "
                             f"(lmkit imports {supported})")
        target = TARGET_OF_MODEL_TYPE.get(str(hf.get("model_type")))
        if target is None:
            raise LmkitError(f"{source}: model_type {hf.get('model_type')!r} is not supported "
                             f"(lmkit imports {', '.join(TARGET_OF_ARCHITECTURE)})")
    _need(hf.get("model_type", target.model_type) == target.model_type, source,
          f"model_type {hf.get('model_type')!r} does not match {target.architecture}")
    fam = target.family

    def geti(key: str, default: int | None = None) -> int:
        v = hf.get(key, default)
        _need(isinstance(v, int) and not isinstance(v, bool) and v > 0, source, f"{key} must be a positive integer, got {v!r}")
        return int(v)

    if fam == "decoder":
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        kv = hf.get("num_key_value_heads") or heads
        _need(kv == heads, source, f"grouped-query attention (num_key_value_heads {kv} != num_attention_heads "
                                   f"{heads}) has no lmkit equivalent: lmkit's attention has one key/value head per head")
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        hd = hf.get("head_dim") or d // heads
        _need(hd == d // heads, source, f"head_dim {hd} != hidden_size / num_attention_heads ({d // heads}); "
                                        "lmkit's heads split d_model evenly")
        _need(hf.get("hidden_act", "silu") == "silu", source,
              f"hidden_act {hf.get('hidden_act')!r}: lmkit's decoder uses SwiGLU (silu)")
        _need(not hf.get("attention_bias", False), source, "attention_bias is true: lmkit's decoder has no biases")
        _need(not hf.get("mlp_bias", False), source, "mlp_bias is true: lmkit's decoder has no biases")
        _need(hf.get("pretraining_tp", 1) in (None, 1), source, "pretraining_tp != 1 is not supported")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling")
        rope_type = (rope.get("rope_type") or rope.get("type") or "default") if isinstance(rope, dict) else "default"
        _need(rope_type == "default" and not scaling, source,
              f"rope scaling ({scaling or rope_type}) has no lmkit equivalent: lmkit uses plain rotary positions")
        theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or hf.get("rope_theta") or 10000.0
        _need(not hf.get("sliding_window"), source, "sliding-window attention is not supported")
        cfg = ModelConfig(family="decoder", vocab_size=geti("vocab_size"), d_model=d,
                          n_layers=geti("num_hidden_layers"), n_heads=heads, d_ff=geti("intermediate_size"),
                          max_seq_len=max_seq_len or geti("max_position_embeddings", 2048), pos_encoding="rotary",
                          rope_theta=float(theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)), dropout=0.0,
                          tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    elif fam == "encoder":
        _need(hf.get("hidden_act", "gelu") == "gelu", source,
              f"hidden_act {hf.get('hidden_act')!r}: lmkit's encoder uses exact GELU (\"gelu\")")
        rotary = target is ROFORMER
        if rotary:  # RoFormer: BERT blocks with rotary positions (theta 10000) and no position table
            _need(not hf.get("rotary_value", False), source,
                  "rotary_value is true: lmkit rotates queries and keys only, not values")
            _need(hf.get("embedding_size") in (None, hf.get("hidden_size")), source,
                  f"embedding_size {hf.get('embedding_size')} != hidden_size {hf.get('hidden_size')}: lmkit's "
                  "encoder has no embedding projection")
        else:
            _need(hf.get("position_embedding_type", "absolute") == "absolute", source,
                  f"position_embedding_type {hf.get('position_embedding_type')!r}: lmkit's BERT layout has "
                  "absolute learned positions only")
        from lmkit.models.encoder import TYPE_VOCAB_SIZE

        _need(hf.get("type_vocab_size", 2) == TYPE_VOCAB_SIZE, source,
              f"type_vocab_size {hf.get('type_vocab_size')} != {TYPE_VOCAB_SIZE} (lmkit's encoder has two segments)")
        _need(not hf.get("is_decoder", False) and not hf.get("add_cross_attention", False), source,
              f"a {target.model_type} model used as a decoder (is_decoder / add_cross_attention) is not supported")
        d, heads = geti("hidden_size"), geti("num_attention_heads")
        _need(d % heads == 0, source, f"hidden_size {d} is not divisible by num_attention_heads {heads}")
        if rotary:
            _need((d // heads) % 2 == 0, source, f"head size {d // heads} is odd: rotary positions need an even one")
        n_pos = geti("max_position_embeddings", 1536 if rotary else 512)
        if max_seq_len is not None and not rotary:
            _need(max_seq_len <= n_pos, source, f"--max-seq-len {max_seq_len} exceeds the {n_pos} learned positions")
        cfg = ModelConfig(family="encoder", vocab_size=geti("vocab_size"), d_model=d,
                          n_layers=geti("num_hidden_layers"), n_heads=heads, d_ff=geti("intermediate_size"),
                          max_seq_len=max_seq_len or n_pos, pos_encoding="rotary" if rotary else "learned",
                          rope_theta=10000.0,
                          norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
                          dropout=float(hf.get("hidden_dropout_prob", 0.1)),
                          tie_embeddings=bool(hf.get("tie_word_embeddings", True)))
    else:
        from lmkit.models.encdec import REL_BUCKETS, REL_MAX_DISTANCE

        ffp = hf.get("feed_forward_proj", "relu")
        _need(ffp == "relu", source, f"feed_forward_proj {ffp!r}: lmkit's encoder-decoder is T5 v1.0 (ReLU MLP, "
                                     "not gated as in T5 v1.1 / Flan-T5)")
        _need(hf.get("relative_attention_num_buckets", 32) == REL_BUCKETS, source,
              f"relative_attention_num_buckets must be {REL_BUCKETS}")
        _need(hf.get("relative_attention_max_distance", 128) == REL_MAX_DISTANCE, source,
              f"relative_attention_max_distance must be {REL_MAX_DISTANCE}")
        d, heads = geti("d_model"), geti("num_heads")
        _need(d % heads == 0 and hf.get("d_kv", d // heads) == d // heads, source,
              f"d_kv {hf.get('d_kv')} != d_model / num_heads ({d // heads if d % heads == 0 else '?'}): lmkit's "
              "heads split d_model evenly")
        # T5 v1.0 ties the head to the embedding and scales decoder states by d_model^-0.5; lmkit does
        # exactly that when tied. A head without the scaling (transformers 5 writes tie_word_embeddings:
        # true with scale_decoder_outputs: false for such a model) becomes lmkit's untied head, filled
        # from the file's lm_head or, when the file has none, from the embedding it is tied to.
        tie = bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False))
        n_enc = geti("num_layers")
        n_dec = hf.get("num_decoder_layers") or n_enc
        cfg = ModelConfig(family="encdec", vocab_size=geti("vocab_size"), d_model=d, n_layers=n_enc, n_heads=heads,
                          d_ff=geti("d_ff"), n_decoder_layers=None if n_dec == n_enc else int(n_dec),
                          max_seq_len=max_seq_len or hf.get("n_positions") or tokenizer_max_len or 512,
                          pos_encoding="rotary",  # unused by the T5 layout (relative position bias)
                          norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
                          dropout=float(hf.get("dropout_rate", 0.1)), tie_embeddings=tie)
    try:
        cfg.validate()
    except LmkitError as e:
        raise LmkitError(f"{source}: {e}") from None
    return cfg


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    def safe(p: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types on corrupt files
            raise LmkitError(f"{p}: cannot read weights ({e})") from None

    def pickle_free(p: Path) -> dict[str, torch.Tensor]:
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            raise LmkitError(f"{p}: cannot read weights safely ({str(e).splitlines()[0][:200]})") from None

    if (folder / "model.safetensors").is_file():
        return safe(folder / "model.safetensors")
    for index_name, reader in (("model.safetensors.index.json", safe), ("pytorch_model.bin.index.json", pickle_free)):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as e:
                raise LmkitError(f"{index}: unreadable shard index ({e})") from None
            out: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if Path(shard).name != shard:
                    raise LmkitError(f"{index}: shard name {shard!r} is not a plain file name")
                out.update(reader(folder / shard))
            return out
    if (folder / "pytorch_model.bin").is_file():
        return pickle_free(folder / "pytorch_model.bin")
    raise LmkitError(f"{folder}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


def import_hf(src: str | Path, out: str | Path, overwrite: bool = False, tokenizer: str | Path | None = None,
              no_tokenizer: bool = False, max_seq_len: int | None = None) -> dict[str, Any]:
    """Read a transformers folder into an lmkit checkpoint at ``out``; returns a report."""
    import torch

    from lmkit.models import build_model, count_parameters
    from lmkit.models.checkpoint import save_checkpoint
    from lmkit.tokenizer import Tokenizer

    folder = Path(src)
    if not folder.is_dir():
        raise LmkitError(f"{folder}: not a folder (give the folder that holds config.json and the weights)")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise LmkitError(f"{folder}: no config.json")
    try:
        hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmkitError(f"{cfg_path}: unreadable ({e})") from None
    if hf_cfg.get("format") == "lmkit-checkpoint/1":
        raise LmkitError(f"{folder}: is already an lmkit checkpoint (nothing to import)")
    if max_seq_len is not None and max_seq_len <= 0:
        raise LmkitError(f"--max-seq-len must be positive, got {max_seq_len}")
    out = Path(out)
    check_out_dir(out, overwrite, [folder, *([tokenizer] if tokenizer else [])], ours=is_lmkit_checkpoint,
                  kind="checkpoint")

    tok_max = None
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            v = json.loads(tc.read_text(encoding="utf-8")).get("model_max_length")
            tok_max = int(v) if isinstance(v, int) and 0 < v < 1_000_000 else None
        except (OSError, ValueError):
            tok_max = None
    cfg = lmkit_config_from_hf(hf_cfg, str(cfg_path), max_seq_len, tok_max)

    tok: Tokenizer | None = None
    if not no_tokenizer:
        tok_path = Path(tokenizer) if tokenizer else folder / "tokenizer.json"
        if tokenizer is None and not tok_path.is_file():
            raise LmkitError(f"{folder}: no tokenizer.json; lmkit needs its tokenizer to train or evaluate "
                             "(pass --tokenizer FILE with an lmkit tokenizer of the same vocabulary, or "
                             "--no-tokenizer to import the weights alone)")
        try:
            tok = Tokenizer.load(tok_path)
        except LmkitError as e:
            raise LmkitError(f"{e}. lmkit's pipeline needs <pad>, <s>, </s>, <unk>, [MASK], <extra_id_0..99> at ids "
                             "0..104: pass --tokenizer FILE with such a tokenizer of the same vocabulary, or "
                             "--no-tokenizer to import the weights alone") from None
        if tok.vocab_size != cfg.vocab_size:
            raise LmkitError(f"{tok_path}: tokenizer has {tok.vocab_size} tokens but the model's vocabulary is "
                             f"{cfg.vocab_size}; they must match (or pass --no-tokenizer)")

    weight_files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    hashes = {p.name: sha256_file(p) for p in weight_files}
    record = _export_record(folder, hashes.get("model.safetensors"))
    if record is not None:
        cfg = _original_config(record, cfg, max_seq_len)

    weights = read_hf_weights(folder)
    if cfg.family == "encdec" and not cfg.tie_embeddings and "lm_head.weight" not in weights \
            and "shared.weight" in weights:
        weights["lm_head.weight"] = weights["shared.weight"].clone()  # transformers ties a missing head
    state = from_hf_state(weights, cfg, str(folder))
    if "pos_emb.weight" in state and state["pos_emb.weight"].shape[0] > cfg.max_seq_len:
        state["pos_emb.weight"] = state["pos_emb.weight"][: cfg.max_seq_len].clone()
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    if [m for m in missing if m in params] or unexpected:
        raise LmkitError(f"{folder}: weights do not fit the derived config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    for name, t in model.state_dict().items():
        if name in state and t.shape != state[name].shape:
            raise LmkitError(f"{folder}: {name} has shape {tuple(state[name].shape)}, config needs {tuple(t.shape)}")

    kept_history = record is not None
    meta: dict[str, Any] = dict(record.get("meta") or {}) if record is not None else {}
    meta.update({
        "family": cfg.family, "objective": cfg.objective, "params": count_parameters(model),
        "imported_from": {
            "path": str(folder.resolve()), "architecture": target_of(cfg).architecture,
            "model_type": hf_cfg.get("model_type"), "transformers_version": hf_cfg.get("transformers_version"),
            "weights_sha256": hashes, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training_record": "kept from the lmkit export (weights unchanged)" if kept_history else "not recorded",
        },
    })
    if tok is not None:
        meta["tokenizer_sha256"] = tok.sha256
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # empty (check_out_dir refused anything else but a checkpoint save_checkpoint replaces)
    with torch.no_grad():
        path = save_checkpoint(out, model, cfg, tokenizer=tok, meta=meta)
    return {"checkpoint": str(path), "family": cfg.family, "architecture": target_of(cfg).architecture,
            "params": meta["params"], "tokenizer": tok is not None, "training_record_kept": kept_history,
            "model": {k: getattr(cfg, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_width",
                                                   "max_seq_len", "tie_embeddings")}}


def _export_record(folder: Path, weights_sha256: str | None) -> dict[str, Any] | None:
    """lmkit_meta.json of an lmkit export whose model.safetensors is unchanged (same sha256), else None."""
    f = folder / LMKIT_META_FILE
    if weights_sha256 is None or not f.is_file():
        return None
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        return None
    return record if record.get("model_safetensors_sha256") == weights_sha256 else None


def _original_config(record: dict[str, Any], derived: ModelConfig, max_seq_len: int | None) -> ModelConfig:
    """The exported checkpoint's own ModelConfig when it agrees with the transformers config.

    Fields transformers has no slot for (encdec's context and target lengths, its unused position
    setting) then come back exactly as they were; any disagreement keeps the derived config.
    """
    import dataclasses

    from lmkit.config import model_config_from_dict

    try:
        orig = model_config_from_dict(record.get("lmkit_model") or {})
    except LmkitError:
        return derived
    same = ("family", "vocab_size", "d_model", "n_layers", "n_heads", "ffn_width", "tie_embeddings", "norm_eps")
    if any(getattr(orig, k) != getattr(derived, k) for k in same):
        return derived
    if (orig.n_decoder_layers or orig.n_layers) != (derived.n_decoder_layers or derived.n_layers):
        return derived
    if orig.family == "decoder" and (orig.pos_encoding, orig.rope_theta) != (derived.pos_encoding, derived.rope_theta):
        return derived
    if orig.family == "encoder" and (orig.pos_encoding != derived.pos_encoding or orig.rope_theta != derived.rope_theta
                                     or orig.max_seq_len < derived.max_seq_len):
        return derived
    return dataclasses.replace(orig, max_seq_len=max_seq_len) if max_seq_len else orig


# --------------------------------------------------------------------------- command line


def cli_export(args: argparse.Namespace) -> int:
    """``lmkit export CKPT --format hf --out DIR [--overwrite] [--no-verify]``."""
    if args.format != "hf":
        raise LmkitError(f"--format {args.format!r} is not supported (only hf)")
    report = export_hf(args.checkpoint, args.out, overwrite=args.overwrite, verify=not args.no_verify,
                       card_sections=args.add_section or [], license=args.license, language=args.language,
                       dequantize=args.dequantize)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"exported {report['family']} -> {report['architecture']} in {report['out']}"
          + (f" (weights dequantized from {report['dequantized_from']} to float32)" if report["dequantized_from"] else ""))
    print(f"  files: {', '.join(report['files'])}")
    p = report.get("parity")
    if p:
        print(f"  parity with transformers: max |Δlogit| {p['max_abs_diff']:.2g} (tolerance {p['tolerance']:.2g}) "
              f"over {p['probe_tokens']} tokens; {p['greedy_what']} identical")
    load = f"  load it: transformers.{report['auto_class']}.from_pretrained({report['out']!r})"
    if "tokenizer.json" in report["files"]:
        print(f"{load} and AutoTokenizer.from_pretrained({report['out']!r})")
    else:
        print(f"{load}; no tokenizer: {report['checkpoint']} has no tokenizer.json, so AutoTokenizer cannot load "
              "one from the export (tokenize with the tokenizer the model was trained with)")
    return 0


def cli_import(args: argparse.Namespace) -> int:
    """``lmkit import-hf DIR --out CKPT [--tokenizer FILE | --no-tokenizer] [--max-seq-len N]``."""
    if args.tokenizer and args.no_tokenizer:
        raise LmkitError("give --tokenizer or --no-tokenizer, not both")
    report = import_hf(args.folder, args.out, overwrite=args.overwrite, tokenizer=args.tokenizer,
                       no_tokenizer=args.no_tokenizer, max_seq_len=args.max_seq_len)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["model"]
    print(f"imported {report['architecture']} as an lmkit {report['family']} ({report['params']:,} parameters: "
          f"{m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads, vocab {m['vocab_size']:,}, "
          f"context {m['max_seq_len']:,}) -> {report['checkpoint']}")
    if not report["tokenizer"]:
        print("  no tokenizer imported: lmkit commands that read text need one in the checkpoint", file=sys.stderr)
    return 0
