"""The model card's record sections: how the model was trained, and how it scores on held-out text.

``training_section`` (objective, data and mix, curation survival, tokens, steps, compute,
hardware, wall time, precision, hyper-parameters) and ``evaluation_section`` (held-out loss,
perplexity, bits per byte, and the quantization deltas ``lmkit quantize`` recorded), each from the
facts :func:`lmkit.ship.card.render.card_facts` read; what the checkpoint did not record is said so.
"""

from __future__ import annotations

import math
from typing import Any

from lmkit.models.int8 import quant_label
from lmkit.ship.card.describe import objective_text
from lmkit.ship.card.figures import NOT_RECORDED, duration, is_number, lookup, si, source_tokens, thousands


def _curation_lines(cur: Any) -> list[str]:
    """Survival through curation, from what the checkpoint recorded.

    Accepted forms: ``lmkit curate``'s report (``{"totals": ..., "stages": [...]}``), its bare
    totals (``{"docs_in": ..., "docs_out": ...}``, what the trainer records for one curated input),
    or a mapping of input folder -> either (several curated inputs).
    """
    if not isinstance(cur, dict):
        return []

    def is_report(d: Any) -> bool:
        return isinstance(d, dict) and (isinstance(d.get("totals"), dict) or is_number(d.get("docs_in")))

    reports = [("", cur)] if is_report(cur) else [(str(k), v) for k, v in cur.items() if is_report(v)]
    lines: list[str] = []
    for label, r in reports:
        t = r["totals"] if isinstance(r.get("totals"), dict) else r
        figures = []
        if is_number(t.get("docs_in")) and is_number(t.get("docs_out")):
            docs = f"{thousands(t['docs_in'])} documents in, {thousands(t['docs_out'])} kept"
            if is_number(t.get("docs_kept_pct")):
                docs += f" ({t['docs_kept_pct']:.1f}%)"
            figures.append(docs)
        if is_number(t.get("tokens_kept_pct")):
            figures.append(f"{t['tokens_kept_pct']:.1f}% of tokens kept")
        if not figures:
            continue
        lines.append(f"- curation{f' of {label}' if label else ''}: " + "; ".join(figures))
        for s in r.get("stages") or []:
            if isinstance(s, dict) and s.get("name") and is_number(s.get("docs_in")) and is_number(s.get("docs_out")):
                pct = f" ({s['docs_kept_pct']:.1f}% kept)" if is_number(s.get("docs_kept_pct")) else ""
                lines.append(f"  - {s['name']}: {thousands(s['docs_in'])} -> {thousands(s['docs_out'])} documents{pct}")
    return lines


def training_section(f: dict[str, Any]) -> list[str]:
    cfg, meta, run = f["cfg"], f["meta"], f["run"]
    lines = ["## Training", ""]
    imported = meta.get("imported_from")
    if imported and not is_number(meta.get("tokens")):
        lines += [
            f"This model was trained outside lmkit and imported from `{imported.get('path', NOT_RECORDED)}` "
            f"({imported.get('architecture', '')}). Its data, tokens, compute and losses were "
            f"{NOT_RECORDED} by lmkit.",
            "",
        ]
        return lines
    if imported:
        lines += [
            f"Imported from `{imported.get('path')}`; the training record below is the one lmkit wrote before "
            "export (the weights were verified unchanged by their sha256).",
            "",
        ]
    lines += [f"- objective: {objective_text(cfg.objective)}"]
    data = meta.get("data") or {}
    paths = data.get("paths") or lookup(run, "data", "paths")
    lines.append(f"- data: {', '.join(f'`{p}`' for p in paths) if paths else NOT_RECORDED}")
    sources = source_tokens(meta)
    total = sum(v for v in sources.values() if math.isfinite(v))
    if sources and total > 0:
        lines.append(
            "- mix (training tokens per source): "
            + "; ".join(
                f"{k}: {thousands(v)} ({v / total:.1%})" for k, v in sorted(sources.items(), key=lambda kv: -kv[1])
            )
        )
    elif sources:
        lines.append(f"- sources: {', '.join(sorted(sources))}")
    else:
        lines.append(f"- mix by source: {NOT_RECORDED}")
    if is_number(data.get("train_tokens")):
        held = f", {thousands(data['val_tokens'])} held out for evaluation" if is_number(data.get("val_tokens")) else ""
        lines.append(f"- data size: {thousands(data['train_tokens'])} training tokens{held}")
    if is_number(data.get("bytes_per_token")):
        lines.append(
            f"- tokenizer: {data['bytes_per_token']:.2f} bytes of text per token"
            + (f", vocabulary {thousands(f['tokenizer']['vocab_size'])}" if f["tokenizer"] else "")
        )
    cur = _curation_lines(data.get("curation"))
    lines += cur if cur else [f"- curation survival: {NOT_RECORDED}"]
    tokens, steps = meta.get("tokens"), meta.get("step")
    if is_number(tokens):
        tl = f"- tokens seen: {thousands(tokens)} ({si(tokens)})"
        if is_number(data.get("train_tokens")) and data["train_tokens"] > 0:
            passes = tokens / data["train_tokens"]
            tl += f", {passes:.3g} pass{'' if passes == 1 else 'es'} over the training data"
        if f["params"]:
            tl += f", {tokens / f['params']:.2g} tokens per parameter"
        lines.append(tl)
    else:
        lines.append(f"- tokens seen: {NOT_RECORDED}")
    lines.append(f"- optimizer steps: {thousands(steps) if is_number(steps) else NOT_RECORDED}")
    flops = meta.get("flops")
    if is_number(flops):
        from lmkit.plan import pf_days

        fl = f"- compute: {float(flops):.3g} FLOPs = {pf_days(flops):.3g} petaFLOP/s-days"
        if is_number(meta.get("flops_per_token")):
            fl += f" ({float(meta['flops_per_token']):.3g} FLOPs per token, forward and backward)"
        lines.append(fl)
    else:
        lines.append(f"- compute: {NOT_RECORDED}")
    hw = meta.get("hardware")
    if isinstance(hw, dict) and hw:
        parts = [str(hw.get("gpu") or hw.get("cpu") or hw.get("device") or "")]
        if hw.get("threads"):
            parts.append(f"{hw['threads']} threads")
        if hw.get("world_size"):
            parts.append(f"{hw['world_size']} process{'es' if hw['world_size'] != 1 else ''}")
        if hw.get("torch"):
            parts.append(f"PyTorch {hw['torch']}")
        lines.append(f"- hardware: {', '.join(p for p in parts if p)}")
    else:
        lines.append(f"- hardware: {NOT_RECORDED}")
    wall = meta.get("wall_time_s")
    lines.append(f"- wall time: {duration(float(wall)) if is_number(wall) else NOT_RECORDED}")
    precision = meta.get("precision_choice") or meta.get("precision") or lookup(run, "train", "precision")
    lines.append(f"- precision: {precision or NOT_RECORDED}")  # auto's choice says why
    mem = meta.get("memory")
    if isinstance(mem, dict) and is_number(mem.get("measured_bytes")) and is_number(mem.get("predicted_bytes")):
        lines.append(
            f"- peak memory: {float(mem['measured_bytes']) / 1e6:,.1f} MB measured "
            f"({mem.get('measured_kind', 'peak')}); `lmkit plan` predicted "
            f"{float(mem['predicted_bytes']) / 1e6:,.1f} MB "
            f"({100 * (float(mem['measured_bytes']) / float(mem['predicted_bytes']) - 1):+.1f}%)"
        )
    horizon = meta.get("horizon")
    if isinstance(horizon, dict) and horizon.get("reason"):
        lines.append(f"- stopped by: {horizon['reason']}")
    if is_number(meta.get("train_loss")):
        lines.append(f"- last training loss: {float(meta['train_loss']):.4f}")
    tr = run.get("train") if isinstance(run, dict) else None
    if isinstance(tr, dict):
        hp = []
        for key, label in (
            ("batch_size", "batch"),
            ("lr", "peak learning rate"),
            ("schedule", "schedule"),
            ("warmup_steps", "warmup steps"),
            ("weight_decay", "weight decay"),
            ("grad_clip", "gradient clipping"),
            ("seed", "seed"),
        ):
            if tr.get(key) is not None:
                hp.append(f"{label} {tr[key]}")
        if hp:
            lines.append(f"- hyper-parameters: AdamW, {', '.join(hp)}, sequence length {cfg.max_seq_len}")
    lines.append("")
    return lines


def _quant_lines(q: Any) -> list[str]:
    """Quantization figures (size and quality before/after) from meta.json's 'quantization' record."""
    if not isinstance(q, dict):
        return []
    lines = ["", "### Quantization", ""]
    what = q.get("to") or q.get("dtype")
    lines.append(
        f"- weights quantized to {what or NOT_RECORDED}"
        + (f" by {q['method']}" if q.get("method") else "")
        + (f", from `{q['from']}`" if q.get("from") else "")
    )
    for key, label in (("disk_bytes", "size on disk"), ("memory_bytes", "size in memory")):
        v = q.get(key)
        if isinstance(v, dict) and is_number(v.get("before")) and is_number(v.get("after")):
            ratio = f" ({v['before'] / v['after']:.2f}x smaller)" if v["after"] else ""
            lines.append(f"- {label}: {si(v['before'])}B -> {si(v['after'])}B{ratio}")
    before, after = q.get("eval_before"), q.get("eval_after")
    if isinstance(before, dict) and isinstance(after, dict) and before and after:
        held = f" (held-out text: {q['held_out']})" if isinstance(q.get("held_out"), str) else ""
        lines += [
            "",
            f"Quality before and after quantization{held}:",
            "",
            "| metric | before | after | change |",
            "|---|---|---|---|",
        ]
        for key in ("loss", "perplexity", "bits_per_byte"):
            if is_number(before.get(key)) and is_number(after.get(key)):
                b, a = float(before[key]), float(after[key])
                rel = f" ({100 * (a - b) / b:+.3g}%)" if b else ""
                lines.append(f"| {key.replace('_', ' ')} | {b:.4f} | {a:.4f} | {a - b:+.3g}{rel} |")
    else:
        lines.append(f"- quality change from quantization: {NOT_RECORDED}")
    return lines


def evaluation_section(f: dict[str, Any]) -> list[str]:
    meta = f["meta"]
    ev = meta.get("eval") or {}
    lines = ["## Evaluation", ""]
    if any(is_number(ev.get(k)) for k in ("loss", "perplexity", "bits_per_byte")):
        scored = f" over {thousands(ev['tokens'])} scored tokens" if is_number(ev.get("tokens")) else ""
        lines += [
            f"On the held-out split of its training data (documents never trained on){scored}, "
            f"scored by its pre-training objective ({f['cfg'].objective}):",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines.append(
            f"| loss (nats per token) | {float(ev['loss']):.4f} |"
            if is_number(ev.get("loss"))
            else f"| loss | {NOT_RECORDED} |"
        )
        lines.append(
            f"| perplexity | {float(ev['perplexity']):.3f} |"
            if is_number(ev.get("perplexity"))
            else f"| perplexity | {NOT_RECORDED} |"
        )
        lines.append(
            f"| bits per byte | {float(ev['bits_per_byte']):.4f} |"
            if is_number(ev.get("bits_per_byte"))
            else f"| bits per byte | {NOT_RECORDED} |"
        )
        lines += [
            "",
            "Bits per byte does not depend on the tokenizer, so it compares models with different "
            "vocabularies; perplexity is exp(loss).",
        ]
    else:
        lines.append(f"Held-out loss, perplexity and bits per byte: {NOT_RECORDED}.")
    q = meta.get("quantization")
    if q:
        lines += _quant_lines(q)
    elif f["quantization"]:
        lines += [
            "",
            f"Weights are stored as {quant_label(f['quantization'])}; the quality change from "
            f"quantization was {NOT_RECORDED}.",
        ]
    lines.append("")
    return lines
