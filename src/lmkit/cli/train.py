"""The training commands: ``pretrain``, ``finetune-head`` and ``demo``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a
runner that calls the library (:mod:`lmkit.train.loop`, :mod:`lmkit.train.budget`,
:mod:`lmkit.train.finetune`, :mod:`lmkit.demo`) and prints the result; the library (and torch) is
imported inside the runners so that ``lmkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmkit.cli.common import (
    add_checkpoint,
    add_device,
    add_json,
    add_no_verify,
    add_out,
    add_overwrite,
    add_quiet,
    add_run_config,
    add_scaling_law,
    add_seed,
    add_training_text,
    add_yes,
    device_from,
    print_json,
)

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
        "pretrain",
        help="pre-train a model (any family) on text, from a YAML config",
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
        "tensorboard, device, memory and data.workers (and --quiet, --json, --no-verify). The data must be "
        "what the run was trained on (checked: the tokenizer's sha256, the source files and their "
        "sizes, the shards' token counts); --new-data continues on other data (data.* may then "
        "change; it is packed with the run's tokenizer, and meta.json records the switch).\n\n"
        "Scale-out: under torchrun each checkpoint is sharded (torch.distributed.checkpoint: each "
        "process writes its own slices) and resumes on any number of processes with the same global "
        "batch (train.batch_size; the accumulation is recomputed, train.micro_batch_size may change) "
        "and the same batches; another global batch needs --new-batch. --resume auto under "
        "torchrun --max-restarts N restarts a failed run from its newest complete checkpoint.\n\n"
        "A recipe is a YAML file or the name of one lmkit ships: tiny (seconds), cpu-small (minutes "
        "on a laptop CPU), gpu-124m (GPT-2 small, a GPU), and -encoder / -encdec variants.\n\n"
        "examples:\n"
        "  lmkit pretrain --config tiny --data corpus/ --out runs/small       seconds on a CPU\n"
        "  lmkit pretrain --config tiny --data corpus/ --out runs/auto --model auto --train.max_time 10\n"
        "                                             the best model this machine trains in 10 s\n"
        "  lmkit pretrain --out runs/small --resume --max-steps 80           continue it to 80 steps\n"
        "  torchrun --nproc_per_node 4 --max-restarts 2 -m lmkit.cli pretrain --config tiny --data corpus/ "
        "--out runs/big --train.distributed fsdp --resume auto\n"
        "  torchrun --nproc_per_node 8 -m lmkit.cli pretrain --config configs/gpu-124m.yaml "
        "--data shards/ --train.distributed fsdp",
    )
    add_run_config(p, "run config", note="; optional with --resume")
    add_training_text(p)
    add_out(p, "run folder for checkpoints, metrics and plots (default runs/run)")
    p.add_argument("--max-steps", type=int, default=None, help="shortcut for --train.max_steps")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="auto",
        help="continue the run in --out from its newest complete checkpoint, with its saved settings and "
        "data; --resume auto: resume when --out holds a checkpoint, else start the run (a command that "
        "torchrun --max-restarts can rerun after a failure as it is)",
    )
    p.add_argument(
        "--new-data",
        action="store_true",
        help="with --resume: continue on the data this command gives, although it is not what the run was trained on",
    )
    p.add_argument(
        "--new-batch",
        action="store_true",
        help="with --resume: continue with another global batch (train.batch_size) than the run was trained with",
    )
    p.add_argument(
        "--collective-timeout",
        type=float,
        default=None,
        metavar="S",
        help="under torchrun: a collective that waits S seconds for the other processes (one hung) fails "
        "in one line naming the rank, instead of hanging (default 600)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start from this checkpoint's weights and tokenizer (continued pre-training / domain "
        "adaptation, e.g. of a model imported with `lmkit import-hf`); optimizer and step start fresh. "
        "The model is the checkpoint's: a --model.* flag that would change its shape is refused "
        "(--model.dropout applies), and so is a --tokenizer that is not the checkpoint's own",
    )
    p.add_argument(
        "--model",
        choices=["auto"],
        default=None,
        help="auto: a time budget chooses the model. Needs --train.max_time S (the whole budget, "
        "measuring and packing included): this machine's throughput is measured for shapes grown "
        "from the config by width and depth, the one with the lowest loss a scaling law predicts "
        "for the tokens it can see in the time left is trained, its schedule ending at the "
        "deadline (budget.json in --out says what was measured and why)",
    )
    add_scaling_law(p, "with --model auto, choose the model by", "Chinchilla's")
    add_yes(p, "a --model auto run", "its --train.max_time")
    add_quiet(p)
    add_json(p, "the run summary as JSON")
    add_no_verify(p)
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    """``lmkit pretrain``: build the run config from flags (or the run folder with --resume), train, print."""
    import os
    import sys
    from pathlib import Path

    import torch.distributed as dist  # lazy: torch is heavy and `lmkit --help` stays instant

    from lmkit.config import RunConfig, load_run_config
    from lmkit.errors import LmkitError
    from lmkit.train.distributed import collective_failure, init_distributed
    from lmkit.train.loop import train
    from lmkit.train.stopping import TrainingInterrupted

    overrides = dict(args.overrides)
    if args.data:
        overrides["data.paths"] = list(args.data)
    if args.tokenizer:
        overrides["data.tokenizer"] = args.tokenizer
    if args.out:
        overrides["out"] = args.out
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    if getattr(args, "init", None):
        overrides["train.init"] = args.init
    new_data, new_batch = bool(getattr(args, "new_data", False)), bool(getattr(args, "new_batch", False))
    if args.resume not in (None, "last", "auto"):
        raise LmkitError(f"--resume takes no value, or auto (resume if --out holds a run), not {args.resume!r}")
    if args.collective_timeout is not None and not args.collective_timeout > 0:
        raise LmkitError(f"--collective-timeout must be a positive number of seconds, not {args.collective_timeout}")
    init_distributed(args.collective_timeout)  # under torchrun: joined here, with the timeout
    if args.resume:
        from lmkit.config_io import load_yaml
        from lmkit.models.checkpoint import list_checkpoints

        out = Path(str(args.out or (load_yaml(args.config).get("out") if args.config else None) or RunConfig().out))
        if args.resume == "auto" and not (out.is_dir() and list_checkpoints(out)):
            args.resume = None  # nothing to resume yet: start the run
    if args.resume:  # the run folder's saved settings, data and tokenizer; what is given again must agree
        from lmkit.train.resume import resume_config

        cfg = resume_config(out, args.config, overrides, new_data=new_data)
    elif new_data or new_batch:
        raise LmkitError(
            f"--new-{'data' if new_data else 'batch'} only applies with --resume (a new run trains as it is given)"
        )
    else:
        from lmkit.train.continued import check_init_flags, init_model_config

        if overrides.get("train.init"):  # before the config is checked: a shape flag is refused as such
            check_init_flags(overrides, overrides["train.init"])
        cfg = load_run_config(args.config, overrides)
        if cfg.train.init:  # continued pre-training: the checkpoint's model, with the run's own dropout
            init_model_config(cfg, overrides)
    if args.scaling_law and not args.model:
        raise LmkitError("--scaling-law applies with --model auto (the time budget's choice of model)")
    try:
        if args.model == "auto":
            from lmkit.plan.chinchilla import get_fit, load_scaling_law
            from lmkit.train.budget import pretrain_to_budget

            if args.resume:
                raise LmkitError(
                    "--model auto chooses the model of a new run; a resumed run keeps its model (drop --model)"
                )
            law = load_scaling_law(args.scaling_law) if args.scaling_law else get_fit("chinchilla")
            summary = pretrain_to_budget(cfg, law, show_progress=not args.quiet, yes=args.yes)
        else:
            summary = train(cfg, bool(args.resume), not args.quiet, new_data=new_data, new_batch=new_batch)
    except RuntimeError as e:  # under torchrun: a collective that timed out or lost a process, in one line
        failure = collective_failure(e, args.collective_timeout)
        if failure is None:
            raise
        raise failure from None
    except TrainingInterrupted as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"lmkit: {e}", file=sys.stderr)
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print_json(summary)
        else:
            ev = summary["eval"] or {}
            print(
                f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['wall_time_s']:.0f}s; "
                f"stopped at {summary['stop_reason']}"
            )
            if ev:
                print(
                    f"held-out loss {ev['loss']:.3f}, perplexity {ev['perplexity']:.1f}"
                    + (f", bits/byte {ev['bits_per_byte']:.3f}" if "bits_per_byte" in ev else "")
                )
            mem = summary.get("memory")
            if mem and mem.get("error") is not None:
                print(
                    f"memory:     {mem['measured_kind']} {mem['measured_bytes'] / 1e6:,.1f} MB; lmkit plan predicted "
                    f"{mem['predicted_bytes'] / 1e6:,.1f} MB ({100 * mem['error']:+.1f}%)"
                )
            print(f"checkpoint: {summary['checkpoint']}")
            print(
                f"metrics:    {summary['metrics']}"
                + (f"\nloss curve: {summary['loss_curve']}" if summary["loss_curve"] else "")
            )
    if dist.is_initialized():
        # leave together: a rank tearing its process group down while another still works (rank 0
        # writes the summary) can abort in gloo's background threads
        dist.barrier()
        dist.destroy_process_group()
    return 0


def add_finetune_head(sub: Any) -> None:
    p = sub.add_parser(
        "finetune-head",
        help="adapt a pre-trained encoder (classification head) or encoder-decoder to a labelled task",
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
        "                           of greedy generations.\n\n" + FINETUNE_DATA_FORMATS + "\n\n"
        "Held-out data: --eval FILE, or a seeded random --val-fraction of --data (default 20%).\n"
        "--out DIR saves a checkpoint: the fine-tuned model (still usable by fill-mask / generate)\n"
        "and, for classifiers, head.safetensors with the label names in config.json.\n\n"
        "examples:\n"
        "  lmkit finetune-head runs/enc --task sequence-classification --data reviews.jsonl --out runs/sentiment\n"
        "  lmkit finetune-head runs/enc --task token-classification --data ner.jsonl --epochs 5\n"
        "  lmkit finetune-head runs/t5 --task seq2seq --data pairs.jsonl --lr 1e-3",
    )
    add_checkpoint(p, "pre-trained checkpoint folder")
    p.add_argument(
        "--task",
        required=True,
        choices=["sequence-classification", "token-classification", "seq2seq"],
        help="what to learn (see above)",
    )
    p.add_argument("--data", required=True, help="labelled JSONL file (formats above)")
    p.add_argument("--eval", default=None, help="separate held-out JSONL file (default: split --data)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of --data held out (default 0.2)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training examples (default 3)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the pre-trained weights (default 1e-4)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the new head (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    p.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the head only, keeping the pre-trained weights fixed (a linear probe)",
    )
    add_seed(p, 0, "the split, the shuffling and the head")
    add_out(p, "folder for the fine-tuned checkpoint (default: none is saved)")
    add_overwrite(p, "a checkpoint lmkit wrote in --out")
    add_device(p)
    add_quiet(p)
    add_json(p, "the report as JSON")
    add_no_verify(p)
    p.set_defaults(func=_run_finetune_head)


def _run_finetune_head(args: argparse.Namespace) -> int:
    """``lmkit finetune-head CKPT --task ... --data labelled.jsonl``: fine-tune, then print the report."""
    from lmkit.train.finetune.data import FinetuneConfig
    from lmkit.train.finetune.loop import run_finetune

    cfg = FinetuneConfig(
        task=args.task,
        epochs=args.epochs,
        lr=args.lr,
        head_lr=args.head_lr,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        freeze_encoder=args.freeze_encoder,
    )
    device = str(device_from(args))
    report = run_finetune(
        args.checkpoint,
        args.data,
        cfg,
        eval_data=args.eval,
        out=args.out,
        overwrite=args.overwrite,
        device=device,
        show_progress=not args.quiet and not args.json,
    )
    if args.json:
        print_json(report)
    else:
        print(format_finetune_report(report))
    return 0


def format_finetune_report(rep: dict[str, Any]) -> str:
    """The held-out report in words and a small table."""
    lines = [f"{rep['task']}: {rep['train_examples']} training / {rep['val_examples']} held-out examples"]
    for h in rep["history"]:
        lines.append(
            "  epoch {epoch}: train loss {train_loss:.3f}".format(**h)
            + "".join(f", {k.replace('_', ' ')} {v:.3f}" for k, v in h.items() if k not in ("epoch", "train_loss"))
        )
    if rep["task"] == "seq2seq":
        lines.append(
            f"held-out: loss {rep['loss']:.3f} (perplexity {rep['perplexity']:.2f}), exact match "
            f"{rep['exact_match']:.1%}, word F1 {rep['word_f1']:.1%}"
        )
        for ex in rep.get("examples", [])[:3]:
            lines.append(f"  input:  {ex['input']}\n  target: {ex['target']}\n  output: {ex['output']}")
    else:
        unit = "texts" if rep["task"] == "sequence-classification" else "words"
        lines.append(
            f"held-out: accuracy {rep['accuracy']:.1%} over {unit} (majority-label baseline "
            f"{rep['majority_baseline']:.1%}), macro-F1 {rep['macro_f1']:.3f}"
        )
        if "entity" in rep:
            e = rep["entity"]
            lines.append(
                f"entities: precision {e['precision']:.3f}, recall {e['recall']:.3f}, F1 {e['f1']:.3f} "
                f"({e['entities']} entities)"
            )
        w = max(5, *(len(lab) for lab in rep["labels"]))
        lines.append(f"  {'label':<{w}}  precision  recall     f1  support")
        for lab in rep["labels"]:
            m = rep["per_label"][lab]
            lines.append(f"  {lab:<{w}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
        if rep.get("truncated_words"):
            lines.append(f"note: {rep['truncated_words']} words did not fit the context window and were left out")
    if rep.get("out"):
        lines.append(f"saved: {rep['out']}")
    return "\n".join(lines)


def add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a built-in corpus, in minutes on a CPU",
        description="Gather real English text already on this machine (license texts, Debian copyright files, "
        "Python's docstrings, fortunes if installed), curate it, train a tokenizer, plan, pre-train a "
        "small decoder, evaluate, generate, quantize to int8, write the model card and publish to a "
        "local hub. Prints where every artefact went.",
    )
    add_out(p, "output folder (a new -2, -3... sibling if it exists; default runs/demo)", default="runs/demo")
    p.add_argument("--data", nargs="+", default=None, help="use your own text instead of the built-in corpus")
    p.add_argument("--minutes", type=float, default=3.0, help="rough total time budget (training gets ~60%%)")
    p.add_argument("--quick", action="store_true", help="a tiny corpus and model: the chain in well under a minute")
    p.add_argument("--prompt", default=None, help="prompt for the sample completions")
    add_json(p, "the summary as JSON")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    """``lmkit demo``: run the whole pipeline, then print its summary."""
    from lmkit.demo import run_demo  # lazy: the pipeline pulls in torch; `lmkit --help` stays instant

    s = run_demo(out=args.out, data=args.data, minutes=args.minutes, quick=args.quick, prompt=args.prompt)
    if args.json:
        print_json(s)
    else:
        print_demo_summary(s)
    return 0


def print_demo_summary(s: dict[str, Any]) -> None:
    """The demo's summary on stdout, without blank lines: what each stage gave and where it went.

    The held-out figures of the model and of its int8 copy come from one evaluation of both on the
    same tokens (the quantize report's before and after), so they differ only by int8 storage.
    """
    from lmkit.ship.quantize import size_text

    tr = s["training"]
    cur = s.get("curation") or {}
    q = s.get("quantization") or {}
    before, after = q.get("eval_before") or tr.get("eval") or {}, q.get("eval_after") or {}

    def scores(ev: dict[str, Any], change: float | None = None) -> str:
        pct = f" ({change:+.2f}%)" if change is not None else ""
        return (
            f"loss {ev.get('loss', float('nan')):.3f}, perplexity {ev.get('perplexity', float('nan')):.2f}{pct}, "
            f"bits/byte {ev.get('bits_per_byte', float('nan')):.3f}"
        )

    lines = ["== lmkit demo: done in %.0f s " % s["wall_time_s"] + "=" * 50]
    if cur.get("docs_in"):
        lines.append(
            f"curation     {cur['docs_out']:,} of {cur['docs_in']:,} documents kept, "
            f"{cur['tokens_kept_pct']:.1f}% of tokens"
        )
    lines.append(
        f"model        {tr['params']:,} parameters, {tr['steps']} steps, {tr['tokens']:,} tokens, "
        f"{tr['wall_time_s']:.0f} s"
    )
    if before:
        lines.append(
            f"held-out     {int(before.get('tokens', 0)):,} tokens of the run's validation split "
            "(never trained on), the same for both:"
        )
        lines.append(f"  the model  {scores(before)}")
    if after:
        lines.append(f"  int8 copy  {scores(after, q.get('perplexity_change_pct'))}")
    if q:
        lines.append(
            f"int8 size    {q['disk_bytes']['ratio']:.2f}x smaller on disk "
            f"({size_text(q['disk_bytes']['before'])} -> {size_text(q['disk_bytes']['after'])}), "
            f"{q['memory_bytes']['ratio']:.2f}x in memory"
        )
    gen = s["generation"]
    lines.append("prompt       " + repr(gen["prompt"]))
    for k, v in gen.items():
        if k != "prompt":
            name, _, how = k.partition(" ")
            lines.append(f"{name:12s} {how + ' ' if how else ''}{v!r}")
    lines += [
        "where everything went:",
        f"  corpus + curation report  {s['out']}/raw, {s['out']}/curated/report.md",
        f"  tokenizer                 {s['out']}/tokenizer/tokenizer.json",
        f"  checkpoint                {tr['checkpoint']}",
        f"  metrics, loss curve       {s['out']}/run/metrics.jsonl"
        + (f", {tr['loss_curve']}" if tr.get("loss_curve") else " (no curve: the run logged no training loss)"),
        f"  int8 model                {s['out']}/model-int8",
        f"  model card                {s['card']}",
        f"  local hub                 {s['hub']['url']}  (lmkit hub --hub {s['hub']['url']} list)",
        'next: lmkit generate %s "your prompt" --sample --explain' % tr["checkpoint"],
    ]
    print("\n".join(lines))
