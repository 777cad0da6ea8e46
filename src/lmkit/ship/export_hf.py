"""Export a checkpoint as a Hugging Face ``transformers`` folder: ``lmkit export CKPT --format hf --out DIR``.

What this module owns:

* :func:`export_hf` writes a folder that ``transformers`` loads with its Auto classes, offline::

      config.json              the transformers config of the model's class (LlamaConfig, GPT2Config, ...)
      model.safetensors        the weights under transformers' names, or above ``--max-shard-size``
                               (default 5GB, the hub's) model-0000i-of-0000n.safetensors shards of
                               whole tensors + model.safetensors.index.json (transformers' layout)
      tokenizer.json           lmkit's tokenizer file, unchanged
      tokenizer_config.json    + special_tokens_map.json: bos/eos/pad/unk/mask and the sentinels
      generation_config.json   bos/eos/pad (and T5's decoder_start_token_id), greedy by default
      README.md                the model card (lmkit.ship.card)
      lmkit_meta.json          the checkpoint's meta.json and the sha256 of every weight file

  The class is the one whose layout the model's fields are (``lmkit.models.hf``: one adapter per
  class in ``lmkit.models.hf_adapters``): lmkit's own decoder and an imported SmolLM2 or Llama ->
  ``LlamaForCausalLM`` (with its grouped-query attention), Qwen2 -> ``Qwen2ForCausalLM``, GPT-2 ->
  ``GPT2LMHeadModel``, Pythia -> ``GPTNeoXForCausalLM``, BLOOM -> ``BloomForCausalLM`` (all
  ``AutoModelForCausalLM``); encoder -> ``BertForMaskedLM`` with learned positions (one token type:
  ``RobertaForMaskedLM``) or ``RoFormerForMaskedLM`` with rotary ones (``AutoModelForMaskedLM``);
  encdec -> ``T5ForConditionalGeneration`` or, in BART's layout, ``BartForConditionalGeneration``
  (``AutoModelForSeq2SeqLM``). The tensors come from the adapter's
  explicit rules: every tensor of the lmkit model must have a slot, nothing is matched by guessing;
  GPT-2's Conv1D matrices are written transposed and its q/k/v fused, GPT-NeoX's and BLOOM's q/k/v
  interleaved per head, RoFormer's query/key rows permuted (it rotates interleaved pairs where
  lmkit rotates halves), and back on import. Tied weights are written once, the way
  ``save_pretrained`` writes them (the decoders' head, BERT's decoder weight and T5's
  ``embed_tokens``/``lm_head`` are re-tied by transformers on load); BERT's and RoFormer's
  ``cls.predictions.decoder.bias`` is written as a copy of ``cls.predictions.bias`` so the folder
  loads the same whether transformers ties the two or not (transformers 5 ties them only with tied
  embeddings; untied, its logits use the decoder's bias, which import therefore reads).

  After writing, the export is checked (unless ``--no-verify``) by ``lmkit.ship.verify_hf``: the
  folder is loaded with the Auto class, its logits on a probe batch must match lmkit's within
  ``PARITY_RTOL · max(1, max |logit|)``, and greedy decoding (decoder, encdec) or the top-1
  fill-mask prediction (encoder) must agree token for token; otherwise nothing is written.

  Shards (:func:`save_hf_weights`) follow transformers' ``save_pretrained``: tensors in the export's
  one stable order (the adapter's rules), a new shard started when the next tensor would take the
  current one past the limit, a tensor larger than the limit alone in its shard; a model under the
  limit is one ``model.safetensors`` and no index. ``--overwrite`` replaces the whole folder, so a
  sharded export over a single-file one (or the reverse) leaves no stale weight file behind; it
  recognises as its own only the shards ``lmkit_meta.json`` lists.

  Not exportable, with a message saying why: a decoder whose layout no class has (learned or
  sinusoidal positions with RMSNorm, say), an encoder with sinusoidal positions or a rotary theta other than 10000
  (RoFormer's), and a quantized checkpoint unless ``--dequantize`` (its int8 ``q · scale`` or
  fp16/bf16 values are then written as float32; ``lmkit.models.int8.dequantized_state``).

  ``AutoTokenizer.from_pretrained(DIR)`` gives a ``PreTrainedTokenizerFast`` over the same
  ``tokenizer.json``: ordinary text gets exactly lmkit's ids, and **no special tokens are added**
  (no BOS, no EOS, no [CLS]/[SEP]), which is also how lmkit encodes (the packer puts ``</s>``
  between documents). One difference: transformers turns special-token text typed in the input
  (``"</s>"``, ``"<extra_id_0>"``) into the special ids, as lmkit's ``encode(text,
  allow_special=True)`` does; lmkit's plain ``encode`` keeps such text as ordinary characters.

* Elsewhere, each name in one home: the way back, ``lmkit import-hf``, is ``lmkit.ship.import_hf``
  (weights) and ``lmkit.ship.config_from_hf`` (config); the class facts (config keys, tensor rules,
  storage quirks) are the adapters' (``lmkit.models.hf_adapters``, registry ``lmkit.models.hf``);
  the parity check is ``lmkit.ship.verify_hf``. The commands' flags and printing live in
  ``lmkit.cli.ship``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError
from lmkit.files import Manifest, check_out_dir, is_stamped, replace_dir, sha256_file
from lmkit.models.hf import EXPORT_FORMAT, LMKIT_META_FILE, adapter_or_error
from lmkit.models.hf_adapters import roformer
from lmkit.models.hf_adapters.base import to_hf_tensors
from lmkit.models.int8 import dequantized_state
from lmkit.models.registry import spec_of
from lmkit.ship.verify_hf import verify_export

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lmkit.config import ModelConfig
    from lmkit.tokenizer import Tokenizer


# --------------------------------------------------------------------------- weights


def to_hf_state(model: nn.Module, cfg: ModelConfig, where: str = "") -> dict[str, torch.Tensor]:
    """The model's tensors under transformers' names (by the class adapter's rules: fused, transposed
    or interleaved where the class stores them so), tied tensors once, as ``save_pretrained`` would."""
    adapter = adapter_or_error(cfg, where)
    rules = adapter.rules(cfg)
    full = model.state_dict()  # every name, aliases of tied tensors included
    mapped = [n for r in rules for n in r.ours]
    missing = [k for k in mapped if k not in full]
    if missing:
        raise LmkitError(
            f"{where}: the rules of {adapter.target.architecture} list {missing[:3]}, which the model lacks"
        )
    mapped_ptrs = {full[k].data_ptr() for k in mapped}
    orphans = [k for k, t in full.items() if k not in mapped and t.data_ptr() not in mapped_ptrs]
    if orphans:
        raise LmkitError(f"{where}: weights with no slot in {adapter.target.architecture}: {orphans[:5]}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for theirs, t in to_hf_tensors(rules, {k: v.detach().cpu() for k, v in full.items()}).items():
        # safetensors refuses two names on one storage: a second name of a tied tensor gets a copy
        out[theirs] = t.clone() if t.data_ptr() in seen else t.contiguous()
        seen.add(t.data_ptr())
    for copy, source in adapter.copies.items():
        out[copy] = out[source].clone()
    if adapter.target is roformer.TARGET:  # a frozen parameter of RoFormer: written, as save_pretrained does
        out[roformer.TABLE] = roformer.sinusoid_table(cfg.max_seq_len, cfg.head_dim)
    return out


# --------------------------------------------------------------------------- config and tokenizer files


def hf_config(cfg: ModelConfig, tok: Tokenizer | None, dtype: str = "float32") -> dict[str, Any]:
    """transformers config.json of ``cfg`` (its class adapter's ``config_to_hf``) with the tokenizer's ids."""
    out: dict[str, Any] = dict(adapter_or_error(cfg).config_to_hf(cfg))
    if tok is not None:
        ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
        out.update({k: v for k, v in ids.items() if v >= 0})
        if spec_of(cfg.family).decodes == "seq2seq" and tok.decoder_start_id >= 0:
            out["decoder_start_token_id"] = tok.decoder_start_id  # the model's own (T5: <pad>; BART: </s>)
    out["torch_dtype"] = dtype
    out["use_cache"] = True
    return out


def generation_config(cfg: ModelConfig, tok: Tokenizer | None) -> dict[str, Any]:
    """generation_config.json: special ids and greedy decoding (lmkit generate's default)."""
    out: dict[str, Any] = {"do_sample": False}
    seq2seq = spec_of(cfg.family).decodes == "seq2seq"  # decodes from a decoder start token
    if tok is not None:
        for key, i in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id), ("pad_token_id", tok.pad_id)):
            if i >= 0:
                out[key] = i
        if len(tok.eos_ids) > 1:
            out["eos_token_id"] = list(tok.eos_ids)  # generation stops on any of the model's eos ids
        if seq2seq and tok.decoder_start_id >= 0:
            out["decoder_start_token_id"] = tok.decoder_start_id
    if seq2seq and "decoder_start_token_id" not in out:  # no tokenizer: the class's own start
        out["decoder_start_token_id"] = adapter_or_error(cfg).config_to_hf(cfg).get("decoder_start_token_id", 0)
    return out


def tokenizer_files(tok: Tokenizer, max_len: int) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json and special_tokens_map.json for ``AutoTokenizer`` over the checkpoint's
    tokenizer.json: the tokens of its roles (``Tokenizer.roles``: lmkit's own, or the imported model's),
    and whether BOS is put first (``add_bos_token``: the imported model's post-processor does it)."""
    r = tok.roles
    specials: dict[str, Any] = {}
    for key, i in (
        ("bos_token", r.bos),
        ("eos_token", r.eos[0] if r.eos else None),
        ("unk_token", r.unk),
        ("pad_token", r.pad),
        ("mask_token", r.mask),
        ("cls_token", r.cls),
        ("sep_token", r.sep),
    ):
        if i is not None:
            specials[key] = tok.hf.id_to_token(i)
    if r.sentinels:
        specials["additional_special_tokens"] = [tok.hf.id_to_token(i) for i in r.sentinels]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": r.adds_bos,
        "add_eos_token": False,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


# --------------------------------------------------------------------------- output folders


#: every file an export folder may hold (what export_hf writes); --overwrite replaces nothing else
EXPORT_FILES = re.compile(
    r"model\.safetensors|model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json|config\.json|"
    r"generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|lmkit_meta\.json|"
    r"README\.md"
)
SHARD_FILE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")  # transformers' shard names
WEIGHTS_INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' save_pretrained and the hub's default
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, **{f"{u}b": 1000**i for i, u in enumerate("kmgt", 1)}}
_SIZE_UNITS.update({f"{u}ib": 1024**i for i, u in enumerate("kmgt", 1)})


def shard_size_bytes(size: int | str, what: str = "--max-shard-size") -> int:
    """The largest shard in bytes from ``size``: bytes (``1000000``) or a number with a unit, decimal
    as transformers reads them (``200MB``, ``5GB``: powers of 1000) or binary (``512MiB``, ``2GiB``)."""
    if isinstance(size, int) and not isinstance(size, bool):
        n = size
    else:
        m = _SIZE.fullmatch(str(size).strip().replace("_", ""))
        if m is None:
            raise LmkitError(f"{what} must be a size like 5GB, 200MB, 512MiB or a number of bytes, got {size!r}")
        n = int(Decimal(m[1]) * _SIZE_UNITS[(m[2] or "b").lower()])  # exact: no float rounding of bytes
    if n < 1:
        raise LmkitError(f"{what} must be at least 1 byte, got {size!r}")
    return n


def export_record(folder: Path) -> dict[str, Any] | None:
    """``lmkit_meta.json`` of ``folder`` when it is an lmkit export's (this module's format), else None."""
    try:
        record = json.loads((folder / LMKIT_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == EXPORT_FORMAT else None


def is_export(folder: Path) -> bool:
    """True if ``folder`` is an lmkit export (its ``lmkit_meta.json`` has this module's format)."""
    return export_record(folder) is not None


def export_files(folder: Path) -> list[str] | None:
    """What a previous export wrote into ``folder`` (for ``lmkit.files.Manifest``): the files
    :data:`EXPORT_FILES` names, shards and their index only when its ``lmkit_meta.json`` lists shards
    (those it lists), its README.md only while it is the card the export wrote, unedited
    (``lmkit.files.is_stamped``); None for a folder that is not an export."""
    record = export_record(folder)
    if record is None:
        return None
    listed = record.get("weights_sha256")
    shards = {n for n in listed if SHARD_FILE.fullmatch(n)} if isinstance(listed, dict) else set()
    return [
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and EXPORT_FILES.fullmatch(p.name)
        and (p.name != "README.md" or is_stamped(p))
        and (not SHARD_FILE.fullmatch(p.name) or p.name in shards)
        and (p.name != WEIGHTS_INDEX or bool(shards))
    ]


def save_hf_weights(state: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> list[str]:
    """Write ``state`` into ``folder`` as transformers does: one ``model.safetensors`` when it fits in
    ``max_shard_bytes``, else shards of whole tensors (``huggingface_hub``'s split, in ``state``'s
    order) and :data:`WEIGHTS_INDEX` (``{"metadata": {"total_size"}, "weight_map"}``); returns the
    weight files written, in order."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_bytes
    )
    for name, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, str(folder / name), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        _write_json(folder / WEIGHTS_INDEX, index)
    return list(split.filename_to_tensors)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- export


def export_hf(
    ckpt: str | Path,
    out: str | Path,
    overwrite: bool = False,
    verify: bool = True,
    card_sections: list[str | Path] | None = None,
    license: str | None = None,
    language: list[str] | None = None,
    dequantize: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> dict[str, Any]:
    """Write the transformers folder of checkpoint ``ckpt`` to ``out``; returns a report.

    Weights above ``max_shard_size`` (bytes, or a size such as ``"5GB"``: :func:`shard_size_bytes`)
    are written as shards with an index. The report has ``out``, ``architecture``, ``auto_class``,
    ``files``, ``weight_files`` and (with ``verify``) the
    parity check: ``max_abs_diff``, ``tolerance``, ``greedy_match``. A quantized checkpoint is
    refused unless ``dequantize``: then its quantized values are exported as float32 weights.
    """
    import torch

    from lmkit.config import model_config_from_dict
    from lmkit.models import build_model
    from lmkit.models.checkpoint import load_meta, load_state, load_weights_into, read_config, resolve_checkpoint
    from lmkit.ship.card.render import render_card
    from lmkit.tokenizer import Tokenizer

    max_shard_bytes = shard_size_bytes(max_shard_size)
    path = resolve_checkpoint(ckpt)
    raw = read_config(path)
    cfg = model_config_from_dict(raw["model"])
    adapter = adapter_or_error(cfg, str(path))  # refuses unmappable configs before any work
    target = adapter.target
    quant = raw.get("quantization")
    if quant and not dequantize:
        from lmkit.models.int8 import quant_label

        raise LmkitError(
            f"{path}: is quantized ({quant_label(quant)}); {target.architecture} takes float weights: "
            "export the checkpoint from before `lmkit quantize`, or pass --dequantize to export this "
            "one's quantized values as float32 weights"
        )
    names = {r.theirs: list(r.ours) for r in adapter.rules(cfg)}  # transformers name -> the lmkit tensors in it
    out = Path(out)
    check_out_dir(
        out, overwrite, [ckpt, path, *(card_sections or [])], ours=[EXPORT_FILES, Manifest(export_files)], kind="export"
    )
    tok = Tokenizer.load(path / "tokenizer.json", strict=False) if (path / "tokenizer.json").is_file() else None
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        raise LmkitError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}")

    state = load_state(path)  # checks the weights' shapes against config.json before the model is built
    if quant:
        state = dequantized_state(state, quant, str(path))
    model = build_model(cfg)
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
        weight_files = save_hf_weights(state, tmp, max_shard_bytes)
        hashes = {name: sha256_file(tmp / name) for name in weight_files}
        _write_json(tmp / "config.json", hf_config(cfg, tok))
        _write_json(tmp / "generation_config.json", generation_config(cfg, tok))
        if tok is not None:
            tok.save(tmp / "tokenizer.json", with_roles=False)  # the roles go into tokenizer_files' files
            for name, data in tokenizer_files(tok, cfg.max_seq_len).items():
                _write_json(tmp / name, data)
        _write_json(
            tmp / LMKIT_META_FILE,
            {
                "format": EXPORT_FORMAT,
                "checkpoint": str(path.resolve()),
                "lmkit_model": raw["model"],
                "weights_sha256": hashes,  # every weight file: import keeps the record only if all are unchanged
                **({"model_safetensors_sha256": hashes["model.safetensors"]} if "model.safetensors" in hashes else {}),
                "meta": meta,
                "name_map": names,
            },
        )
        card = render_card(
            path, sections=card_sections or [], license=license, language=language, export=True, load_path=str(out)
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        report: dict[str, Any] = {
            "out": str(out),
            "checkpoint": str(path),
            "family": cfg.family,
            "dequantized_from": quant.get("dtype") if quant else None,
            "architecture": target.architecture,
            "auto_class": target.auto_class,
            "tensors": len(state),
            "weight_files": weight_files,
            "files": sorted(p.name for p in tmp.iterdir()),
        }
        if verify:
            report["parity"] = verify_export(model, cfg, tmp, tok)
            if not report["parity"]["ok"]:
                p = report["parity"]
                raise LmkitError(
                    f"{path}: exported model disagrees with lmkit (max |Δlogit| {p['max_abs_diff']:.3g} > "
                    f"{p['tolerance']:.3g}, greedy match {p['greedy_match']}); nothing was written"
                )
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "EXPORT_FILES",
    "SHARD_FILE",
    "WEIGHTS_INDEX",
    "export_files",
    "export_hf",
    "export_record",
    "generation_config",
    "hf_config",
    "is_export",
    "save_hf_weights",
    "shard_size_bytes",
    "to_hf_state",
    "tokenizer_files",
]
