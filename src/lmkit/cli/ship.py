"""The shipping commands: ``quantize``, ``export``, ``import-hf``, ``card`` and ``hub``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a
``_run_<name>(args)`` runner that calls the domain modules (``lmkit.ship.quantize``,
``export_hf``, ``import_hf``, ``card``, ``hub``) and prints their report as text or JSON. They load
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
from lmkit.families import PIPELINE_TAG


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
        help="export a checkpoint as a Hugging Face transformers folder (Auto classes load it)",
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
        "with RMSNorm, sinusoidal positions), encoders with "
        "sinusoidal positions or a rotary theta other than 10000; a quantized checkpoint needs "
        "--dequantize (its int8/fp16 values become float32 weights) or export the one from before `lmkit quantize`.\n\n"
        "example:\n  lmkit export runs/small --format hf --out hf/small --license apache-2.0",
    )
    add_checkpoint(p)
    p.add_argument("--format", default="hf", choices=["hf"], help="export format (hf: Hugging Face transformers)")
    add_out(p, "output folder (must be new or empty unless --overwrite)", required=True)
    add_overwrite(p, "a previous export in --out")
    add_no_verify(p, also="loading the export in transformers to compare")
    p.add_argument(
        "--dequantize",
        action="store_true",
        help="export a quantized checkpoint's values as float32 weights (int8 q*scale, fp16/bf16 widened)",
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
    """``lmkit export CKPT --format hf --out DIR [--overwrite] [--no-verify]``."""
    from lmkit.ship.export_hf import export_hf

    if args.format != "hf":
        raise LmkitError(f"--format {args.format!r} is not supported (only hf)")
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


def add_hub(sub: Any) -> None:
    p = sub.add_parser(
        "hub",
        help="publish, fetch and browse models in a hub (a folder or any fsspec URL)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A model hub in a folder or any fsspec URL (s3://, gs:// with s3fs/gcsfs installed; "
        "memory:// for tests). Where: --hub URL, else $LMKIT_HUB, else $XDG_CACHE_HOME/lmkit/hub "
        "(~/.cache/lmkit/hub).\n\n"
        "Names are 'model' or 'namespace/model' (ASCII letters, digits, . _ -). Each push makes a new "
        "revision (1, 2, ...); NAME@3 is revision 3, NAME the latest. Every file is stored under its "
        "sha256 and verified on pull.\n\n"
        "examples:\n  lmkit hub push runs/small alice/small-decoder -m 'first run'\n"
        "  lmkit hub list\n  lmkit hub search family:decoder size<10M legal\n"
        "  lmkit hub show alice/small-decoder\n  lmkit hub pull alice/small-decoder@1 --out models/small",
    )
    p.add_argument(
        "--hub",
        dest="hub_top",
        default=None,
        metavar="URL",
        help="hub folder or fsspec URL (also accepted after the action)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--hub", default=None, help="hub folder or fsspec URL (default $LMKIT_HUB or ~/.cache/lmkit/hub)"
    )
    add_json(common, "JSON")
    hsub = p.add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    push = hsub.add_parser("push", parents=[common], help="publish a checkpoint as a new revision of NAME")
    add_checkpoint(push)
    push.add_argument("name", help="model or namespace/model")
    push.add_argument("-m", "--message", default=None, help="a note stored with the revision")
    push.add_argument("--card", default=None, help="model card file to publish (default CKPT/README.md or a fresh one)")
    add_no_verify(push)
    push.add_argument(
        "--include-train-state",
        action="store_true",
        help="also publish train_state/ (optimizer state, needed only to resume that exact run)",
    )
    pull = hsub.add_parser("pull", parents=[common], help="fetch NAME[@REV] into a folder, verifying checksums")
    pull.add_argument("spec", metavar="NAME[@REV]", help="model name, optionally @revision (default latest)")
    add_out(pull, "folder to write (new or empty unless --overwrite)", required=True)
    add_overwrite(pull, "a previous pull in --out")
    hsub.add_parser("list", parents=[common], help="every model: latest revision, family, task, size, loss")
    search = hsub.add_parser(
        "search",
        parents=[common],
        help="find models by name, family, task, size, card text",
        description="Every term must match. family:decoder, task:fill-mask, size<10M, "
        "params>=1M filter; other words are looked for in the name, family, "
        "task, architecture and model card.",
    )
    search.add_argument("query", nargs="*", help="terms, e.g. family:encoder size<5M legal")
    search.add_argument("--family", default=None, choices=["encoder", "decoder", "encdec"])
    search.add_argument("--task", default=None, choices=list(PIPELINE_TAG.values()))
    search.add_argument("--min-params", default=None, help="smallest size, e.g. 1M")
    search.add_argument("--max-params", default=None, help="largest size, e.g. 100M")
    show = hsub.add_parser("show", parents=[common], help="print a model's card (--json: its manifest)")
    show.add_argument("spec", metavar="NAME[@REV]", help="model name, optionally @revision")
    p.set_defaults(func=_run_hub)


def _run_hub(args: argparse.Namespace) -> int:
    """``lmkit hub push|pull|list|search|show``."""
    from lmkit.ship.hub import Hub, parse_spec
    from lmkit.ship.hub_search import search

    hub = Hub(args.hub or getattr(args, "hub_top", None))
    action = args.hub_command
    if action == "push":
        m = hub.push(
            args.checkpoint,
            args.name,
            message=args.message,
            include_train_state=args.include_train_state,
            card=args.card,
            show_progress=sys.stderr.isatty(),
        )
        if args.json:
            print_json(m)
        else:
            print(
                f"pushed {m['name']}@{m['revision']} to {hub.url}: {len(m['files'])} files, "
                f"{m['size'] / 1e6:.2f} MB ({m['uploaded_blobs']} uploaded, "
                f"{len(m['files']) - m['uploaded_blobs']} already in the hub)"
            )
            print(
                f"  pull it: lmkit hub pull {m['name']}@{m['revision']} --out DIR"
                + (f" --hub {hub.url}" if args.hub else "")
            )
        return 0
    if action == "pull":
        m = hub.pull(args.spec, args.out, overwrite=args.overwrite, show_progress=sys.stderr.isatty())
        if args.json:
            print_json(m)
        else:
            print(
                f"pulled {m['name']}@{m['revision']} into {args.out}: {len(m['files'])} files, "
                f"{m['size'] / 1e6:.2f} MB, every sha256 verified"
            )
        return 0
    if action == "show":
        name, rev = parse_spec(args.spec)
        if args.json:
            print_json(hub.manifest(name, rev))
        else:
            sys.stdout.write(hub.card(args.spec))
        return 0
    if action == "list":
        found = hub.entries()
    else:
        found = search(
            hub,
            " ".join(args.query),
            family=args.family,
            task=args.task,
            min_params=_count(args.min_params),
            max_params=_count(args.max_params),
        )
    if args.json:
        print_json(found)
    elif not found:
        print(f"no models in hub {hub.url}" if action == "list" else f"nothing in hub {hub.url} matches")
    else:
        print(_hub_table([_hub_row(m) for m in found]))
    return 0


def _hub_row(m: dict[str, Any]) -> list[str]:
    from lmkit.ship.card.figures import si

    info = m.get("info") or {}
    loss = info.get("eval_loss")
    return [
        m["name"],
        f"{m['revision']}" + (f"/{m['revisions']}" if "revisions" in m else ""),
        str(info.get("family", "?")),
        str(info.get("task", "?")),
        si(info["params"]) if isinstance(info.get("params"), (int, float)) else "?",
        si(info["tokens"]) if isinstance(info.get("tokens"), (int, float)) else "-",
        f"{loss:.3f}" if isinstance(loss, (int, float)) else "-",
        str(m.get("created", ""))[:10],
    ]


def _hub_table(rows: list[list[str]]) -> str:
    head = ["NAME", "REV", "FAMILY", "TASK", "PARAMS", "TOKENS", "LOSS", "PUSHED"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def _count(text: str | None) -> float | None:
    if text is None:
        return None
    from lmkit.plan import parse_count

    return parse_count(text, "size")
