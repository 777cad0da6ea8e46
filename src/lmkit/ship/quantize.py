"""Quantize a checkpoint: ``lmkit quantize CKPT --to fp16|bf16|int8 --out DIR``, with a report.

- fp16 / bf16: every floating tensor cast to the 16-bit format; the model loads and runs in it.
- int8: symmetric absmax quantization per output channel (``lmkit.numerics.absmax_quantize``) of
  every linear layer and every embedding table of 64 rows or more (token and learned position
  embeddings; the tied output projection is the token embedding, whose rows are exactly its output
  channels). Each matrix is stored as int8 ``qweight`` plus an fp32 ``scale`` per row
  (w ≈ qweight · scale). Norm weights, biases and the tiny tables (token types, T5's position
  buckets) stay fp32. The weights stay int8 in memory too: ``Int8Linear`` multiplies by the int8
  matrix converted on the fly and scales the output channels
  (y = (x · qweightᵀ) · scale + bias), ``Int8Embedding`` looks rows up in int8 and scales them.

The written folder is a normal lmkit checkpoint whose ``config.json`` carries a ``quantization``
section; ``lmkit.checkpoint.load_model`` sees it and calls :func:`load_quantized`, so ``lmkit
generate`` / ``evaluate`` load the result directly. The report gives the size on disk and in memory
before and after, and the held-out loss, perplexity and bits per byte before and after.

Written by hand rather than with ``torch.ao.quantization``: its dynamic int8 Linear cannot be
saved to safetensors, covers neither embeddings nor the tied output projection, and the
quantized-tensor API it rests on is deprecated in the PyTorch this project pins.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.config import ModelConfig
from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate_model, held_out
from lmkit.numerics import absmax_dequantize, absmax_quantize, torch_dtype

TARGETS = ("fp16", "bf16", "int8")
INT8_METHOD = "int8-absmax-per-channel"
CAST_METHOD = "cast"
MIN_EMBEDDING_ROWS = 64  # smaller tables (token types, relative-position buckets) stay fp32


# --------------------------------------------------------------------------- int8 modules


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one fp32 scale per output channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))  # (out, in)
        self.register_buffer("scale", torch.ones(out_features, 1))  # (out, 1) fp32
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int8Linear:
        m = cls(lin.in_features, lin.out_features, lin.bias is not None)
        q, s = absmax_quantize(lin.weight, dim=1)
        m.qweight.copy_(q)
        m.scale.copy_(s)
        if lin.bias is not None:
            m.bias = nn.Parameter(lin.bias.detach().float().clone())
        return m

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (out, in), fp32: for code that reads ``.weight``."""
        return absmax_dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., in) -> (..., out)
        y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.view(-1).to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one fp32 scale per row."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))  # (V, d)
        self.register_buffer("scale", torch.ones(num_embeddings, 1))  # (V, 1) fp32

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Int8Embedding:
        m = cls(emb.num_embeddings, emb.embedding_dim)
        q, s = absmax_quantize(emb.weight, dim=1)
        m.qweight.copy_(q)
        m.scale.copy_(s)
        return m

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (V, d), fp32 (the tied output projection reads it)."""
        return absmax_dequantize(self.qweight, self.scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids (...) -> (..., d)
        return F.embedding(ids, self.qweight).to(torch.float32) * F.embedding(ids, self.scale)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def _int8_targets(model: nn.Module) -> list[str]:
    """Names of the modules int8 quantization replaces."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Embedding) and m.num_embeddings >= MIN_EMBEDDING_ROWS):
            out.append(name)
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_int8(model: nn.Module) -> list[str]:
    """Replace the model's linear layers and large embeddings by int8 ones in place; their names."""
    names = _int8_targets(model)
    with torch.no_grad():
        for name in names:
            m = model.get_submodule(name)
            new = Int8Linear.from_linear(m) if isinstance(m, nn.Linear) else Int8Embedding.from_embedding(m)
            _replace(model, name, new.to(next(m.parameters()).device))
    return names


def _empty_int8(model: nn.Module, names: list[str], source: str | Path) -> None:
    """Swap the listed modules for empty int8 ones (to be filled by load_state_dict)."""
    for name in names:
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise LmkitError(f"{source}: quantized module {name!r} does not exist in this model") from None
        if isinstance(m, nn.Linear):
            _replace(model, name, Int8Linear(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.Embedding):
            _replace(model, name, Int8Embedding(m.num_embeddings, m.embedding_dim))
        else:
            raise LmkitError(f"{source}: quantized module {name!r} is a {type(m).__name__}, not Linear/Embedding")


def load_quantized(model_cfg: ModelConfig, state: dict[str, torch.Tensor], quant: dict[str, Any],
                   source: str | Path) -> nn.Module:
    """Build the model a quantized checkpoint describes and fill it with its weights."""
    from lmkit.models import build_model
    from lmkit.models.checkpoint import load_weights_into

    method = quant.get("method")
    model = build_model(model_cfg)
    if method == CAST_METHOD:
        model.to(torch_dtype(str(quant.get("dtype"))))
    elif method == INT8_METHOD:
        names = list(quant.get("modules", []))
        missing = [f"{n}.{b}" for n in names for b in ("qweight", "scale") if f"{n}.{b}" not in state]
        if missing:
            raise LmkitError(f"{source}: model.safetensors lacks quantized tensors {missing[:3]}")
        _empty_int8(model, names, source)
    else:
        raise LmkitError(f"{source}: unknown quantization method {method!r} in config.json")
    load_weights_into(model, state, source)
    return model


# --------------------------------------------------------------------------- sizes and quality


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors (parameters and buffers, each storage once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------- the command


def quantize_checkpoint(ckpt: str | Path, out: str | Path, to: str = "int8", overwrite: bool = False,
                        data: str | None = None, eval_batches: int = 8, batch_size: int = 8, text_field: str = "text",
                        show_progress: bool = True) -> dict[str, Any]:
    """Write a quantized copy of checkpoint ``ckpt`` to ``out``; return the size/quality report
    (``summary`` holds it in one line)."""
    from lmkit.models.checkpoint import (
        is_checkpoint,
        load_meta,
        load_model,
        load_tokenizer,
        model_state,
        read_config,
        resolve_checkpoint,
        save_checkpoint,
    )

    if to not in TARGETS:
        raise LmkitError(f"--to must be one of {'|'.join(TARGETS)}, got {to!r}")
    src = resolve_checkpoint(ckpt)
    cfg_raw = read_config(src)
    if cfg_raw.get("quantization"):
        raise LmkitError(f"{src}: already quantized ({cfg_raw['quantization'].get('method')}); quantize the original")
    dst = Path(out)
    from lmkit.files import check_out_dir

    check_out_dir(dst, overwrite, [ckpt, src, *([data] if data else [])], ours=is_checkpoint, kind="checkpoint")

    from lmkit.config import model_config_from_dict

    model_cfg = model_config_from_dict(cfg_raw["model"])
    tok = load_tokenizer(src) if (src / "tokenizer.json").is_file() else None
    model = load_model(src)
    before_mem = memory_bytes(model)
    windows = held_out(src, data, tok, text_field) if tok is not None else None
    if data and tok is None:
        raise LmkitError(f"{src}: no tokenizer.json, so --data cannot be tokenised for the quality check")
    bar = None  # started once the inputs have loaded, so that an error about them is the only line
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=4, desc=f"quantize to {to}", unit="stage", file=sys.stderr, dynamic_ncols=True)

    def stage(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)
    before_eval = (evaluate_model(model, model_cfg, windows[0], tok, batch_size, eval_batches)
                   if windows is not None else None)
    stage("evaluated the original")

    if to == "int8":
        modules = quantize_int8(model)
        quant: dict[str, Any] = {"method": INT8_METHOD, "dtype": "int8", "scale_dtype": "fp32",
                                 "granularity": "per output channel (row)", "modules": modules}
    else:
        model.to(torch_dtype(to))
        quant = {"method": CAST_METHOD, "dtype": to}
    run_cfg = None
    if (src / "resolved.yaml").is_file():
        from lmkit.config import load_run_config

        try:
            run_cfg = load_run_config(src / "resolved.yaml")
        except LmkitError:
            run_cfg = None
    meta = load_meta(src)
    extra = {k: v for k, v in cfg_raw.items() if k not in ("format", "lmkit_version", "model")}
    extra["quantization"] = quant
    save_checkpoint(dst, model, model_cfg, tokenizer=tok, meta=meta, run_cfg=run_cfg, extra_config=extra,
                    state=model_state(model))
    stage("written")

    reloaded = load_model(dst)  # what generate/evaluate will load
    after_mem = memory_bytes(reloaded)
    stage("reloaded")
    after_eval = (evaluate_model(reloaded, model_cfg, windows[0], tok, batch_size, eval_batches)
                  if windows is not None else None)
    stage("evaluated the quantized model")
    if bar is not None:
        bar.close()
    disk_before = (src / "model.safetensors").stat().st_size
    disk_after = (dst / "model.safetensors").stat().st_size
    report: dict[str, Any] = {
        "source": str(src), "out": str(dst), "to": to, "method": quant["method"],
        "disk_bytes": {"before": disk_before, "after": disk_after, "ratio": disk_before / disk_after},
        "memory_bytes": {"before": before_mem, "after": after_mem, "ratio": before_mem / after_mem},
        "held_out": windows[1] if windows is not None else None,
        "eval_before": before_eval, "eval_after": after_eval,
    }
    summary = (f"{to}: {report['disk_bytes']['ratio']:.2f}x smaller on disk ({_size(disk_before)} -> "
               f"{_size(disk_after)}), {report['memory_bytes']['ratio']:.2f}x in memory")
    if before_eval and after_eval:
        report["loss_change"] = after_eval["loss"] - before_eval["loss"]
        report["perplexity_change_pct"] = 100.0 * (after_eval["perplexity"] / before_eval["perplexity"] - 1.0)
        summary += (f"; held-out perplexity {before_eval['perplexity']:.2f} -> {after_eval['perplexity']:.2f} "
                    f"({report['perplexity_change_pct']:+.2f}%)")
    report["summary"] = summary
    meta["quantization"] = {k: v for k, v in report.items() if k not in ("source", "out")}
    meta["quantization"]["from"] = str(src)
    from lmkit.models.checkpoint import record_checksums, write_json_atomic

    write_json_atomic(dst / "meta.json", meta)
    record_checksums(dst)  # the copied meta held the source's checksums: record the quantized files'
    return report


def _size(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def cli(args: argparse.Namespace) -> int:
    """``lmkit quantize CKPT --to ... --out DIR``."""
    rep = quantize_checkpoint(args.checkpoint, args.out, to=args.to, overwrite=args.overwrite, data=args.data,
                              eval_batches=args.eval_batches, batch_size=args.batch_size, text_field=args.text_field,
                              show_progress=not args.json)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    d, m = rep["disk_bytes"], rep["memory_bytes"]
    print(f"quantized {rep['source']} -> {rep['out']} ({rep['method']}, {rep['to']})")
    print(f"  {'':<22}{'before':>12}{'after':>12}{'ratio':>8}")
    print(f"  {'size on disk':<22}{_size(d['before']):>12}{_size(d['after']):>12}{d['ratio']:>7.2f}x")
    print(f"  {'size in memory':<22}{_size(m['before']):>12}{_size(m['after']):>12}{m['ratio']:>7.2f}x")
    b, a = rep["eval_before"], rep["eval_after"]
    if b and a:
        print(f"  {'held-out loss':<22}{b['loss']:>12.4f}{a['loss']:>12.4f}   ({rep['loss_change']:+.4f} nats)")
        print(f"  {'perplexity':<22}{b['perplexity']:>12.3f}{a['perplexity']:>12.3f}   "
              f"({rep['perplexity_change_pct']:+.2f}%)")
        if "bits_per_byte" in b and "bits_per_byte" in a:
            print(f"  {'bits per byte':<22}{b['bits_per_byte']:>12.4f}{a['bits_per_byte']:>12.4f}")
        print(f"  (held-out windows: {rep['held_out']}, {int(a['tokens']):,} scored tokens)")
    else:
        print("  quality not measured: no held-out data found (pass --data: a shard folder or text files)")
    return 0


__all__ = ["Int8Linear", "Int8Embedding", "quantize_int8", "load_quantized", "quantize_checkpoint", "memory_bytes",
           "cli", "TARGETS"]
