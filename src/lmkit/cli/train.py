"""The training commands: ``pretrain``, ``finetune-head`` and ``demo``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a runner.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.cli.common import add_no_verify


FINETUNE_DATA_FORMATS = """\
Labelled data: JSON lines, one example per line.
  sequence-classification (one label per text, e.g. sentiment):
    {"text": "a gripping, beautifully shot film", "label": "positive"}
  token-classification (one label per word, e.g. named entities in BIO tags):
    {"tokens": ["Ada", "Lovelace", "lives", "in", "London"], "labels": ["B-PER", "I-PER", "O", "O", "B-LOC"]}
  seq2seq (an output text per input text: summarisation, translation, QA):
    {"input": "question: who wrote it? context: Ada wrote the notes.", "target": "Ada"}
Labels may be strings or integers."""


def add_pretrain(sub: Any) -> None:
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
    add_no_verify(p)
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    from lmkit.train import loop as train

    return train.cli_pretrain(args)


def add_finetune_head(sub: Any) -> None:
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
    add_no_verify(p)
    p.set_defaults(func=_run_finetune_head)


def _run_finetune_head(args: argparse.Namespace) -> int:
    from lmkit.train import finetune

    return finetune.cli_finetune(args)


def add_demo(sub: Any) -> None:
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

