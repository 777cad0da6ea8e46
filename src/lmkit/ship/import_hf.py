"""Import a Hugging Face ``transformers`` folder as an lmkit checkpoint: ``lmkit import-hf DIR --out CKPT``.

:func:`import_hf` reads a folder of any class lmkit has an adapter for (``lmkit.models.hf``:
``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM``,
``BloomForCausalLM``, ``BertForMaskedLM``, ``RobertaForMaskedLM``, ``RoFormerForMaskedLM``,
``T5ForConditionalGeneration``, ``BartForConditionalGeneration``),
saved on disk: safetensors, sharded safetensors, or ``pytorch_model.bin`` read with
``torch.load(weights_only=True)``. It does so only when lmkit can represent its config exactly
(:mod:`lmkit.ship.config_from_hf`, which otherwise names the setting that has no lmkit equivalent); a
config.json that is not a JSON object is refused in one line. This module owns the rest: the
folder, its weight files and where each tensor goes. Before any tensor is read or any model built, every
tensor's shape (safetensors headers; ``.bin`` files once loaded) must be the one the config implies
(:func:`check_hf_shapes`, through the adapter's rules): a config that does not describe its weights
costs no memory. Every tensor must have a place (:func:`from_hf_state`): tied tensors may appear as
copies and must then equal the embedding; fused, transposed or interleaved tensors are split back by
the adapter's rules. ``tokenizer.json`` is carried over when it is an lmkit tokenizer (lmkit's special
tokens at ids 0..104); for another tokenizer the message says what to pass instead. Weights become
float32. ``meta.json`` records where the model came from; when the folder is an lmkit export whose
weights are unchanged (the sha256 of every weight file, ``model.safetensors`` or each shard, is the one
``lmkit_meta.json`` lists, and no weight file was added or removed), the original training record is kept too.

Why by hand: ``transformers`` could load these folders, but the adapters' rules are the contract the
parity tests pin down, and import must refuse what lmkit cannot represent rather than load it
approximately. The command's flags and printing live in ``lmkit.cli.ship``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lmkit.errors import LmkitError
from lmkit.files import Manifest, check_out_dir, sha256_file
from lmkit.models.hf import adapter_or_error, target_of
from lmkit.models.hf_adapters import roformer
from lmkit.models.hf_adapters.base import HFAdapter, from_hf_tensors, hf_shapes
from lmkit.ship.config_from_hf import lmkit_config_from_hf, original_config
from lmkit.ship.export_hf import export_record
from lmkit.ship.hf_source import resolve_hf_source

if TYPE_CHECKING:
    import torch

    from lmkit.config import ModelConfig
    from lmkit.tokenizer import Tokenizer

T = TypeVar("T")


# --------------------------------------------------------------------------- weights


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """lmkit's tensors from a transformers state (by the class adapter's rules), after checking every key.

    Tensors tied in lmkit may appear in the file as copies; they must then equal the embedding. Keys
    that carry no weights (the adapter's ``ignored``: rotary ``inv_freq``, causal-mask buffers,
    position ids) and the parts of BERT/RoFormer that a masked LM does not use (pooler,
    next-sentence head) are skipped; RoFormer's sinusoid table must be the standard one. Fused,
    transposed and interleaved tensors are split back (``lmkit.models.hf_adapters.base.from_hf_tensors``).
    """
    import torch

    adapter = adapter_or_error(cfg, source)
    arch = adapter.target.architecture
    hf = _legacy_renames(with_prefix(hf, adapter))
    if arch in ("BertForMaskedLM", "RoFormerForMaskedLM", "RobertaForMaskedLM") and not cfg.tie_embeddings:
        # Untied, transformers computes logits with the decoder's own bias and never reads
        # cls.predictions.bias / lm_head.bias (tied, it is the reverse): lmkit's one bias is the one in use.
        for copy, kept in adapter.copies.items():
            if copy in hf:
                hf[kept] = hf[copy]
    rules = [r for r in adapter.rules(cfg) if r.theirs in hf or r.theirs not in adapter.zero_if_absent]  # else zeros
    missing = [r.theirs for r in rules if r.theirs not in hf]
    if missing:
        raise LmkitError(
            f"{source}: weights missing for {arch}: {missing[:4]}"
            + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else "")
        )
    used = {r.theirs for r in rules}
    emb = hf[adapter.embedding]
    for key in hf:
        if key in used or any(re.fullmatch(p, key) for p in adapter.ignored):
            continue
        if key in adapter.copies:
            if not torch.equal(hf[key], hf[adapter.copies[key]]):
                raise LmkitError(f"{source}: {key} differs from {adapter.copies[key]}; lmkit has one tensor for both")
            continue
        if cfg.tie_embeddings and key in adapter.tied:
            if hf[key].shape != emb.shape or not torch.equal(hf[key], emb):
                raise LmkitError(f"{source}: {key} differs from the word embedding although the config ties them")
            continue
        if arch == roformer.TARGET.architecture and key == roformer.TABLE:
            t = hf[key]
            ref = roformer.sinusoid_table(t.shape[0], cfg.head_dim) if t.dim() == 2 else None
            if ref is None or t.shape != ref.shape or not torch.allclose(t.to(torch.float32), ref, atol=1e-5):
                raise LmkitError(
                    f"{source}: {key} is not RoFormer's sinusoid table; lmkit computes rotary positions "
                    "with theta 10000 and cannot hold another table"
                )
            continue
        raise LmkitError(
            f"{source}: tensor {key!r} has no place in lmkit's {arch} layout (a layer or bias lmkit does not have)"
        )
    out = from_hf_tensors(rules, hf, source)
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def with_prefix(hf: dict[str, T], adapter: HFAdapter) -> dict[str, T]:
    """Files saved from the base model class (``GPT2Model``, ``BloomModel``...) name tensors without
    the base prefix (``h.0.ln_1.weight``): add it, leaving the head's own names alone."""
    if not adapter.prefix or any(k.startswith(adapter.prefix) for k in hf):
        return hf
    heads = ("lm_head.", "embed_out.", *adapter.zero_if_absent)
    return {k if k.startswith(heads) else adapter.prefix + k: v for k, v in hf.items()}


def _legacy_renames(hf: dict[str, T]) -> dict[str, T]:
    """Old BERT files name LayerNorm parameters gamma/beta (TensorFlow's names): rename explicitly."""
    out = {}
    for k, v in hf.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


# --------------------------------------------------------------------------- the folder


def hf_weight_files(folder: Path) -> list[tuple[Path, bool]]:
    """The weight files of a transformers folder, each with whether it is safetensors: model.safetensors,
    the shards a ``*.index.json`` names, or pytorch_model.bin."""
    if (folder / "model.safetensors").is_file():
        return [(folder / "model.safetensors", True)]
    for index_name, safe in (("model.safetensors.index.json", True), ("pytorch_model.bin.index.json", False)):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise LmkitError(f"{index}: unreadable shard index ({e})") from None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise LmkitError(f"{index}: weight_map must map tensor names to shard file names")
            files = []
            for shard in sorted(set(weight_map.values())):
                if Path(shard).name != shard:
                    raise LmkitError(f"{index}: shard name {shard!r} is not a plain file name")
                files.append((folder / shard, safe))
            return files
    if (folder / "pytorch_model.bin").is_file():
        return [(folder / "pytorch_model.bin", False)]
    raise LmkitError(f"{folder}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)")


def _read_weights(files: list[tuple[Path, bool]]) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """The tensors of ``files`` (:func:`hf_weight_files`), and the file each came from."""
    import torch
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}  # tensor name -> its file
    for p, safe in files:
        try:
            part = load_file(str(p)) if safe else torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors' own error types; weights_only refuses anything but tensors
            raise LmkitError(
                f"{p}: cannot read weights{'' if safe else ' safely'} "
                f"({(str(e) or type(e).__name__).splitlines()[0][:200]})"
            ) from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise LmkitError(f"{p}: not a state dict of tensors")
        out.update(part)
        origin.update(dict.fromkeys(part, p))
    return out, origin


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    return _read_weights(hf_weight_files(folder))[0]


def hf_weight_shapes(files: list[tuple[Path, bool]]) -> dict[str, tuple[tuple[int, ...], Path]] | None:
    """Tensor name -> (shape, file), from the safetensors headers alone (no tensor is read); None when
    the weights are pickle-free ``.bin`` files, which have no header (checked once loaded)."""
    from lmkit.models.checkpoint import weight_shapes

    if not all(safe for _, safe in files):
        return None
    return {name: (shape, p) for p, _ in files for name, shape in weight_shapes(p).items()}


def check_hf_shapes(shapes: dict[str, tuple[tuple[int, ...], Path]], cfg: ModelConfig, cfg_path: Path) -> None:
    """Refuse weights whose shapes are not the ones ``cfg`` (derived from ``cfg_path``) implies: one line
    naming the file and the first tensor that disagrees. The expected shapes come from the model built
    on PyTorch's meta device, through the class adapter's rules (fused and transposed tensors
    included), so nothing is allocated for a model the weights cannot fill. Tensors the file lacks or
    lmkit has no place for are :func:`from_hf_state`'s to report. A learned position table may have
    more rows than the context kept (the rest is cut off)."""
    from lmkit.models.checkpoint import model_shapes

    adapter = adapter_or_error(cfg, str(cfg_path))
    expected, _ = model_shapes(cfg, source=cfg_path)
    rules = adapter.rules(cfg)
    need_of = hf_shapes(rules, expected)
    table = {r.theirs for r in rules if r.ours == ("pos_emb.weight",)}
    shapes = _legacy_renames(with_prefix(shapes, adapter))
    for theirs, need in need_of.items():
        if theirs not in shapes:
            continue
        shape, file = shapes[theirs]
        longer_table = theirs in table and len(shape) == 2 and shape[1] == need[1] and shape[0] >= need[0]
        if shape != need and not longer_table:
            raise LmkitError(
                f"{file}: {theirs} has shape {shape}, but {cfg_path} implies {need}: the weights "
                "and the config do not belong together"
            )


def import_hf(
    src: str | Path,
    out: str | Path,
    overwrite: bool = False,
    tokenizer: str | Path | None = None,
    no_tokenizer: bool = False,
    max_seq_len: int | None = None,
    revision: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
) -> dict[str, Any]:
    """Read a transformers folder, or a hub name fetched through ``huggingface_hub`` at ``revision``
    (:mod:`lmkit.ship.hf_source`), into an lmkit checkpoint at ``out``; returns a report."""
    import torch

    from lmkit.models import build_model, count_parameters
    from lmkit.models.checkpoint import checkpoint_files, load_weights_into, save_checkpoint
    from lmkit.tokenizer import import_tokenizer

    if not Path(src).is_dir():  # a hub name: refuse a taken --out before downloading anything
        check_out_dir(
            Path(out), overwrite, [tokenizer] if tokenizer else [], ours=Manifest(checkpoint_files), kind="checkpoint"
        )
    folder, base = resolve_hf_source(src, revision)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise LmkitError(f"{folder}: no config.json")
    try:
        hf_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmkitError(f"{cfg_path}: unreadable ({e})") from None
    if not isinstance(hf_cfg, dict):
        kind = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(hf_cfg), "a number")
        raise LmkitError(f"{cfg_path}: holds {kind}, not a transformers config (a JSON object of settings)")
    if hf_cfg.get("format") == "lmkit-checkpoint/1":
        raise LmkitError(f"{folder}: is already an lmkit checkpoint (nothing to import)")
    if max_seq_len is not None and max_seq_len <= 0:
        raise LmkitError(f"--max-seq-len must be positive, got {max_seq_len}")
    out = Path(out)
    check_out_dir(
        out,
        overwrite,
        [folder, *([tokenizer] if tokenizer else [])],
        ours=Manifest(checkpoint_files),
        kind="checkpoint",
    )

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
    if not no_tokenizer:  # the model's own tokenizer, as it is, with its roles (lmkit.token_roles)
        roles = {"bos": bos_token, "eos": eos_token, "pad": pad_token}
        tok = import_tokenizer(folder, tokenizer, cfg.vocab_size, roles)

    weight_files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    hashes = {p.name: sha256_file(p) for p in weight_files}
    record = _unchanged_export_record(folder, hashes)
    if record is not None:
        cfg = original_config(record, cfg, max_seq_len)

    files = hf_weight_files(folder)
    shapes = hf_weight_shapes(files)
    if shapes is not None:  # safetensors: checked from the headers, before any tensor is read
        check_hf_shapes(shapes, cfg, cfg_path)
    weights, origin = _read_weights(files)
    if shapes is None:  # .bin files have no header: checked now, still before the model is built
        check_hf_shapes({k: (tuple(v.shape), origin[k]) for k, v in weights.items()}, cfg, cfg_path)
    if (
        cfg.family == "encdec"
        and not cfg.tie_embeddings
        and "lm_head.weight" not in weights
        and "shared.weight" in weights
    ):
        weights["lm_head.weight"] = weights["shared.weight"].clone()  # transformers ties a missing head
    state = from_hf_state(weights, cfg, str(folder))
    if "pos_emb.weight" in state and state["pos_emb.weight"].shape[0] > cfg.max_seq_len:
        state["pos_emb.weight"] = state["pos_emb.weight"][: cfg.max_seq_len].clone()
    model = build_model(cfg)
    load_weights_into(model, state, folder)

    kept_history = record is not None
    meta: dict[str, Any] = dict(record.get("meta") or {}) if record is not None else {}
    meta.update(
        {
            "family": cfg.family,
            "objective": cfg.objective,
            "params": count_parameters(model),
            "imported_from": {
                "path": str(folder.resolve()),
                "hub_name": base.name if base.hub else None,
                "revision": base.revision,
                "architecture": target_of(cfg).architecture,
                "model_type": hf_cfg.get("model_type"),
                "transformers_version": hf_cfg.get("transformers_version"),
                "weights_sha256": hashes,
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "training_record": "kept from the lmkit export (weights unchanged)" if kept_history else "not recorded",
            },
        }
    )
    if not kept_history:  # an unchanged lmkit export keeps the base model its record names, if any
        meta["base_model"] = base.to_json()
    if tok is not None:
        meta["tokenizer_sha256"] = tok.sha256
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # empty (check_out_dir refused anything but a checkpoint holding only its own files)
    with torch.no_grad():
        path = save_checkpoint(out, model, cfg, tokenizer=tok, meta=meta)
    return {
        "checkpoint": str(path),
        "family": cfg.family,
        "architecture": target_of(cfg).architecture,
        "params": meta["params"],
        "tokenizer": tok is not None,
        "training_record_kept": kept_history,
        "base_model": meta.get("base_model"),
        "model": {
            k: getattr(cfg, k)
            for k in (
                "vocab_size",
                "d_model",
                "n_layers",
                "n_heads",
                "kv_heads",
                "head_dim",
                "ffn_width",
                "max_seq_len",
                "tie_embeddings",
            )
        },
    }


def _unchanged_export_record(folder: Path, weights_sha256: dict[str, str]) -> dict[str, Any] | None:
    """lmkit_meta.json of an lmkit export whose weight files (name -> sha256 of every ``.safetensors`` and
    ``.bin`` file in ``folder``) are exactly the ones it wrote, else None. Exports from before sharding
    recorded only ``model_safetensors_sha256``: then model.safetensors must be unchanged."""
    record = export_record(folder)
    if record is None or not weights_sha256:
        return None
    listed = record.get("weights_sha256")
    if isinstance(listed, dict):
        return record if listed == weights_sha256 else None
    single = weights_sha256.get("model.safetensors")
    return record if single is not None and record.get("model_safetensors_sha256") == single else None
