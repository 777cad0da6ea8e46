"""The ``lmkit`` command line: one entry point, each subcommand a thin call into one module.

Every subcommand has a ``_add_<name>(sub)`` function that declares its flags (with help that
teaches) and a runner that imports its module lazily, so ``lmkit --help`` is instant. Errors
about the user's input (``LmkitError``) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from lmkit.errors import LmkitError

DESCRIPTION = """\
lmkit: from raw text to a pre-trained transformer you understand, can measure and can ship.

The usual path:
  lmkit curate RAW... --out clean/          clean and deduplicate scraped text
  lmkit tokenizer train clean/ --out tok/   train a byte-level BPE tokenizer
  lmkit pretrain --config configs/cpu-small.yaml --data clean/ --tokenizer tok/ --out runs/x
  lmkit generate runs/x "Once upon a time"  complete a prompt
  lmkit demo                                all of it on a built-in corpus, in minutes
"""


def _overrides(extra: list[str]) -> dict[str, str]:
    """Turn ``--train.lr 3e-4 --model.d_model=128`` into {"train.lr": "3e-4", ...}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or "." not in tok:
            raise LmkitError(f"unexpected argument {tok!r} (config overrides look like --train.lr 3e-4)")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise LmkitError(f"override {tok} needs a value")
            value = extra[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def _add_no_verify(p: argparse.ArgumentParser) -> None:
    """``--no-verify`` for a command that loads checkpoints (main() switches the checks off for it)."""
    p.add_argument("--no-verify", action="store_true",
                   help="do not check the checkpoint's files against the SHA-256 checksums in its meta.json "
                        "(faster for large checkpoints; a changed or damaged file then loads silently)")


# --------------------------------------------------------------------------- subcommands


def _add_tokenizer(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer and inspect how it splits words")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a tokenizer on text files/folders",
                        description="Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) with the "
                                    "special tokens all three model families need: <pad>, <s>, </s>, <unk>, "
                                    "[MASK] and 100 sentinels <extra_id_0..99>. Writes DIR/tokenizer.json.")
    t.add_argument("data", nargs="+", help="text/jsonl/parquet files (optionally .gz/.zst) or folders")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default 8192)")
    t.add_argument("--out", required=True, help="output folder for tokenizer.json")
    t.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    t.add_argument("--min-frequency", type=int, default=2, help="ignore merges seen fewer times")
    t.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    t.add_argument("--lenient", action="store_true", help="skip unreadable files (reported) instead of stopping")
    t.add_argument("--overwrite", action="store_true", help="replace an existing tokenizer in --out")
    t.set_defaults(func=_run_tokenizer_train)
    s = tsub.add_parser("stats", help="fertility (tokens per word) and how chosen words are split",
                        description="Report a tokenizer's fertility (tokens per word) and bytes per token on "
                                    "a text sample, and how each word you list is split. With --compare, the "
                                    "same figures for a second tokenizer side by side (e.g. a domain tokenizer "
                                    "against a general one).")
    s.add_argument("tokenizer", help="tokenizer.json or a folder/checkpoint holding one")
    s.add_argument("--data", nargs="*", default=[], help="text to measure fertility on")
    s.add_argument("--words", nargs="*", default=[], help="words or phrases to show split, e.g. 'mens rea'")
    s.add_argument("--compare", default=None, help="a second tokenizer to compare against")
    s.add_argument("--text-field", default="text")
    s.add_argument("--max-docs", type=int, default=2000, help="documents sampled for fertility")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_run_tokenizer_stats)


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    from lmkit import tokenizer

    return tokenizer.cli_train(args)


def _run_tokenizer_stats(args: argparse.Namespace) -> int:
    from lmkit import tokenizer

    return tokenizer.cli_stats(args)


def _add_pretrain(sub: Any) -> None:
    p = sub.add_parser(
        "pretrain", help="pre-train a model (any family) on text, from a YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pre-train an encoder (masked LM), decoder (causal LM) or encoder-decoder (span "
                    "corruption) as model.family in the config says.\n\n"
                    "Raw text given by --data is tokenised and packed into shards on the first run (a tokenizer "
                    "is trained when --tokenizer is not given). Any config value can be overridden with a dotted "
                    "flag, e.g. --train.lr 1e-3 --model.n_layers 6 --train.precision bf16.\n"
                    "Stop conditions (the first reached ends the run): train.max_steps, train.max_tokens, "
                    "train.max_time (s), train.max_flops, train.tokens_per_param (20 = Chinchilla).\n"
                    "Under torchrun the same command trains on several GPUs/machines "
                    "(train.distributed: ddp | fsdp).\n\n"
                    "Resuming (--resume): the run in --out continues from its newest checkpoint with the settings, "
                    "data and tokenizer saved there (its resolved.yaml), so --config and --data are optional. "
                    "What is given again must equal the saved value, or the run is refused naming the key "
                    "(model.d_model). These may change: the stop conditions above, and the per-invocation "
                    "settings train.log_every, eval_every, eval_batches, ckpt_every, keep_checkpoints, "
                    "tensorboard, device and data.workers (and --quiet, --json, --no-verify). The data must be "
                    "what the run was trained on (checked: the tokenizer's sha256, the source files and their "
                    "sizes, the shards' token counts); --new-data continues on other data (data.* may then "
                    "change; it is packed with the run's tokenizer, and meta.json records the switch).\n\n"
                    "example:\n  lmkit pretrain --config configs/cpu-small.yaml --data corpus/ --out runs/small\n"
                    "  lmkit pretrain --out runs/small --resume --max-steps 5000\n"
                    "  torchrun --nproc_per_node 8 -m lmkit.cli pretrain --config configs/gpu-124m.yaml "
                    "--data shards/ --train.distributed fsdp")
    p.add_argument("--config", default=None,
                   help="run config YAML (sections model/train/data); see configs/ (optional with --resume)")
    p.add_argument("--data", nargs="+", default=None, help="training text (files, folders) or a packed shard folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder; default: train one on --data")
    p.add_argument("--out", default=None, help="run folder for checkpoints, metrics and plots (default runs/run)")
    p.add_argument("--max-steps", type=int, default=None, help="shortcut for --train.max_steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint, with its saved settings and data")
    p.add_argument("--new-data", action="store_true",
                   help="with --resume: continue on the data given now, although it is not what the run was trained on")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this checkpoint's weights and tokenizer (continued pre-training / domain "
                        "adaptation, e.g. of a model imported with `lmkit import-hf`); optimizer and step start fresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    _add_no_verify(p)
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from lmkit import train

    return train.cli_pretrain(args)


def _add_curate(sub: Any) -> None:
    p = sub.add_parser(
        "curate", help="clean, filter and deduplicate raw text into training documents, with a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Curate raw text (txt, jsonl, parquet, .gz/.zst, folders) into DIR as jsonl.gz shards of "
                    "{id, text, source} that `lmkit tokenizer train` and packing read directly.\n\n"
                    "Stages, in this order unless --config says otherwise (each can be switched off):\n"
                    "  normalise          Unicode NFC, control characters, whitespace, mojibake (ftfy)\n"
                    "  gopher_quality     word count/length, symbols, bullets, ellipses, letters, stop words\n"
                    "  c4                 lines without end punctuation, javascript/policy lines, lorem ipsum, {\n"
                    "  gopher_repetition  duplicate lines/paragraphs, top and duplicated n-grams\n"
                    "  blocklist          harmful words/phrases above a threshold (replace or extend the list)\n"
                    "  pii                e-mails, phone numbers, IP addresses -> <EMAIL>, <PHONE>, <IP_ADDRESS>\n"
                    "  exact_dedup        same text up to case and whitespace, across the whole corpus\n"
                    "  minhash            near-duplicates (MinHash + LSH), across the whole corpus\n\n"
                    "DIR/report.json and DIR/report.md give documents, characters and tokens in and out of every "
                    "stage, the reasons and a few examples of what each removed, and unreadable files/lines "
                    "(skipped and counted, with line numbers). The published thresholds are the defaults; a YAML "
                    "--config overrides any of them, e.g.\n"
                    "  gopher_quality: {min_words: 30}\n  c4: {enabled: false}\n"
                    "  blocklist: {extra: [casino bonus], max_fraction: 0.0}\n"
                    "  minhash: {bands: 20, num_perm: 120, threshold: 0.8}\n\n"
                    "example:\n  lmkit curate scraped/ books.jsonl.gz --out clean/ --workers 8")
    p.add_argument("inputs", nargs="+", metavar="RAW", help="files or folders of raw text")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--config", default=None, help="curate YAML: stage order, switches and thresholds")
    p.add_argument("--overwrite", action="store_true", help="replace a previous curate output in --out")
    p.add_argument("--workers", type=int, default=0, help="processes (default 0 = all cores; 1 = no subprocesses)")
    p.add_argument("--tokenizer", default=None,
                   help="count tokens with this tokenizer.json/folder (default: a regex word-token proxy)")
    p.add_argument("--text-field", default=None, help="JSONL/Parquet field holding the text (default text)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the stages on a Dask cluster: a scheduler address (tcp://host:8786) or 'local'")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    p.set_defaults(func=_run_curate)


def _run_curate(args: argparse.Namespace) -> int:
    from lmkit.data import curate

    return curate.cli_curate(args)


def _add_mix(sub: Any) -> None:
    p = sub.add_parser(
        "mix", help="build a training mix in token proportions from curated sources",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mix curated sources in token proportions (weights are normalised to sum to 1). A source "
                    "with too few tokens is up-sampled (documents repeated), one with too many is down-sampled "
                    "(a seeded random subset). Without --tokens the mix is the largest one that repeats nothing. "
                    "Writes jsonl.gz shards (source = the source's name) and report.json/report.md with the "
                    "realised proportions.\n\n"
                    "example (BloombergGPT-style):\n  lmkit mix clean/finance=51% clean/general=49% --out mix/ "
                    "--tokens 20M")
    p.add_argument("sources", nargs="+", metavar="SRC=WEIGHT", help="curated folder/file and its weight (0.51 or 51%%)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--tokens", default=None, help="total tokens of the mix, e.g. 20M (default: no repeats)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--tokenizer", default=None,
                   help="count tokens with this tokenizer.json/folder (default: a regex word-token proxy)")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text")
    p.add_argument("--overwrite", action="store_true", help="replace a previous mix in --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_mix)


def _run_mix(args: argparse.Namespace) -> int:
    from lmkit.data import mix

    return mix.cli_mix(args)


def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="memory, FLOPs, GPU-hours and Chinchilla-optimal size of a model or a compute budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plan a pre-training run before spending compute on it.\n\n"
                    "Give a model (--params 1B, or --config run.yaml / a checkpoint folder for exact figures), "
                    "tokens (--tokens 20B), and/or a budget (--flops, --pf-days, or --gpu-hours with --gpu). "
                    "Whatever is missing is derived: a budget alone gets the compute-optimal model by "
                    "Chinchilla's 20 tokens per parameter; a model alone gets 20 tokens per parameter (or its "
                    "run config's stop conditions).\n\n"
                    "Reported: parameters (embedding / non-embedding), FLOPs per token (6N + attention) and in "
                    "total, PF-days (1 PF-day = 8.64e19 FLOPs), device-hours on V100/A100/H100/H200 (and, with "
                    "--this-machine, on this machine's measured matmul peak) at a stated utilisation "
                    "(--utilisation); memory of the weights in fp32/fp16/bf16/int8, training memory by the course's "
                    "rule of thumb (≈ 24 bytes/parameter) and precisely per device (weights + gradients + Adam "
                    "states sharded by --sharding, activations of one micro-batch, the loss, the runtime), "
                    "inference memory with the KV cache; the Chinchilla-optimal size for the budget by the rule "
                    "and by the parametric fit L(N,D) = E + A/N^a + B/D^b (Hoffmann et al.'s unrounded "
                    "coefficients, or --fit epoch for Epoch AI's replication), with its predicted loss and the "
                    "optimal tokens for the model.\n"
                    "Config values can be overridden with dotted flags (--model.d_model 512).\n\n"
                    "examples:\n"
                    "  lmkit plan --params 1B                      weights, training memory, optimal tokens\n"
                    "  lmkit plan --flops 5.76e23                  Chinchilla's budget -> ~70B params, 1.4T tokens\n"
                    "  lmkit plan --gpu-hours 1000 --gpu H100      what 1,000 H100-hours buy\n"
                    "  lmkit plan --config configs/gpu-124m.yaml --gpus 8 --sharding fsdp --json\n"
                    "  lmkit plan --measure configs/cpu-small.yaml time a few real steps here, predict the run\n"
                    "  lmkit plan --known-models                   GPT-3, Chinchilla, LLaMA ... against the rule")
    p.add_argument("--params", default=None, help="model size: 7e9, 1.5B, 125M (instead of --config)")
    p.add_argument("--tokens", default=None, help="training tokens: 300B, 1.4T, 2e12")
    p.add_argument("--config", default=None,
                   help="run YAML with a model section (and train section), or a checkpoint folder / its config.json")
    p.add_argument("--flops", default=None, help="compute budget in FLOPs, e.g. 5.76e23")
    p.add_argument("--pf-days", default=None, help="compute budget in petaFLOP/s-days (1 PF-day = 8.64e19 FLOPs)")
    p.add_argument("--gpu-hours", default=None, help="compute budget in device-hours of --gpu at --utilisation")
    p.add_argument("--gpu", default="A100", help="accelerator for --gpu-hours: V100, A100, H100, H200, or 'here' "
                                                 "(this machine, measured) (default A100)")
    p.add_argument("--gpus", type=int, default=1, help="number of devices the run uses (memory is per device)")
    p.add_argument("--seq-len", type=int, default=None, help="training context length (default: the config's, or 2048)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="sequences per forward pass per device (default: the config's, or 1)")
    p.add_argument("--sharding", default="ddp", choices=["ddp", "zero1", "zero2", "zero3", "fsdp"],
                   help="what is split across devices: nothing (ddp), optimizer states (zero1), + gradients "
                        "(zero2), + weights (zero3 = fsdp) (default ddp)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="training precision (default: the config's; bf16 with --params)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="keep only each layer's input and recompute the rest in the backward pass")
    p.add_argument("--fit", default="chinchilla", choices=["chinchilla", "epoch"],
                   help="parametric loss fit: Hoffmann et al. 2022 or Epoch AI's 2024 replication")
    p.add_argument("--utilisation", type=float, default=0.4,
                   help="fraction of the peak FLOP/s a run achieves (MFU) for device-hours (default 0.4)")
    p.add_argument("--this-machine", action="store_true", help="also time the run on this machine's measured "
                                                               "matmul peak (measures for about a second)")
    p.add_argument("--known-models", action="store_true",
                   help="table of well-known models marked under-trained / about right / over-trained")
    p.add_argument("--measure", default=None, metavar="CONFIG",
                   help="run a few real training steps of this run config here and predict the full run's wall "
                        "time and memory from the measured throughput")
    p.add_argument("--measure-steps", type=int, default=6, help="steps timed by --measure (default 6)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    if args.measure:  # runs real training steps: lives beside the trainer, not in the pure maths
        from lmkit import calibrate

        return calibrate.cli_measure(args)
    from lmkit import plan

    return plan.cli(args)


def _add_numerics(sub: Any) -> None:
    p = sub.add_parser(
        "numerics", help="fp32, fp16, bf16 and int8: bits, range, precision, and what a number becomes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the four number formats a model is stored and run in: sign/exponent/fraction bits, "
                    "largest value, smallest normal value, machine epsilon, and what --value becomes in each "
                    "(with the step to the next representable number near it and its bit pattern). int8 is "
                    "symmetric absmax quantization: q = round(x * 127/absmax), x ~ q * absmax/127.\n\n"
                    "examples:\n  lmkit numerics                 pi in every format\n"
                    "  lmkit numerics --value 70000   beyond fp16's range (65,504)\n"
                    "  lmkit numerics --value 0.1 --absmax 4 --json")
    p.add_argument("--value", default="pi", help="the number to store: a float, or pi / e (default pi)")
    p.add_argument("--absmax", type=float, default=None,
                   help="int8 range: the tensor's max |x| that maps to 127 (default |value|)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_numerics)


def _run_numerics(args: argparse.Namespace) -> int:
    from lmkit import numerics

    return numerics.cli(args)


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint as a Hugging Face transformers folder (Auto classes load it)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a folder that transformers loads offline with its Auto classes:\n"
                    "  decoder -> LlamaForCausalLM (AutoModelForCausalLM)\n"
                    "  encoder -> BertForMaskedLM (learned positions) or RoFormerForMaskedLM (rotary positions), "
                    "both AutoModelForMaskedLM\n"
                    "  encdec  -> T5ForConditionalGeneration (AutoModelForSeq2SeqLM)\n"
                    "Files: config.json, model.safetensors (explicit weight-name maps), tokenizer.json + "
                    "tokenizer_config.json + special_tokens_map.json (AutoTokenizer; no special tokens are added "
                    "to text, as in lmkit), generation_config.json, README.md (the model card) and lmkit_meta.json "
                    "(the training record, so `lmkit import-hf` can bring it back).\n\n"
                    "After writing, the folder is loaded with transformers and compared with lmkit: logits within "
                    "1e-4 x max(1, max|logit|) and identical greedy tokens, or nothing is written (--no-verify "
                    "skips this). Not exportable: decoders with learned/sinusoidal positions, encoders with "
                    "sinusoidal positions or a rotary theta other than 10000; a quantized checkpoint needs "
                    "--dequantize (its int8/fp16 values become float32 weights) or export the one from before `lmkit quantize`.\n\n"
                    "example:\n  lmkit export runs/small --format hf --out hf/small --license apache-2.0")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("--format", default="hf", choices=["hf"], help="export format (hf: Hugging Face transformers)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-verify", action="store_true",
                   help="skip both checks: the checkpoint's files against the SHA-256 in its meta.json, and "
                        "loading the export in transformers to compare")
    p.add_argument("--dequantize", action="store_true",
                   help="export a quantized checkpoint's values as float32 weights (int8 q*scale, fp16/bf16 widened)")
    p.add_argument("--license", default=None, help="license id for the card's front matter, e.g. apache-2.0")
    p.add_argument("--language", nargs="+", default=None, help="language codes of the training data, e.g. en")
    p.add_argument("--add-section", nargs="+", default=None, metavar="FILE",
                   help="Markdown files appended to the model card")
    p.add_argument("--json", action="store_true", help="print the export report (files, parity figures) as JSON")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from lmkit import export_hf

    return export_hf.cli_export(args)


def _add_import_hf(sub: Any) -> None:
    p = sub.add_parser(
        "import-hf",
        help="import a Hugging Face transformers folder (Llama, BERT, RoFormer, T5) as an lmkit checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a transformers model saved on disk (config.json + model.safetensors, sharded "
                    "safetensors, or pytorch_model.bin read without pickles) into an lmkit checkpoint, to evaluate "
                    "it or continue pre-training it on domain data. Supported: LlamaForCausalLM, BertForMaskedLM, "
                    "RoFormerForMaskedLM and T5ForConditionalGeneration (v1.0, ReLU) whose config lmkit represents "
                    "exactly; anything else is refused with the setting that has no lmkit equivalent (grouped-query attention, "
                    "biases, rope scaling, gated MLPs, ...).\n\n"
                    "The folder's tokenizer.json is carried over when it is an lmkit tokenizer (special tokens "
                    "<pad> <s> </s> <unk> [MASK] <extra_id_0..99> at ids 0..104); otherwise pass --tokenizer with "
                    "one of the same vocabulary size, or --no-tokenizer. Weights become float32. meta.json records "
                    "the source folder and the sha256 of its weights; for an unchanged `lmkit export` folder the "
                    "original training record is kept.\n\n"
                    "example:\n  lmkit import-hf hf/small --out runs/small-back")
    p.add_argument("folder", help="the transformers folder (holding config.json and the weights)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--tokenizer", default=None, help="an lmkit tokenizer.json (or folder) to use instead of the folder's")
    p.add_argument("--no-tokenizer", action="store_true", help="import the weights without a tokenizer")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="context window of the lmkit model (default: the config's max_position_embeddings)")
    p.add_argument("--json", action="store_true", help="print the import report as JSON")
    p.set_defaults(func=_run_import_hf)


def _run_import_hf(args: argparse.Namespace) -> int:
    from lmkit import export_hf

    return export_hf.cli_import(args)


def _add_card(sub: Any) -> None:
    p = sub.add_parser(
        "card", help="write a checkpoint's model card (hub README with YAML front matter)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the model card of a checkpoint in the hub README format: YAML front matter (license, "
                    "language, library_name, pipeline_tag, tags, datasets, metrics, model-index), then what the "
                    "model is and which tasks its family suits, how it was trained (data and mix, curation, tokens, "
                    "steps, FLOPs and PF-days, hardware, wall time, precision), its held-out evaluation (and "
                    "quantization deltas), limitations and risks, and how to load it with lmkit and transformers. "
                    "Every figure comes from the checkpoint; one it did not record is reported as 'not recorded'.\n\n"
                    "examples:\n  lmkit card runs/small                      writes runs/small/ckpt-.../README.md\n"
                    "  lmkit card runs/small --out - --license mit  print it\n"
                    "  lmkit card runs/small --add-section ethics.md --overwrite")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("--out", default=None, help="file to write (default CKPT/README.md; '-' prints to stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing card file")
    p.add_argument("--add-section", nargs="+", default=None, metavar="FILE",
                   help="Markdown files appended as sections (a '## <file name>' heading is added if missing)")
    p.add_argument("--license", default=None, help="license id for the front matter (default: unknown)")
    p.add_argument("--language", nargs="+", default=None, help="language codes of the training data, e.g. en")
    p.add_argument("--name", default=None, help="model name in the title (default: the run folder's name)")
    _add_no_verify(p)
    p.set_defaults(func=_run_card)


def _run_card(args: argparse.Namespace) -> int:
    from lmkit import card

    return card.cli_card(args)


def _add_hub(sub: Any) -> None:
    p = sub.add_parser(
        "hub", help="publish, fetch and browse models in a hub (a folder or any fsspec URL)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A model hub in a folder or any fsspec URL (s3://, gs:// with s3fs/gcsfs installed; "
                    "memory:// for tests). Where: --hub URL, else $LMKIT_HUB, else $XDG_CACHE_HOME/lmkit/hub "
                    "(~/.cache/lmkit/hub).\n\n"
                    "Names are 'model' or 'namespace/model' (ASCII letters, digits, . _ -). Each push makes a new "
                    "revision (1, 2, ...); NAME@3 is revision 3, NAME the latest. Every file is stored under its "
                    "sha256 and verified on pull.\n\n"
                    "examples:\n  lmkit hub push runs/small alice/small-decoder -m 'first run'\n"
                    "  lmkit hub list\n  lmkit hub search family:decoder size<10M legal\n"
                    "  lmkit hub show alice/small-decoder\n  lmkit hub pull alice/small-decoder@1 --out models/small")
    p.add_argument("--hub", dest="hub_top", default=None, metavar="URL",
                   help="hub folder or fsspec URL (also accepted after the action)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", default=None, help="hub folder or fsspec URL (default $LMKIT_HUB or ~/.cache/lmkit/hub)")
    common.add_argument("--json", action="store_true", help="print JSON")
    hsub = p.add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    push = hsub.add_parser("push", parents=[common], help="publish a checkpoint as a new revision of NAME")
    push.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint)")
    push.add_argument("name", help="model or namespace/model")
    push.add_argument("-m", "--message", default=None, help="a note stored with the revision")
    push.add_argument("--card", default=None, help="model card file to publish (default CKPT/README.md or a fresh one)")
    _add_no_verify(push)
    push.add_argument("--include-train-state", action="store_true",
                      help="also publish train_state/ (optimizer state, needed only to resume that exact run)")
    pull = hsub.add_parser("pull", parents=[common], help="fetch NAME[@REV] into a folder, verifying checksums")
    pull.add_argument("spec", metavar="NAME[@REV]", help="model name, optionally @revision (default latest)")
    pull.add_argument("--out", required=True, help="folder to write (new or empty unless --overwrite)")
    pull.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    hsub.add_parser("list", parents=[common], help="every model: latest revision, family, task, size, loss")
    search = hsub.add_parser("search", parents=[common], help="find models by name, family, task, size, card text",
                             description="Every term must match. family:decoder, task:fill-mask, size<10M, "
                                         "params>=1M filter; other words are looked for in the name, family, "
                                         "task, architecture and model card.")
    search.add_argument("query", nargs="*", help="terms, e.g. family:encoder size<5M legal")
    search.add_argument("--family", default=None, choices=["encoder", "decoder", "encdec"])
    search.add_argument("--task", default=None, choices=["text-generation", "fill-mask", "text2text-generation"])
    search.add_argument("--min-params", default=None, help="smallest size, e.g. 1M")
    search.add_argument("--max-params", default=None, help="largest size, e.g. 100M")
    show = hsub.add_parser("show", parents=[common], help="print a model's card (--json: its manifest)")
    show.add_argument("spec", metavar="NAME[@REV]", help="model name, optionally @revision")
    p.set_defaults(func=_run_hub)


def _run_hub(args: argparse.Namespace) -> int:
    from lmkit import hub

    return hub.cli_hub(args)


def _add_generate(sub: Any) -> None:
    p = sub.add_parser(
        "generate", help="complete a prompt with a trained checkpoint (greedy or sampled), optionally explained",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print PROMPT followed by the text the model adds to it. On a terminal the prompt is dimmed,\n"
                    "the completion bold, and the completion appears as it is generated.\n\n"
                    "How the next token is picked:\n"
                    "  greedy (default)   always the most likely token: the same prompt always gives the same\n"
                    "                     text (which tends to repeat itself)\n"
                    "  --sample           draw the token at random from the model's probabilities, after:\n"
                    "    --temperature T  divide the logits by T: T < 1 sharpens the distribution (safer;\n"
                    "                     T = 0 is greedy), T > 1 flattens it (more surprising)\n"
                    "    --top-k K        only the K most likely tokens can be drawn\n"
                    "    --top-p P        only the smallest set of most likely tokens whose probabilities add\n"
                    "                     up to P (the \"nucleus\"; the top token is always in it)\n"
                    "    --seed S         the same seed gives the same text\n"
                    "  --explain          print for every step the top candidates with their probabilities\n"
                    "                     before and after temperature/top-k/top-p, and which one was chosen\n\n"
                    "The model reads the prompt once (filling its key/value cache), then adds one token per\n"
                    "step. It stops at the end-of-sequence token, after --max-new-tokens, or when the context\n"
                    "window is full. An encoder-decoder checkpoint encodes the prompt (which may hold sentinels\n"
                    "such as <extra_id_0>) and writes its output from a start token. Encoders do not generate\n"
                    "text (use `lmkit fill-mask`).\n\n"
                    "examples:\n"
                    "  lmkit generate runs/x \"Once upon a time\"\n"
                    "  lmkit generate runs/x \"Once upon a time\" --sample --temperature 0.8 --top-p 0.9 --seed 1\n"
                    "  lmkit generate runs/x \"The cat\" --max-new-tokens 5 --explain")
    p.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint is used)")
    p.add_argument("prompt", help="text to complete (\"\" starts from the beginning-of-sequence token)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to add (default 64)")
    p.add_argument("--sample", action="store_true", help="sample the next token instead of taking the most likely")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="with --sample: divide logits by T (default 1; <1 sharper, >1 flatter, 0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="with --sample: draw only from the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="with --sample: draw only from the most likely tokens that together have probability P")
    p.add_argument("--seed", type=int, default=None, help="random seed of --sample (printed when not given)")
    p.add_argument("--explain", action="store_true",
                   help="show each step's top candidates, probabilities before/after the settings, and the choice")
    p.add_argument("--truncate", choices=["error", "left"], default="error",
                   help="a prompt too long for the context window: refuse it (error, default) or keep its end (left)")
    p.add_argument("--no-stop-at-eos", action="store_true",
                   help="keep going after the end-of-sequence token (until --max-new-tokens or the window)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps... (default auto: cuda if available)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: prompt, completion, text, tokens, stop_reason, tokens_per_s, settings")
    _add_no_verify(p)
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from lmkit import generate

    return generate.cli_generate(args)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline on a built-in corpus, in minutes on a CPU",
        description="Gather real English text already on this machine (license texts, Debian copyright files, "
                    "Python's docstrings, fortunes if installed), curate it, train a tokenizer, plan, pre-train a "
                    "small decoder, evaluate, generate, quantize to int8, write the model card and publish to a "
                    "local hub. Prints where every artefact went.")
    p.add_argument("--out", default="runs/demo", help="output folder (a new -2, -3... sibling if it exists)")
    p.add_argument("--data", nargs="+", default=None, help="use your own text instead of the built-in corpus")
    p.add_argument("--minutes", type=float, default=3.0, help="rough total time budget (training gets ~60%%)")
    p.add_argument("--quick", action="store_true", help="a tiny corpus and model: the chain in well under a minute")
    p.add_argument("--prompt", default=None, help="prompt for the sample completions")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from lmkit import demo

    return demo.cli_demo(args)


def _add_quantize(sub: Any) -> None:
    p = sub.add_parser(
        "quantize", help="store a checkpoint in fp16, bf16 or int8, and report size and quality change",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a smaller copy of a checkpoint.\n\n"
                    "  --to fp16|bf16  cast every weight to 16 bits (half the size)\n"
                    "  --to int8       symmetric absmax int8 per output channel, with an fp32 scale per row "
                    "(w ~ q * scale): about a quarter of fp32; weights stay int8 in memory and are "
                    "dequantised on the fly\n\n"
                    "The result is an ordinary checkpoint folder: lmkit generate / evaluate load it directly. "
                    "The report compares size on disk and in memory, and held-out loss / perplexity / bits per "
                    "byte before and after (on --data, or the run's own validation shards when they are found).\n\n"
                    "example:\n  lmkit quantize runs/small --to int8 --out runs/small-int8")
    p.add_argument("checkpoint", help="checkpoint folder (or a run folder: its newest checkpoint)")
    p.add_argument("--to", required=True, choices=["fp16", "bf16", "int8"], help="target format")
    p.add_argument("--out", required=True, help="folder for the quantized checkpoint")
    _add_held_out_flags(p, "--eval-batches", "held-out data for the quality check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in --out")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    _add_no_verify(p)
    p.set_defaults(func=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    from lmkit import quantize

    return quantize.cli(args)


def _add_held_out_flags(p: argparse.ArgumentParser, batches_flag: str, data_what: str) -> None:
    """The held-out data flags that `quantize` and `evaluate` share (lmkit.evaluate.held_out reads them)."""
    p.add_argument("--data", default=None, help=f"{data_what}: a packed shard folder (its val split) or text files")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text (with --data)")
    p.add_argument(batches_flag, type=int, default=8, help="held-out batches evaluated (default 8)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per held-out batch (default 8)")


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="held-out loss, perplexity and bits per byte of a checkpoint (quantized or not)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a checkpoint on held-out data: mean loss in nats per scored token, perplexity "
                    "(exp of the loss) and bits per byte (independent of the tokenizer). Checkpoints written by "
                    "`lmkit quantize` load directly (int8 weights stay int8).\n\n"
                    "Held-out data: --data (a packed shard folder, one split of it, or text files), else the "
                    "run's own validation shards when they are still where its config says.\n\n"
                    "examples:\n  lmkit evaluate runs/small\n  lmkit evaluate runs/small-int8 --data corpus/val.jsonl")
    p.add_argument("checkpoint", help="checkpoint folder (or a run folder: its newest checkpoint)")
    _add_held_out_flags(p, "--batches", "held-out data")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_no_verify(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from lmkit import evaluate

    return evaluate.cli_evaluate(args)


def _add_fill_mask(sub: Any) -> None:
    p = sub.add_parser(
        "fill-mask", help="predict the words hidden behind [MASK] with an encoder checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the most likely tokens, with probabilities, for every [MASK] in TEXT. An encoder\n"
                    "(masked LM) reads the whole text, left and right of each mask; several masks are predicted\n"
                    "at once, each independently. The last line is the text with every mask filled by its top\n"
                    "candidate. Write the mask where a whole word goes, with its usual spaces around it.\n\n"
                    "Decoders continue text instead (`lmkit generate`); an encoder-decoder fills a blank by span\n"
                    "infilling: `lmkit generate CKPT \"The <extra_id_0> of the contract\"`.\n\n"
                    "examples:\n"
                    "  lmkit fill-mask runs/enc \"The [MASK] of the contract\"\n"
                    "  lmkit fill-mask runs/enc \"the [MASK] sees the [MASK] .\" --top-k 3 --json")
    p.add_argument("checkpoint", help="encoder checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("text", help="text with one or more [MASK]")
    p.add_argument("--top-k", type=int, default=5, help="candidates shown per mask (default 5)")
    p.add_argument("--mask-token", default="[MASK]", help="the placeholder written in TEXT (default [MASK])")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps... (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object: candidates per mask, filled text")
    _add_no_verify(p)
    p.set_defaults(func=_run_fill_mask)


def _run_fill_mask(args: argparse.Namespace) -> int:
    from lmkit import fillmask

    return fillmask.cli_fill_mask(args)


FINETUNE_DATA_FORMATS = """\
Labelled data: JSON lines, one example per line.
  sequence-classification (one label per text, e.g. sentiment):
    {"text": "a gripping, beautifully shot film", "label": "positive"}
  token-classification (one label per word, e.g. named entities in BIO tags):
    {"tokens": ["Ada", "Lovelace", "lives", "in", "London"], "labels": ["B-PER", "I-PER", "O", "O", "B-LOC"]}
  seq2seq (an output text per input text: summarisation, translation, QA):
    {"input": "question: who wrote it? context: Ada wrote the notes.", "target": "Ada"}
Labels may be strings or integers."""


def _add_finetune_head(sub: Any) -> None:
    p = sub.add_parser(
        "finetune-head", help="adapt a pre-trained encoder (classification head) or encoder-decoder to a labelled task",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a pre-trained checkpoint on labelled examples and report held-out scores.\n\n"
                    "Tasks:\n"
                    "  sequence-classification  an encoder + a new linear head on the mean of its token states:\n"
                    "                           one label per text (sentiment, topic). Reports accuracy, macro-F1\n"
                    "                           and per-label precision/recall/F1 against the majority baseline.\n"
                    "  token-classification     an encoder + a new linear head on every token: one label per word\n"
                    "                           (named entities), scored on each word's first token. Reports word\n"
                    "                           accuracy and, for BIO tags (B-PER, I-PER, O), entity-level F1.\n"
                    "  seq2seq                  an encoder-decoder trained on input -> target pairs (summarisation,\n"
                    "                           translation, QA). Reports held-out loss, exact match and word F1\n"
                    "                           of greedy generations.\n\n"
                    + FINETUNE_DATA_FORMATS + "\n\n"
                    "Held-out data: --eval FILE, or a seeded random --val-fraction of --data (default 20%).\n"
                    "--out DIR saves a checkpoint: the fine-tuned model (still usable by fill-mask / generate)\n"
                    "and, for classifiers, head.safetensors with the label names in config.json.\n\n"
                    "examples:\n"
                    "  lmkit finetune-head runs/enc --task sequence-classification --data reviews.jsonl --out runs/sentiment\n"
                    "  lmkit finetune-head runs/enc --task token-classification --data ner.jsonl --epochs 5\n"
                    "  lmkit finetune-head runs/t5 --task seq2seq --data pairs.jsonl --lr 1e-3")
    p.add_argument("checkpoint", help="pre-trained checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("--task", required=True, choices=["sequence-classification", "token-classification", "seq2seq"],
                   help="what to learn (see above)")
    p.add_argument("--data", required=True, help="labelled JSONL file (formats above)")
    p.add_argument("--eval", default=None, help="separate held-out JSONL file (default: split --data)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of --data held out (default 0.2)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training examples (default 3)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the pre-trained weights (default 1e-4)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the new head (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the head only, keeping the pre-trained weights fixed (a linear probe)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the shuffling and the head (default 0)")
    p.add_argument("--out", default=None, help="save the fine-tuned checkpoint here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps... (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_no_verify(p)
    p.set_defaults(func=_run_finetune_head)


def _run_finetune_head(args: argparse.Namespace) -> int:
    from lmkit import finetune

    return finetune.cli_finetune(args)


def _add_viz(sub: Any) -> None:
    p = sub.add_parser("viz", help="draw attention maps and token-embedding projections of a checkpoint")
    vsub = p.add_subparsers(dest="viz_command", required=True, metavar="WHAT")
    a = vsub.add_parser(
        "attention", help="token x token attention heat maps, per layer and head, to PNG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run TEXT through the model once and draw each layer's self-attention: one heat map per\n"
                    "layer (rows) and head (columns); row i of a map is how token i spreads its attention over\n"
                    "the tokens. Decoders only look back (the upper triangle stays dark); encoders, and the\n"
                    "encoder of an encoder-decoder, look both ways. Also prints, per head, the average attention\n"
                    "on the token itself, the previous, the next and the first token, and the entropy.\n\n"
                    "example:\n  lmkit viz attention runs/enc \"the cat sees the bird .\" --out maps.png")
    a.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint)")
    a.add_argument("text", help="the text to look at (short: every token becomes a row and a column)")
    a.add_argument("--out", required=True, help="PNG file to write")
    a.add_argument("--layers", default=None, help="only these layers, e.g. 0,2 (default all)")
    a.add_argument("--heads", default=None, help="only these heads, e.g. 0,1 (default all)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a.add_argument("--device", default="auto", help="cpu, cuda, mps... (default auto)")
    a.add_argument("--weights", action="store_true", help="with --json: include the full weight tensors")
    a.add_argument("--json", action="store_true", help="print tokens and per-head figures as JSON")
    _add_no_verify(a)
    a.set_defaults(func=_run_viz_attention)
    e = vsub.add_parser(
        "embeddings", help="project chosen words' token embeddings to 2-D/3-D (PCA) and compare their angles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Look up each word's input embedding (a word split into several tokens is the mean of its\n"
                    "token vectors), project them onto their first 2 or 3 principal components (PCA) and draw\n"
                    "them, and print the cosine similarity and the angle between every pair: words the model\n"
                    "uses alike point in similar directions (cosine near 1, small angle).\n\n"
                    "example:\n  lmkit viz embeddings runs/enc --words cat dog bird river house --out emb.png --dims 3")
    e.add_argument("checkpoint", help="checkpoint folder, or a run folder (its newest checkpoint)")
    e.add_argument("--words", nargs="+", required=True, help="two or more words to compare")
    e.add_argument("--out", required=True, help="PNG file to write")
    e.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2-D or 3-D projection (default 2)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.add_argument("--device", default="auto", help="cpu, cuda, mps... (default auto)")
    e.add_argument("--json", action="store_true", help="print coordinates, cosines and angles as JSON")
    _add_no_verify(e)
    e.set_defaults(func=_run_viz_embeddings)


def _run_viz_attention(args: argparse.Namespace) -> int:
    from lmkit import viz

    return viz.cli_attention(args)


def _run_viz_embeddings(args: argparse.Namespace) -> int:
    from lmkit import viz

    return viz.cli_embeddings(args)


def _add_families(sub: Any) -> None:
    from lmkit.families import HOW_TO_CHOOSE, table

    p = sub.add_parser(
        "families", help="the three model families: objective, context, tasks, well-known models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Which transformer family to pre-train (model.family in the config):\n\n"
                    + table(96) + "\n\n" + HOW_TO_CHOOSE)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=_run_families)


def _run_families(args: argparse.Namespace) -> int:
    from lmkit import families

    return families.cli_families(args)


# --------------------------------------------------------------------------- parser and main

ADDERS: tuple[Callable[[Any], None], ...] = (
    _add_curate,
    _add_mix,
    _add_tokenizer,
    _add_pretrain,
    _add_generate,
    _add_demo,
    _add_plan,
    _add_numerics,
    _add_quantize,
    _add_evaluate,
    _add_export,
    _add_import_hf,
    _add_card,
    _add_hub,
    _add_fill_mask,
    _add_finetune_head,
    _add_viz,
    _add_families,
)
# Subcommands whose unknown ``--a.b value`` arguments are config overrides.
TAKES_OVERRIDES = {"pretrain", "plan"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmkit", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from lmkit import __version__

    parser.add_argument("--version", action="version", version=f"lmkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra:
            if args.command not in TAKES_OVERRIDES:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = _overrides(extra)
        elif args.command in TAKES_OVERRIDES:
            args.overrides = {}
        if getattr(args, "no_verify", False):  # --no-verify: the checkpoint loaders skip their checksums
            from lmkit.checkpoint import checksums_unverified

            with checksums_unverified():
                rc = int(args.func(args) or 0)
        else:
            rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handlers below
        return rc
    except LmkitError as e:
        print(f"lmkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`lmkit plan ... | head`): stop quietly, as a shell tool does, and
        # point stdout at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
