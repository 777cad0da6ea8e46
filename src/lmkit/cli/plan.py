"""The planning commands: ``plan``, ``numerics`` and ``families``.

Each command has an ``add_<name>(sub)`` that declares its flags, with help that teaches, and a runner.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_plan(sub: Any) -> None:
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
        from lmkit.train import calibrate

        return calibrate.cli_measure(args)
    from lmkit import plan

    return plan.cli(args)


def add_numerics(sub: Any) -> None:
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


def add_families(sub: Any) -> None:
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

