"""Model cards: the hub README of a checkpoint, written from what the checkpoint records.

``lmkit card CKPT`` (:func:`render_card`) writes Markdown with YAML front matter in the format
model hubs read (license, language, library_name, pipeline_tag, tags, datasets, metrics and a
``model-index`` with the held-out results), then these sections:

* what the model is, its architecture, and which tasks its family suits;
* how it was trained: objective, data sources and mix, curation survival, tokens, steps, compute
  in FLOPs and petaFLOP/s-days, hardware, wall time, precision, hyper-parameters;
* evaluation: held-out loss, perplexity, bits per byte, and quantization deltas when recorded;
* limitations and risks: size, data domain, training amount, no alignment or safety tuning;
* how to load it with lmkit and with ``transformers``;
* then the user's own sections (``--add-section FILE``), verbatim.

Every figure comes from the checkpoint (``meta.json``, ``config.json``, ``resolved.yaml``,
``tokenizer.json``); a figure the checkpoint does not hold is reported as "not recorded", never
guessed. The same card is the ``README.md`` of an export and of a hub entry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lmkit.errors import LmkitError

NOT_RECORDED = "not recorded"
PIPELINE_TAG = {"decoder": "text-generation", "encoder": "fill-mask", "encdec": "text2text-generation"}
AUTO_CLASS = {"decoder": "AutoModelForCausalLM", "encoder": "AutoModelForMaskedLM", "encdec": "AutoModelForSeq2SeqLM"}

FAMILY_TITLE = {
    "decoder": "decoder-only (GPT/Llama-style) causal language model",
    "encoder": "encoder-only (BERT-style) masked language model",
    "encdec": "encoder-decoder (T5-style) text-to-text model",
}
FAMILY_USES = {
    "decoder": (
        "A decoder reads text left to right and predicts the next token from the ones before it, so "
        "it **generates**: it continues a prompt.",
        ["text generation and completion of a prompt (`lmkit generate`)",
         "zero-, one- and few-shot prompting: a task described and shown by examples in the prompt",
         "a base to fine-tune for a domain, for instructions or for chat"],
        ["tasks that need the whole input seen in both directions at once (an encoder does those better)",
         "answering questions reliably: it continues text plausibly, it does not check facts"],
    ),
    "encoder": (
        "An encoder sees the whole text in both directions at once and was trained to recover "
        "masked tokens, so it **understands** a text rather than writing one.",
        ["filling a blank: the most likely tokens for `[MASK]` (`lmkit fill-mask`)",
         "after adding a head and fine-tuning: sentence classification (e.g. sentiment), token "
         "classification (e.g. named entities), extractive question answering",
         "contextual token and sentence representations (e.g. for retrieval)"],
        ["generating text left to right: it has no causal decoder"],
    ),
    "encdec": (
        "An encoder-decoder reads an input with its bidirectional encoder and writes an output with its "
        "causal decoder, attending to the input: it maps **text to text**.",
        ["filling masked spans: the input marks spans with `<extra_id_0>`, `<extra_id_1>`, ... and the "
         "output gives each span after its sentinel (its pre-training task)",
         "after fine-tuning on input/output pairs: summarisation, translation, question answering"],
        ["open-ended continuation of a prompt as a decoder-only model does it",
         "the tasks above without fine-tuning: pre-training only taught it to fill spans"],
    ),
}


def _objective_text(objective: str) -> str:
    from lmkit import objectives as o

    if objective == "clm":
        return "causal language modeling: predict each next token from the previous ones only"
    if objective == "mlm":
        return (f"masked language modeling: {o.MLM_PROBABILITY:.0%} of the tokens chosen for prediction, of which "
                f"{o.MLM_MASK_SHARE:.0%} replaced by `[MASK]`, {o.MLM_RANDOM_SHARE:.0%} by a random token and the "
                "rest left unchanged; the model recovers the originals from context on both sides")
    if objective == "span":
        return (f"span corruption: random spans covering {o.NOISE_DENSITY:.0%} of the tokens (mean span length "
                f"{o.MEAN_SPAN_LENGTH:g}) each replaced by a sentinel `<extra_id_N>`; the decoder writes "
                "`<extra_id_0> span <extra_id_1> span ...`")
    return objective


# --------------------------------------------------------------------------- number formatting


def _int(x: Any) -> str:
    return f"{int(x):,}"


def _si(x: float) -> str:
    """1234567 -> '1.23 M' (decimal prefixes)."""
    x = float(x)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g}"


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s:.0f} s ({s / 60:.1f} min)"
    return f"{s:.0f} s ({s / 3600:.2f} h)"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


# --------------------------------------------------------------------------- reading the checkpoint


def _check_weights_readable(path: Path) -> None:
    """Refuse to describe weights that cannot be loaded: a missing, truncated or foreign
    model.safetensors (only its header is read: the check costs no more for a large model)."""
    from safetensors import safe_open

    f = path / "model.safetensors"
    if not f.is_file():
        raise LmkitError(f"{path}: model.safetensors is missing; no card is written for weights that are not there")
    try:
        with safe_open(str(f), framework="pt"):
            pass
    except Exception as e:  # safetensors' own error type for a damaged header or a short file
        raise LmkitError(f"{f}: weights unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "no card is written for them") from None


def card_facts(ckpt: str | Path) -> dict[str, Any]:
    """Everything the card says, read from the checkpoint: config, meta, run config, tokenizer."""
    from lmkit.config import model_config_from_dict
    from lmkit.models.checkpoint import load_meta, read_config, resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    raw = read_config(path)
    cfg = model_config_from_dict(raw["model"])
    _check_weights_readable(path)
    try:
        meta = load_meta(path)
    except (OSError, ValueError) as e:
        raise LmkitError(f"{path / 'meta.json'}: unreadable ({e})") from None
    run: dict[str, Any] = {}
    if (path / "resolved.yaml").is_file():
        try:
            run = yaml.safe_load((path / "resolved.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            run = {}
    tok: dict[str, Any] = {}
    if (path / "tokenizer.json").is_file():
        from lmkit.tokenizer import Tokenizer

        t = Tokenizer.load(path / "tokenizer.json", strict=False)
        tok = {"vocab_size": t.vocab_size, "sha256": t.sha256, "bos": t.bos_id, "eos": t.eos_id,
               "pad": t.pad_id, "mask": t.mask_id}
    params = meta.get("params")
    if not _num(params):
        from lmkit.plan import count_params

        params = count_params(cfg).total
    return {"path": path, "cfg": cfg, "config": raw, "meta": meta, "run": run, "tokenizer": tok,
            "params": int(params), "quantization": raw.get("quantization")}


def export_blocker(cfg: Any) -> str | None:
    """Why this model has no transformers equivalent, or None when ``lmkit export`` can map it."""
    from lmkit.ship.export_hf import export_blocker as blocker

    return blocker(cfg)


def hf_architecture(cfg: Any) -> str | None:
    """The transformers class ``lmkit export`` maps this model onto, or None when there is none."""
    from lmkit.ship.export_hf import target_of

    return None if export_blocker(cfg) is not None else target_of(cfg).architecture


def default_name(path: Path) -> str:
    """A checkpoint's display name: its folder, or its run's folder for ``ckpt-NNNNNNN``."""
    path = Path(path).resolve()
    return path.parent.name if path.name.startswith("ckpt-") else path.name


# --------------------------------------------------------------------------- sections


def _front_matter(f: dict[str, Any], name: str, license: str | None, language: Sequence[str] | None,
                  export: bool) -> dict[str, Any]:
    cfg, meta = f["cfg"], f["meta"]
    fam = cfg.family
    arch = hf_architecture(cfg)
    tags = ["lmkit", fam, {"decoder": "causal-lm", "encoder": "masked-lm", "encdec": "span-corruption"}[fam]]
    if arch:  # the transformers model type, e.g. llama, bert, roformer, t5
        tags.append(arch.removesuffix("ForCausalLM").removesuffix("ForMaskedLM")
                    .removesuffix("ForConditionalGeneration").lower())
    tags.append("pretrained")
    if f["quantization"]:
        tags.append("quantized")
    if meta.get("imported_from"):
        tags.append("imported")
    fm: dict[str, Any] = {"license": license or "unknown"}
    if language:
        fm["language"] = list(language)
    fm["library_name"] = "transformers" if export else "lmkit"
    fm["pipeline_tag"] = PIPELINE_TAG[fam]
    fm["tags"] = tags
    datasets = sorted(_sources(meta))
    if not datasets:  # no per-source record: the training inputs by name
        paths = (meta.get("data") or {}).get("paths") or []
        datasets = sorted({Path(str(p).rstrip("/")).name or str(p) for p in paths})
    if datasets:
        fm["datasets"] = datasets
    ev = meta.get("eval") or {}
    metric_ids = [m for k, m in (("loss", "loss"), ("perplexity", "perplexity"), ("bits_per_byte", "bits-per-byte"))
                  if _num(ev.get(k))]
    if metric_ids:
        fm["metrics"] = metric_ids
        fm["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": PIPELINE_TAG[fam], "name": {"decoder": "Causal language modeling",
                                                               "encoder": "Masked language modeling",
                                                               "encdec": "Span corruption"}[fam]},
                "dataset": {"name": "held-out split of the training data", "type": "held-out"},
                "metrics": [{"type": m, "value": round(float(ev[k]), 6),
                             "name": {"loss": "held-out loss (nats per scored token)", "perplexity": "perplexity",
                                      "bits_per_byte": "bits per byte"}[k]}
                            for k, m in (("loss", "loss"), ("perplexity", "perplexity"),
                                         ("bits_per_byte", "bits-per-byte")) if _num(ev.get(k))],
            }],
        }]
    return fm


def _sources(meta: dict[str, Any]) -> dict[str, float]:
    """Source name -> training tokens, from whichever form the data summary recorded."""
    data = meta.get("data") or {}
    src = data.get("sources") or data.get("tokens_per_source") or {}
    if isinstance(src, dict):  # raw files are recorded by path: a dataset is named by its file name
        return {(Path(str(k)).name if "/" in str(k) else str(k)): float(v) for k, v in src.items() if _num(v)}
    if isinstance(src, list):
        return {str(s): float("nan") for s in src}
    return {}


def _model_section(f: dict[str, Any], name: str, export: bool = False) -> list[str]:
    cfg, meta = f["cfg"], f["meta"]
    fam = cfg.family
    imported = meta.get("imported_from")
    if imported:
        arch = imported.get("architecture") or hf_architecture(cfg) or "transformers"
        origin = f"imported into lmkit from a Hugging Face `{arch}` folder (`{imported.get('path', NOT_RECORDED)}`)"
    else:
        origin = f"pre-trained from scratch with lmkit by {_objective_text(cfg.objective).split(':')[0]}"
    lines = [f"# {name}", "",
             f"**{name}** is a {_si(f['params'])}-parameter {FAMILY_TITLE[fam]}, {origin}.", ""]
    positions = {"rotary": f"rotary (θ = {cfg.rope_theta:g})", "learned": "learned absolute",
                 "sinusoidal": "sinusoidal (fixed)"}[cfg.pos_encoding]
    if fam == "encdec":
        positions = "T5 relative position buckets (32 buckets, max distance 128)"
    ffn = {"decoder": "SwiGLU", "encoder": "GELU", "encdec": "ReLU"}[fam]
    norm = {"decoder": "RMSNorm, pre-norm", "encoder": "LayerNorm, post-norm", "encdec": "RMSNorm, pre-norm"}[fam]
    rows = [("family", f"{fam}: {FAMILY_TITLE[fam]}"), ("parameters", f"{_int(f['params'])} ({_si(f['params'])})")]
    if fam == "encdec":
        rows.append(("layers", f"{cfg.n_layers} encoder + {cfg.n_decoder_layers or cfg.n_layers} decoder"))
    else:
        rows.append(("layers", str(cfg.n_layers)))
    rows += [("model width (d_model)", str(cfg.d_model)),
             ("attention heads", f"{cfg.n_heads} (head size {cfg.head_dim})"),
             ("feed-forward", f"{ffn}, width {cfg.ffn_width}"), ("normalisation", f"{norm}, eps {cfg.norm_eps:g}"),
             ("positions", positions), ("context window", f"{_int(cfg.max_seq_len)} tokens"),
             ("vocabulary", f"{_int(cfg.vocab_size)} tokens (byte-level BPE)"),
             ("tied input/output embeddings", "yes" if cfg.tie_embeddings else "no")]
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


def quant_label(q: Any) -> str:
    """``int8 (int8-absmax-per-channel, per output channel (row))`` from a config's quantization record."""
    if isinstance(q, dict):
        what = q.get("dtype") or q.get("to")
        how = [str(x) for x in (q.get("method"), q.get("granularity")) if x and x != what]
        return f"{what}" + (f" ({', '.join(how)})" if how else "") if what else json.dumps(q)[:200]
    return str(q)


def _curation_lines(cur: Any) -> list[str]:
    """Survival through curation, from what the checkpoint recorded.

    Accepted forms: ``lmkit curate``'s report (``{"totals": ..., "stages": [...]}``), its bare
    totals (``{"docs_in": ..., "docs_out": ...}``, what the trainer records for one curated input),
    or a mapping of input folder -> either (several curated inputs).
    """
    if not isinstance(cur, dict):
        return []

    def is_report(d: Any) -> bool:
        return isinstance(d, dict) and (isinstance(d.get("totals"), dict) or _num(d.get("docs_in")))

    reports = [("", cur)] if is_report(cur) else [(str(k), v) for k, v in cur.items() if is_report(v)]
    lines: list[str] = []
    for label, r in reports:
        t = r["totals"] if isinstance(r.get("totals"), dict) else r
        figures = []
        if _num(t.get("docs_in")) and _num(t.get("docs_out")):
            docs = f"{_int(t['docs_in'])} documents in, {_int(t['docs_out'])} kept"
            if _num(t.get("docs_kept_pct")):
                docs += f" ({t['docs_kept_pct']:.1f}%)"
            figures.append(docs)
        if _num(t.get("tokens_kept_pct")):
            figures.append(f"{t['tokens_kept_pct']:.1f}% of tokens kept")
        if not figures:
            continue
        lines.append(f"- curation{f' of {label}' if label else ''}: " + "; ".join(figures))
        for s in r.get("stages") or []:
            if isinstance(s, dict) and s.get("name") and _num(s.get("docs_in")) and _num(s.get("docs_out")):
                pct = f" ({s['docs_kept_pct']:.1f}% kept)" if _num(s.get("docs_kept_pct")) else ""
                lines.append(f"  - {s['name']}: {_int(s['docs_in'])} -> {_int(s['docs_out'])} documents{pct}")
    return lines


def _training_section(f: dict[str, Any]) -> list[str]:
    cfg, meta, run = f["cfg"], f["meta"], f["run"]
    lines = ["## Training", ""]
    imported = meta.get("imported_from")
    if imported and not _num(meta.get("tokens")):
        lines += [f"This model was trained outside lmkit and imported from `{imported.get('path', NOT_RECORDED)}` "
                  f"({imported.get('architecture', '')}). Its data, tokens, compute and losses were "
                  f"{NOT_RECORDED} by lmkit.", ""]
        return lines
    if imported:
        lines += [f"Imported from `{imported.get('path')}`; the training record below is the one lmkit wrote before "
                  "export (the weights were verified unchanged by their sha256).", ""]
    lines += [f"- objective: {_objective_text(cfg.objective)}"]
    data = meta.get("data") or {}
    paths = data.get("paths") or _get(run, "data", "paths")
    lines.append(f"- data: {', '.join(f'`{p}`' for p in paths) if paths else NOT_RECORDED}")
    sources = _sources(meta)
    total = sum(v for v in sources.values() if math.isfinite(v))
    if sources and total > 0:
        lines.append("- mix (training tokens per source): " + "; ".join(
            f"{k}: {_int(v)} ({v / total:.1%})" for k, v in sorted(sources.items(), key=lambda kv: -kv[1])))
    elif sources:
        lines.append(f"- sources: {', '.join(sorted(sources))}")
    else:
        lines.append(f"- mix by source: {NOT_RECORDED}")
    if _num(data.get("train_tokens")):
        held = f", {_int(data['val_tokens'])} held out for evaluation" if _num(data.get("val_tokens")) else ""
        lines.append(f"- data size: {_int(data['train_tokens'])} training tokens{held}")
    if _num(data.get("bytes_per_token")):
        lines.append(f"- tokenizer: {data['bytes_per_token']:.2f} bytes of text per token"
                     + (f", vocabulary {_int(f['tokenizer']['vocab_size'])}" if f["tokenizer"] else ""))
    cur = _curation_lines(data.get("curation"))
    lines += cur if cur else [f"- curation survival: {NOT_RECORDED}"]
    tokens, steps = meta.get("tokens"), meta.get("step")
    if _num(tokens):
        tl = f"- tokens seen: {_int(tokens)} ({_si(tokens)})"
        if _num(data.get("train_tokens")) and data["train_tokens"] > 0:
            passes = tokens / data["train_tokens"]
            tl += f", {passes:.3g} pass{'' if passes == 1 else 'es'} over the training data"
        if f["params"]:
            tl += f", {tokens / f['params']:.2g} tokens per parameter"
        lines.append(tl)
    else:
        lines.append(f"- tokens seen: {NOT_RECORDED}")
    lines.append(f"- optimizer steps: {_int(steps) if _num(steps) else NOT_RECORDED}")
    flops = meta.get("flops")
    if _num(flops):
        from lmkit.plan import pf_days

        fl = f"- compute: {float(flops):.3g} FLOPs = {pf_days(flops):.3g} petaFLOP/s-days"
        if _num(meta.get("flops_per_token")):
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
    lines.append(f"- wall time: {_duration(float(wall)) if _num(wall) else NOT_RECORDED}")
    lines.append(f"- precision: {meta.get('precision') or _get(run, 'train', 'precision') or NOT_RECORDED}")
    horizon = meta.get("horizon")
    if isinstance(horizon, dict) and horizon.get("reason"):
        lines.append(f"- stopped by: {horizon['reason']}")
    if _num(meta.get("train_loss")):
        lines.append(f"- last training loss: {float(meta['train_loss']):.4f}")
    tr = run.get("train") if isinstance(run, dict) else None
    if isinstance(tr, dict):
        hp = []
        for key, label in (("batch_size", "batch"), ("lr", "peak learning rate"), ("schedule", "schedule"),
                           ("warmup_steps", "warmup steps"), ("weight_decay", "weight decay"),
                           ("grad_clip", "gradient clipping"), ("seed", "seed")):
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
    lines.append(f"- weights quantized to {what or NOT_RECORDED}" + (f" by {q['method']}" if q.get("method") else "")
                 + (f", from `{q['from']}`" if q.get("from") else ""))
    for key, label in (("disk_bytes", "size on disk"), ("memory_bytes", "size in memory")):
        v = q.get(key)
        if isinstance(v, dict) and _num(v.get("before")) and _num(v.get("after")):
            ratio = f" ({v['before'] / v['after']:.2f}x smaller)" if v["after"] else ""
            lines.append(f"- {label}: {_si(v['before'])}B -> {_si(v['after'])}B{ratio}")
    before, after = q.get("eval_before"), q.get("eval_after")
    if isinstance(before, dict) and isinstance(after, dict) and before and after:
        held = f" (held-out text: {q['held_out']})" if isinstance(q.get("held_out"), str) else ""
        lines += ["", f"Quality before and after quantization{held}:", "",
                  "| metric | before | after | change |", "|---|---|---|---|"]
        for key in ("loss", "perplexity", "bits_per_byte"):
            if _num(before.get(key)) and _num(after.get(key)):
                b, a = float(before[key]), float(after[key])
                rel = f" ({100 * (a - b) / b:+.3g}%)" if b else ""
                lines.append(f"| {key.replace('_', ' ')} | {b:.4f} | {a:.4f} | {a - b:+.3g}{rel} |")
    else:
        lines.append(f"- quality change from quantization: {NOT_RECORDED}")
    return lines


def _evaluation_section(f: dict[str, Any]) -> list[str]:
    meta = f["meta"]
    ev = meta.get("eval") or {}
    lines = ["## Evaluation", ""]
    if any(_num(ev.get(k)) for k in ("loss", "perplexity", "bits_per_byte")):
        scored = f" over {_int(ev['tokens'])} scored tokens" if _num(ev.get("tokens")) else ""
        lines += [f"On the held-out split of its training data (documents never trained on){scored}, "
                  f"scored by its pre-training objective ({f['cfg'].objective}):", "",
                  "| metric | value |", "|---|---|"]
        lines.append(f"| loss (nats per token) | {float(ev['loss']):.4f} |" if _num(ev.get("loss"))
                     else f"| loss | {NOT_RECORDED} |")
        lines.append(f"| perplexity | {float(ev['perplexity']):.3f} |" if _num(ev.get("perplexity"))
                     else f"| perplexity | {NOT_RECORDED} |")
        lines.append(f"| bits per byte | {float(ev['bits_per_byte']):.4f} |" if _num(ev.get("bits_per_byte"))
                     else f"| bits per byte | {NOT_RECORDED} |")
        lines += ["", "Bits per byte does not depend on the tokenizer, so it compares models with different "
                      "vocabularies; perplexity is exp(loss)."]
    else:
        lines.append(f"Held-out loss, perplexity and bits per byte: {NOT_RECORDED}.")
    q = meta.get("quantization")
    if q:
        lines += _quant_lines(q)
    elif f["quantization"]:
        lines += ["", f"Weights are stored as {quant_label(f['quantization'])}; the quality change from "
                      f"quantization was {NOT_RECORDED}."]
    lines.append("")
    return lines


def _limitations_section(f: dict[str, Any]) -> list[str]:
    from lmkit.plan import TOKENS_PER_PARAM

    cfg, meta = f["cfg"], f["meta"]
    params = f["params"]
    lines = ["## Limitations and risks", ""]
    scale = (f"about 1/{124e6 / params:,.0f} of GPT-2 small (124 M)" if params < 124e6
             else f"{params / 124e6:.1f}x GPT-2 small (124 M)")
    lines.append(f"- **Size.** {_si(params)} parameters, {scale}: expect fluent-looking text only within what "
                 "its training data covers, little world knowledge, and frequent factual errors.")
    sources = _sources(meta)
    paths = (meta.get("data") or {}).get("paths")
    if sources or paths:
        names = ", ".join(sorted(sources)) if sources else ", ".join(map(str, paths))
        lines.append(f"- **Data domain.** It saw only {names}; text from other domains, languages or styles is out "
                     "of distribution, and it reproduces the biases, errors and register of that data. "
                     "Memorised passages, including personal data that filtering missed, can be regenerated.")
    else:
        lines.append(f"- **Data domain.** The training data was {NOT_RECORDED}; judge the model's domain by testing.")
    tokens = meta.get("tokens")
    if _num(tokens) and params:
        tpp = tokens / params
        if tpp < TOKENS_PER_PARAM:
            lines.append(f"- **Training amount.** {tpp:.2g} tokens per parameter, below the ≈{TOKENS_PER_PARAM:g} "
                         "of a compute-optimal (Chinchilla) run: the model is under-trained for its size.")
        else:
            lines.append(f"- **Training amount.** {tpp:.2g} tokens per parameter (compute-optimal is ≈"
                         f"{TOKENS_PER_PARAM:g}).")
    lines.append("- **No alignment.** It is a pre-trained base model: no instruction tuning, no preference or "
                 "safety tuning, no content filter at generation time. It can produce false, offensive or "
                 "harmful text and should not be put in front of users without further work.")
    lines.append(f"- **Context.** It reads at most {_int(cfg.max_seq_len)} tokens at a time.")
    if cfg.family == "encoder":
        lines.append("- **Family.** An encoder cannot generate text; downstream tasks need a task head and "
                     "fine-tuning.")
    elif cfg.family == "encdec":
        lines.append("- **Family.** Pre-trained by span corruption only: it fills masked spans, and needs "
                     "fine-tuning on input/output pairs for other tasks.")
    lines.append("- **Evaluation.** The figures above are on held-out text from the same sources as the training "
                 "data; no downstream benchmark was run.")
    if f["quantization"]:
        lines.append("- **Quantization.** Lower-precision weights change the outputs slightly (see Evaluation).")
    lines.append("")
    return lines


def _usage_section(f: dict[str, Any], export: bool, load_path: str | None, hub_name: str | None) -> list[str]:
    cfg = f["cfg"]
    fam = cfg.family
    ckpt = str(f["path"])
    lines = ["## How to use", "", "### With lmkit", "", "```bash"]
    if hub_name:
        lines.append(f"lmkit hub pull {hub_name} --out {hub_name.replace('/', '-')}")
        ckpt = hub_name.replace("/", "-")
    if export:
        lines.append(f"lmkit import-hf {load_path or '.'} --out {default_name(f['path'])}-lmkit")
        ckpt = f"{default_name(f['path'])}-lmkit"
    if fam == "decoder":
        lines.append(f'lmkit generate {ckpt} "Once upon a time" --max-new-tokens 50')
    elif fam == "encoder":
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
        lines += ["transformers takes float weights: export the checkpoint from before quantization, or export "
                  "this one's quantized values as float32 with "
                  f"`lmkit export {ckpt} --format hf --dequantize --out {default_name(f['path'])}-hf`.", ""]
        return lines
    folder = load_path if export else f"{default_name(f['path'])}-hf"
    if not export:
        lines += [f"After `lmkit export` (above) the folder `{folder}` loads offline:", ""]
    auto = AUTO_CLASS[fam]
    if not f["tokenizer"]:
        lines += ["```python", f"from transformers import {auto}", "",
                  f'model = {auto}.from_pretrained("{folder}").eval()', "```", "",
                  "This checkpoint has no tokenizer.json, so there is no tokenizer for `AutoTokenizer` to load: "
                  f"tokenize with the one the model was trained with (vocabulary {_int(cfg.vocab_size)}).", ""]
        return lines
    lines += ["```python", "import torch", f"from transformers import AutoTokenizer, {auto}", "",
              f'tok = AutoTokenizer.from_pretrained("{folder}")',
              f'model = {auto}.from_pretrained("{folder}").eval()']
    if fam == "decoder":
        lines += ['ids = tok("Once upon a time", return_tensors="pt")',
                  "out = model.generate(**ids, max_new_tokens=50, do_sample=False)",
                  "print(tok.decode(out[0], skip_special_tokens=True))"]
    elif fam == "encoder":
        lines += ['ids = tok("The capital of France is [MASK].", return_tensors="pt")',
                  "with torch.no_grad():", "    logits = model(**ids).logits",
                  "pos = (ids.input_ids[0] == tok.mask_token_id).nonzero()[0, 0]",
                  "print(tok.decode(logits[0, pos].topk(5).indices))"]
    else:
        lines += ['ids = tok("The <extra_id_0> sat on the <extra_id_1>.", return_tensors="pt")',
                  "out = model.generate(**ids, max_new_tokens=20, do_sample=False)",
                  "print(tok.decode(out[0], skip_special_tokens=False))"]
    from lmkit.ship.export_hf import PARITY_RTOL

    lines += ["```", "",
              "The tokenizer adds no special tokens (no BOS/EOS, no [CLS]/[SEP]), exactly as lmkit encodes text; "
              "special-token text typed in the input (`</s>`, `<extra_id_0>`) becomes the special token. "
              f"Logits match lmkit's within {PARITY_RTOL:g} x max(1, max |logit|) in float32, and greedy decoding "
              "gives the same tokens (checked at export).", ""]
    return lines


# --------------------------------------------------------------------------- the card


def _user_section(src: str | Path) -> str:
    p = Path(src)
    if not p.is_file():
        raise LmkitError(f"{p}: section file not found")
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise LmkitError(f"{p}: cannot read section ({e})") from None
    if not text:
        raise LmkitError(f"{p}: section file is empty")
    if not text.startswith("#"):
        text = f"## {p.stem.replace('_', ' ').replace('-', ' ').capitalize()}\n\n{text}"
    return text


def render_card(ckpt: str | Path, sections: Sequence[str | Path] = (), license: str | None = None,
                language: Sequence[str] | None = None, name: str | None = None, export: bool = False,
                load_path: str | None = None, hub_name: str | None = None) -> str:
    """The model card (Markdown with YAML front matter) of checkpoint ``ckpt``.

    ``sections``: Markdown files appended verbatim (a heading is added to one that lacks it).
    ``export``: the card of a transformers export (library_name transformers; loading code uses
    ``load_path``). ``hub_name``: the hub name to show in the pull command.
    """
    f = card_facts(ckpt)
    name = name or hub_name or default_name(f["path"])
    user = [_user_section(s) for s in sections]
    fm = _front_matter(f, name, license, language, export)
    body: list[str] = []
    body += _model_section(f, name, export)
    body += _training_section(f)
    body += _evaluation_section(f)
    body += _limitations_section(f)
    body += _usage_section(f, export, load_path, hub_name)
    if not license:
        body += [f"License: {NOT_RECORDED} (set it with `lmkit card --license`).", ""]
    for s in user:
        body += [s, ""]
    head = yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{head}---\n\n" + "\n".join(body).rstrip() + "\n"


def parse_front_matter(text: str, source: str = "card") -> tuple[dict[str, Any], str]:
    """(YAML front matter as a dict, Markdown body) of a hub README; ({}, text) without front matter."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 4)
    if end < 0:
        raise LmkitError(f"{source}: front matter starts with --- but never ends")
    try:
        data = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise LmkitError(f"{source}: front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LmkitError(f"{source}: front matter must be a mapping")
    return data, text[end + 5:]


def _is_card_file(path: Path) -> bool:
    """What ``card --overwrite`` may replace: a Markdown file or a card (front matter first)."""
    if path.suffix.lower() in (".md", ".markdown"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"---\n"
    except OSError:
        return False


def cli_card(args: argparse.Namespace) -> int:
    """``lmkit card CKPT [--out FILE|-] [--add-section FILE ...] [--license ID] [--language CODE ...]``."""
    from lmkit.models.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    text = render_card(path, sections=args.add_section or [], license=args.license, language=args.language,
                       name=args.name)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    from lmkit.files import check_out_file

    out = Path(args.out) if args.out else path / "README.md"
    if out.exists() and not args.overwrite:
        raise LmkitError(f"{out} already exists (use --overwrite to replace it, or --out - to print the card)")
    if out.exists() and out.is_dir():
        raise LmkitError(f"{out}: is a folder; give a file name such as README.md")
    # the card may go into the checkpoint folder, but never over a section it reads or a weights/config file
    check_out_file(out, args.overwrite, [*(args.add_section or [])], ours=_is_card_file, kind="card (a .md file)",
                   inside_inputs=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    fm, _ = parse_front_matter(text)
    print(f"wrote {out} ({len(text.splitlines())} lines; pipeline_tag {fm.get('pipeline_tag')}, "
          f"license {fm.get('license')})")
    return 0
