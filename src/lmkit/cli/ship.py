"""The shipping commands: ``quantize``, ``export``, ``import-hf`` and ``card`` (``hub`` is :mod:`lmkit.cli.hub`).

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a
``_run_<name>(args)`` runner that calls the domain modules (``lmkit.ship.quantize``,
``export_hf``, ``import_hf``, ``card``) and prints their report as text or JSON. They load
only when their command runs, so ``lmkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lmkit.cli.common import (
    add_card_flags,
    add_checkpoint,
    add_held_out_flags,
    add_json,
    add_no_verify,
    add_out,
    add_overwrite,
    print_json,
)
from lmkit.errors import LmkitError


def add_quantize(sub: Any) -> None:
    p = sub.add_parser(
        "quantize",
        help="store a checkpoint in fp16, bf16 or int8, and report size and quality change",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a smaller copy of a checkpoint.\n\n"
        "  --to fp16|bf16  cast every weight to 16 bits (half the size)\n"
        "  --to int8       symmetric absmax int8 per output channel, with an fp32 scale per row "
        "(w ~ q * scale): about a quarter of fp32; weights stay int8 in memory and are "
        "dequantised on the fly\n\n"
        "The result is an ordinary checkpoint folder: lmkit generate / evaluate load it directly. "
        "The report compares size on disk and in memory, and held-out loss / perplexity / bits per "
        "byte before and after (on --data, or the run's own validation shards when they are found).\n\n"
        "example:\n  lmkit quantize runs/small --to int8 --out runs/small-int8",
    )
    add_checkpoint(p)
    p.add_argument("--to", required=True, choices=["fp16", "bf16", "int8"], help="target format")
    add_out(p, "folder for the quantized checkpoint", required=True)
    add_held_out_flags(p, "--eval-batches", "held-out data for the quality check")
    add_overwrite(p, "a checkpoint lmkit wrote in --out")
    add_json(p, "the report as one JSON object")
    add_no_verify(p)
    p.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    """``lmkit quantize CKPT --to ... --out DIR``."""
    from lmkit.ship.quantize import quantize_checkpoint, size_text

    rep = quantize_checkpoint(
        args.checkpoint,
        args.out,
        to=args.to,
        overwrite=args.overwrite,
        data=args.data,
        eval_batches=args.eval_batches,
        batch_size=args.batch_size,
        text_field=args.text_field,
        show_progress=not args.json,
    )
    if args.json:
        print_json(rep)
        return 0
    d, m = rep["disk_bytes"], rep["memory_bytes"]
    print(f"quantized {rep['source']} -> {rep['out']} ({rep['method']}, {rep['to']})")
    print(f"  {'':<22}{'before':>12}{'after':>12}{'ratio':>8}")
    print(f"  {'size on disk':<22}{size_text(d['before']):>12}{size_text(d['after']):>12}{d['ratio']:>7.2f}x")
    print(f"  {'size in memory':<22}{size_text(m['before']):>12}{size_text(m['after']):>12}{m['ratio']:>7.2f}x")
    b, a = rep["eval_before"], rep["eval_after"]
    if b and a:
        print(f"  {'held-out loss':<22}{b['loss']:>12.4f}{a['loss']:>12.4f}   ({rep['loss_change']:+.4f} nats)")
        print(
            f"  {'perplexity':<22}{b['perplexity']:>12.3f}{a['perplexity']:>12.3f}   "
            f"({rep['perplexity_change_pct']:+.2f}%)"
        )
        if "bits_per_byte" in b and "bits_per_byte" in a:
            print(f"  {'bits per byte':<22}{b['bits_per_byte']:>12.4f}{a['bits_per_byte']:>12.4f}")
        print(f"  (held-out windows: {rep['held_out']}, {int(a['tokens']):,} scored tokens)")
    else:
        print("  quality not measured: no held-out data found (pass --data: a shard folder or text files)")
    if rep.get("int8_layers"):
        _print_int8_layers(rep["int8_layers"])
    return 0


def _print_int8_layers(rows: list[dict[str, Any]]) -> None:
    """Per layer: what the integer grid, one scale per tensor and one per channel do to its weights."""
    print("\nwhat int8 did to the weights, per layer (relative RMS error = RMS(w_int8 - w) / RMS(w)):")
    head = (
        f"  {'layer':<34} {'shape':>11} {'absmax':>8} {'rows absmax':>15} {'int grid':>9} {'per tensor':>11} "
        f"{'per channel':>12} {'max |err|':>10}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in rows:
        pc = r["per_channel"]
        shape = "x".join(str(n) for n in r["shape"])
        rows_range = f"{r['row_absmax_min']:.2g}-{r['row_absmax_max']:.2g}"
        print(
            f"  {r['name'][-34:]:<34} {shape:>11} {r['absmax']:>8.3g} {rows_range:>15} "
            f"{100 * r['integer_grid']['relative_rms']:>8.1f}% {100 * r['per_tensor']['relative_rms']:>10.2f}% "
            f"{100 * pc['relative_rms']:>11.2f}% {pc['max_abs']:>10.3g}"
        )
    print(
        "  (int grid: int8 with no scale, the plain integers -128..127: weights under 0.5 in size all become 0, "
        "100% error; per tensor: one absmax scale for the matrix; per channel: one per output row, what this "
        "checkpoint stores; max |err| is per channel)"
    )


def add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint as a Hugging Face transformers folder or one llama.cpp GGUF file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a folder that transformers loads offline with its Auto classes:\n"
        "  decoder -> the class of its layout: LlamaForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel, "
        "GPTNeoXForCausalLM or BloomForCausalLM (AutoModelForCausalLM)\n"
        "  encoder -> BertForMaskedLM (learned positions), RobertaForMaskedLM (learned, one token type) or "
        "RoFormerForMaskedLM (rotary positions), all AutoModelForMaskedLM\n"
        "  encdec  -> T5ForConditionalGeneration (T5 layout) or BartForConditionalGeneration (BART layout), "
        "both AutoModelForSeq2SeqLM\n"
        "Files: config.json, model.safetensors (explicit weight-name maps; above --max-shard-size, "
        "model-0000i-of-0000n.safetensors shards + model.safetensors.index.json), tokenizer.json + "
        "tokenizer_config.json + special_tokens_map.json (AutoTokenizer; no special tokens are added "
        "to text, as in lmkit), generation_config.json, README.md (the model card) and lmkit_meta.json "
        "(the training record, so `lmkit import-hf` can bring it back).\n\n"
        "After writing, the folder is loaded with transformers and compared with lmkit: logits within "
        "1e-4 x max(1, max|logit|) and identical greedy tokens, or nothing is written (--no-verify "
        "skips this). Not exportable: decoders whose layout no class above has (e.g. learned positions "
        "with RMSNorm), encoders with sinusoidal positions or a rotary theta other than 10000; a quantized "
        "checkpoint needs --dequantize (int8/fp16 values as float32) or the one from before `lmkit quantize`.\n\n"
        "--format gguf: one .gguf file llama.cpp runs (Llama, Qwen2, GPT-2 layouts; weights F32, or F16/Q8_0 "
        "after `lmkit quantize --to fp16|int8`; the tokenizer inside).\n\nexamples:\n"
        "  lmkit export runs/small --format hf --out hf/small --license apache-2.0\n"
        "  lmkit export runs/small --format gguf --out small.gguf",
    )
    add_checkpoint(p)
    p.add_argument(
        "--format",
        default="hf",
        choices=["hf", "gguf"],
        help="hf (default): a transformers folder; gguf: one llama.cpp file",
    )
    add_out(p, "output folder (hf: new or empty unless --overwrite) or FILE.gguf (gguf)", required=True)
    add_overwrite(p, "a previous export in --out")
    add_no_verify(p, also="loading the export in transformers to compare")
    p.add_argument(
        "--dequantize",
        action="store_true",
        help="export a quantized checkpoint's values as float32 weights (int8 q*scale, fp16/bf16 widened; gguf: F32)",
    )
    p.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="largest weight file (default 5GB, transformers' and the hub's): bytes, 200MB, 2GB or 512MiB; "
        "larger weights become shards of whole tensors with model.safetensors.index.json",
    )
    add_card_flags(p)
    add_json(p, "the export report (files, parity figures) as JSON")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    """``lmkit export CKPT --format hf --out DIR [--overwrite] [--no-verify]`` (or ``--format gguf --out F.gguf``)."""
    from lmkit.ship.export_hf import export_hf

    if args.format == "gguf":
        return _run_export_gguf(args)
    report = export_hf(
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        verify=not args.no_verify,
        card_sections=args.add_section or [],
        license=args.license,
        language=args.language,
        dequantize=args.dequantize,
        max_shard_size=args.max_shard_size,
    )
    if args.json:
        print_json(report)
        return 0
    print(
        f"exported {report['family']} -> {report['architecture']} in {report['out']}"
        + (f" (weights dequantized from {report['dequantized_from']} to float32)" if report["dequantized_from"] else "")
    )
    w = report["weight_files"]  # many shards are shown as a range: a large model has dozens
    files = [f for f in report["files"] if len(w) < 4 or f not in w] + ([f"{w[0]} .. {w[-1]}"] if len(w) >= 4 else [])
    print(f"  files: {', '.join(files)}")
    p = report.get("parity")
    if p:
        print(
            f"  parity with transformers: max |Δlogit| {p['max_abs_diff']:.2g} (tolerance {p['tolerance']:.2g}) "
            f"over {p['probe_tokens']} tokens; {p['greedy_what']} identical"
        )
    load = f"  load it: transformers.{report['auto_class']}.from_pretrained({report['out']!r})"
    if "tokenizer.json" in report["files"]:
        print(f"{load} and AutoTokenizer.from_pretrained({report['out']!r})")
    else:
        print(
            f"{load}; no tokenizer: {report['checkpoint']} has no tokenizer.json, so AutoTokenizer cannot load "
            "one from the export (tokenize with the tokenizer the model was trained with)"
        )
    return 0


def _run_export_gguf(args: argparse.Namespace) -> int:
    """``lmkit export CKPT --format gguf --out FILE.gguf [--overwrite] [--dequantize]``: one llama.cpp file
    (``lmkit.ship.export_gguf``); --no-verify, the card flags and --max-shard-size are the hf format's."""
    from lmkit.ship.export_gguf import export_gguf

    r = export_gguf(args.checkpoint, args.out, overwrite=args.overwrite, dequantize=args.dequantize)
    if args.json:
        print_json(r)
        return 0
    kind = {"f32": "F32", "f16": "F16 matrices", "bf16": "BF16 matrices", "q8_0": "Q8_0 matrices"}[r["type"]]
    print(f"exported decoder -> llama.cpp {r['architecture']} in {r['out']} ({r['bytes'] / 1e6:.1f} MB, {kind})")
    if r["dequantized_from"]:
        print(f"  weights dequantized from {r['dequantized_from']} to F32")
    if r["type"] == "q8_0":
        print(
            f"  Q8_0 holds lmkit's int8 codes; each row's scale rounded to fp16 moved by at most "
            f"{r['scale_rounding']:.2g} (relative)"
        )
    if r["f32_matrices"]:
        kept = ", ".join(r["f32_matrices"])
        print(f"  kept F32 (lmkit's int8 values; Q8_0 needs rows of 32 values and fp16 scales): {kept}")
    print(f"  {r['tensors']} tensors; tokenizer {r['tokenizer']}")
    print(f"  run it: llama-cli -m {r['out']}  (or llama_cpp.Llama(model_path={r['out']!r}))")
    return 0


def add_import_hf(sub: Any) -> None:
    p = sub.add_parser(
        "import-hf",
        help="import a Hugging Face transformers folder or hub model (Llama, Qwen2, GPT-2, Pythia, BLOOM, BERT, "
        "RoFormer, T5) as an lmkit checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a transformers model saved on disk (config.json + model.safetensors, sharded "
        "safetensors, or pytorch_model.bin read without pickles) into an lmkit checkpoint, to evaluate "
        "it or continue pre-training it on domain data. Supported: LlamaForCausalLM (SmolLM2, TinyLlama, "
        "Llama-3.2), Qwen2ForCausalLM, GPT2LMHeadModel, GPTNeoXForCausalLM (Pythia), BloomForCausalLM, "
        "BertForMaskedLM, RobertaForMaskedLM, RoFormerForMaskedLM, T5ForConditionalGeneration (v1.0 and v1.1 / "
        "Flan-T5) and BartForConditionalGeneration whose config lmkit "
        "represents exactly; anything else is refused in one line naming the config key it cannot represent (an "
        "active sliding window, mixture of experts, q/k norm, another rope scaling type, ...).\n\n"
        "The folder's tokenizer.json is carried over as it is, with which token plays which role (bos, eos, "
        "pad, the document separator) as its tokenizer_config.json, special_tokens_map.json, "
        "generation_config.json and config.json say; --bos-token/--eos-token/--pad-token name a role they "
        "leave out. Weights become float32. meta.json records "
        "the source (hub name and commit, or folder), the sha256 of its weights and the base model's license "
        "from its card, carried on by every checkpoint trained from it; for an unchanged `lmkit export` folder the "
        "original training record is kept.\n\n"
        "examples:\n  lmkit import-hf hf/small --out runs/small-back\n"
        "  lmkit import-hf HuggingFaceTB/SmolLM2-135M --out models/smollm2   (a hub name; --revision picks a commit)",
    )
    p.add_argument(
        "folder",
        metavar="SOURCE",
        help="a transformers folder (holding config.json and the weights), or a hub name such as "
        "HuggingFaceTB/SmolLM2-135M (fetched through huggingface_hub: its cache, HF_TOKEN, HF_HUB_OFFLINE=1)",
    )
    p.add_argument(
        "--revision", default=None, help="with a hub name: the branch, tag or commit to import (default main)"
    )
    add_out(p, "checkpoint folder to write (new or empty unless --overwrite)", required=True)
    add_overwrite(p, "a checkpoint lmkit wrote in --out")
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json (or folder) to use instead of the folder's")
    p.add_argument("--no-tokenizer", action="store_true", help="import the weights without a tokenizer")
    for role, what in (("bos", "begins a text"), ("eos", "ends a text and separates documents"), ("pad", "pads")):
        p.add_argument(f"--{role}-token", metavar="TOKEN", help=f"the token that {what} (default: as its files say)")
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="context window of the lmkit model (default: the config's max_position_embeddings)",
    )
    add_json(p, "the import report as JSON")
    p.set_defaults(func=_run_import_hf)


def _run_import_hf(args: argparse.Namespace) -> int:
    """``lmkit import-hf DIR --out CKPT [--tokenizer FILE | --no-tokenizer] [--max-seq-len N]``."""
    from lmkit.ship.import_hf import import_hf

    if args.tokenizer and args.no_tokenizer:
        raise LmkitError("give --tokenizer or --no-tokenizer, not both")
    report = import_hf(
        args.folder,
        args.out,
        overwrite=args.overwrite,
        tokenizer=args.tokenizer,
        no_tokenizer=args.no_tokenizer,
        max_seq_len=args.max_seq_len,
        revision=args.revision,
        bos_token=args.bos_token,
        eos_token=args.eos_token,
        pad_token=args.pad_token,
    )
    if args.json:
        print_json(report)
        return 0
    m = report["model"]
    print(
        f"imported {report['architecture']} as an lmkit {report['family']} ({report['params']:,} parameters: "
        f"{m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads, vocab {m['vocab_size']:,}, "
        f"context {m['max_seq_len']:,}) -> {report['checkpoint']}"
    )
    base = report.get("base_model") or {}
    if base.get("hub"):
        print(f"  from the hub: {base['name']} at commit {base['revision']}, license {base['license'] or 'not stated'}")
    if not report["tokenizer"]:
        print("  no tokenizer imported: lmkit commands that read text need one in the checkpoint", file=sys.stderr)
    return 0


def add_card(sub: Any) -> None:
    p = sub.add_parser(
        "card",
        help="write a checkpoint's model card (hub README with YAML front matter)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the model card of a checkpoint in the hub README format: YAML front matter (license, "
        "language, library_name, pipeline_tag, tags, datasets, metrics, model-index), then what the "
        "model is and which tasks its family suits, how it was trained (data and mix, curation, tokens, "
        "steps, FLOPs and PF-days, hardware, wall time, precision), its held-out evaluation (and "
        "quantization deltas), limitations and risks, and how to load it with lmkit and transformers. "
        "Every figure comes from the checkpoint; one it did not record is reported as 'not recorded'.\n\n"
        "examples:\n  lmkit card runs/small                      writes runs/small/ckpt-.../README.md\n"
        "  lmkit card runs/small --out - --license mit  print it\n"
        "  lmkit card runs/small --add-section ethics.md --overwrite",
    )
    add_checkpoint(p)
    add_out(p, "file to write (default CKPT/README.md; '-' prints to stdout)", file=True)
    add_overwrite(p, "a card lmkit wrote", "your own Markdown, nor a card edited since")
    add_card_flags(p)
    p.add_argument("--name", default=None, help="model name in the title (default: the run folder's name)")
    add_no_verify(p)
    p.set_defaults(func=_run_card)


def _run_card(args: argparse.Namespace) -> int:
    """``lmkit card CKPT [--out FILE|-] [--add-section FILE ...] [--license ID] [--language CODE ...]``."""
    from pathlib import Path

    from lmkit.models.checkpoint import resolve_checkpoint
    from lmkit.ship.card.render import parse_front_matter, render_card, write_card

    path = resolve_checkpoint(args.checkpoint)
    text = render_card(
        path, sections=args.add_section or [], license=args.license, language=args.language, name=args.name
    )
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else path / "README.md"
    write_card(text, out, overwrite=args.overwrite, sections=args.add_section or [])
    fm, _ = parse_front_matter(text)
    print(
        f"wrote {out} ({len(text.splitlines())} lines; pipeline_tag {fm.get('pipeline_tag')}, "
        f"license {fm.get('license')})"
    )
    return 0
