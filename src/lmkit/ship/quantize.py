"""Quantize a checkpoint: ``lmkit quantize CKPT --to fp16|bf16|int8 --out DIR``, with a report.

- fp16 / bf16: every floating tensor cast to the 16-bit format; the model loads and runs in it.
- int8: symmetric absmax quantization per output channel of every linear layer and every
  embedding table of 64 rows or more, stored as int8 ``qweight`` plus an fp32 ``scale`` per row
  and kept int8 in memory (the format, its modules and how it is loaded: ``lmkit.models.int8``).

The written folder is a normal lmkit checkpoint whose ``config.json`` carries a ``quantization``
section; ``lmkit.models.checkpoint.load_model`` sees it and rebuilds the quantized model, so ``lmkit
generate`` / ``evaluate`` load the result directly. What this module owns is the command: it
quantizes, writes, reloads and measures; the report gives the size on disk and in memory before
and after, the held-out loss, perplexity and bits per byte before and after, and for int8 what
each scheme (integer grid, one scale per tensor, one per channel) does to each layer's weights
(``int8_layers``). The command's flags and printing live in ``lmkit.cli.ship``.

Written by hand rather than with ``torch.ao.quantization``: its dynamic int8 Linear cannot be
saved to safetensors, covers neither embeddings nor the tied output projection, and the
quantized-tensor API it rests on is deprecated in the PyTorch this project pins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.infer.evaluate import evaluate_model, held_out
from lmkit.models.int8 import CAST_METHOD, INT8_METHOD, int8_layer_errors, memory_bytes, quantize_int8
from lmkit.numerics import torch_dtype

TARGETS = ("fp16", "bf16", "int8")


# --------------------------------------------------------------------------- the command


def quantize_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    to: str = "int8",
    overwrite: bool = False,
    data: str | list[str] | None = None,
    eval_batches: int = 8,
    batch_size: int = 8,
    text_field: str = "text",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write a quantized copy of checkpoint ``ckpt`` to ``out``; return the size/quality report
    (``summary`` holds it in one line)."""
    from lmkit.models.checkpoint import (
        checkpoint_files,
        load_meta,
        load_model,
        load_state,
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
    from lmkit.files import Manifest, check_out_dir

    inputs = [ckpt, src, *([data] if isinstance(data, str) else data or [])]
    check_out_dir(dst, overwrite, inputs, ours=Manifest(checkpoint_files), kind="checkpoint")

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
        from lmkit.progress import progress

        bar = progress(total=4, desc=f"quantize to {to}", unit="stage")

    def stage(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    before_eval = (
        evaluate_model(model, model_cfg, windows[0], tok, batch_size, eval_batches) if windows is not None else None
    )
    stage("evaluated the original")

    layer_errors = None
    if to == "int8":
        layer_errors = int8_layer_errors(model)  # on the float weights, before they are replaced
        modules = quantize_int8(model)
        quant: dict[str, Any] = {
            "method": INT8_METHOD,
            "dtype": "int8",
            "scale_dtype": "fp32",
            "granularity": "per output channel (row)",
            "modules": modules,
        }
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
    save_checkpoint(
        dst, model, model_cfg, tokenizer=tok, meta=meta, run_cfg=run_cfg, extra_config=extra, state=model_state(model)
    )
    stage("written")

    reloaded = load_model(dst)  # what generate/evaluate will load
    after_mem = memory_bytes(reloaded)
    stage("reloaded")
    after_eval = (
        evaluate_model(reloaded, model_cfg, windows[0], tok, batch_size, eval_batches) if windows is not None else None
    )
    stage("evaluated the quantized model")
    if bar is not None:
        bar.close()
    one_file = src / "model.safetensors"  # else a multi-process run's shards: the bytes of its model's tensors
    disk_before = one_file.stat().st_size if one_file.is_file() else sum(t.nbytes for t in load_state(src).values())
    disk_after = (dst / "model.safetensors").stat().st_size
    report: dict[str, Any] = {
        "source": str(src),
        "out": str(dst),
        "to": to,
        "method": quant["method"],
        "disk_bytes": {"before": disk_before, "after": disk_after, "ratio": disk_before / disk_after},
        "memory_bytes": {"before": before_mem, "after": after_mem, "ratio": before_mem / after_mem},
        "held_out": windows[1] if windows is not None else None,
        "eval_before": before_eval,
        "eval_after": after_eval,
        "int8_layers": layer_errors,
    }
    summary = (
        f"{to}: {report['disk_bytes']['ratio']:.2f}x smaller on disk ({size_text(disk_before)} -> "
        f"{size_text(disk_after)}), {report['memory_bytes']['ratio']:.2f}x in memory"
    )
    if before_eval and after_eval:
        report["loss_change"] = after_eval["loss"] - before_eval["loss"]
        report["perplexity_change_pct"] = 100.0 * (after_eval["perplexity"] / before_eval["perplexity"] - 1.0)
        summary += (
            f"; held-out perplexity {before_eval['perplexity']:.2f} -> {after_eval['perplexity']:.2f} "
            f"({report['perplexity_change_pct']:+.2f}%)"
        )
    report["summary"] = summary
    meta["quantization"] = {k: v for k, v in report.items() if k not in ("source", "out")}
    meta["quantization"]["from"] = str(src)
    from lmkit.files import write_json_atomic
    from lmkit.models.checkpoint import record_checksums

    write_json_atomic(dst / "meta.json", meta)
    record_checksums(dst)  # the copied meta held the source's checksums: record the quantized files'
    return report


def size_text(n: float) -> str:
    """Bytes for the report: ``1.23 MB`` from 100 kB up, else ``12.3 kB``."""
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


__all__ = ["quantize_checkpoint", "size_text", "TARGETS"]
