"""Flags several commands share, declared once so that every command spells, documents and checks
them alike; each helper takes the sentence that is particular to its command.

What is here: the CHECKPOINT argument, ``--out`` and ``--overwrite``, ``--json`` (and
:func:`print_json`, how every command prints it), ``--quiet``, ``--text-field``, the held-out data
flags, ``--no-verify``, ``--seed``, ``--device``, ``--threads``, ``--yes``, a run config
(``--config``), training text with its tokenizer, the token counter of ``curate`` and ``mix``,
``--scaling-law`` and the model card's front-matter flags.

:func:`check_shared_flags` (run by ``lmkit.cli.main`` before any command) refuses a ``--seed``
outside what the random generators take (:func:`lmkit.config.validate_seed`) and a ``--threads``
outside 1 to this machine's CPU count; a command turns its ``--device`` into a torch device with
:func:`device_from`, which calls :func:`lmkit.train.distributed.resolve_device` (a name it does not
know or a device this machine lacks is refused). Each refusal is one ``lmkit: error:`` line naming
the flag.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from lmkit.errors import LmkitError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps"


def add_checkpoint(
    p: argparse.ArgumentParser, what: str = "checkpoint folder", note: str = "", optional: bool = False
) -> None:
    """The CHECKPOINT argument: ``what`` a command reads, or a run folder
    (``lmkit.models.checkpoint.resolve_checkpoint`` takes its newest checkpoint)."""
    p.add_argument(
        "checkpoint",
        nargs="?" if optional else None,
        default=None,
        help=f"{what}, or a run folder (its newest checkpoint){note}",
    )


def add_out(
    p: argparse.ArgumentParser, help: str, *, file: bool = False, required: bool = False, default: str | None = None
) -> None:
    """``--out`` (a folder, or a ``file``): ``help`` says what is written there. Every command checks it
    with ``lmkit.files.check_out_dir`` / ``check_out_file`` before any work."""
    p.add_argument("--out", required=required, default=default, metavar="FILE" if file else "DIR", help=help)


def add_overwrite(p: argparse.ArgumentParser, what: str, never: str | None = "a folder holding other files") -> None:
    """``--overwrite``: replace ``what`` (a previous output of the command), ``never`` anything else."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}" + (f" (never {never})" if never else ""))


def add_json(p: argparse.ArgumentParser, what: str = "one JSON object") -> None:
    """``--json``: print ``what`` (as :func:`print_json` does) instead of the text for people."""
    p.add_argument("--json", action="store_true", help=f"print {what}")


def print_json(obj: Any) -> None:
    """What ``--json`` prints: one JSON document, indented, non-ASCII text as it is, and any value
    JSON has no type for (a path, a torch dtype) as its string."""
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars or progress lines on stderr (the result is still printed)."""
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_text_field(
    p: argparse.ArgumentParser, default: str | None = "text", note: str = "", shown: str = "text"
) -> None:
    """``--text-field``: which field of a JSONL/Parquet record holds the text (``default`` None: the
    command's config says; ``shown``: the default in words)."""
    p.add_argument(
        "--text-field", default=default, help=f"JSONL/Parquet field holding the text{note} (default {shown})"
    )


def add_held_out_flags(p: argparse.ArgumentParser, batches_flag: str, data_what: str) -> None:
    """The held-out data flags that `quantize` and `evaluate` share (lmkit.infer.evaluate.held_out reads them)."""
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="PATH",
        help=f"{data_what}: a packed shard folder (its val split), or text files and folders (packed with the "
        "checkpoint's own tokenizer)",
    )
    add_text_field(p, note=" (with --data)")
    p.add_argument(batches_flag, type=int, default=8, help="held-out batches evaluated (default 8)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per held-out batch (default 8)")


def add_no_verify(p: argparse.ArgumentParser, also: str | None = None) -> None:
    """``--no-verify`` for a command that loads checkpoints (main() switches the checksum checks off for
    it); ``also``: a second check the command skips with it."""
    if also:
        help = f"skip both checks: the checkpoint's files against the SHA-256 checksums in its meta.json, and {also}"
    else:
        help = (
            "do not check the checkpoint's files against the SHA-256 checksums in its meta.json "
            "(faster for large checkpoints; a changed or damaged file then loads silently)"
        )
    p.add_argument("--no-verify", action="store_true", help=help)


def add_seed(p: argparse.ArgumentParser, default: int | None, what: str, unset: str = "a fresh one, printed") -> None:
    """``--seed`` (an integer from 0 to 2**64-1, checked by :func:`check_shared_flags`); ``what`` it
    seeds; with ``default`` None, ``unset`` says what happens without it."""
    shown = f"default {default}" if default is not None else f"default: {unset}"
    p.add_argument("--seed", type=int, default=default, help=f"seed of {what}: 0 to 2**64-1 ({shown})")


def add_device(p: argparse.ArgumentParser, what: str = "where the model runs", choices: str = DEVICE_HELP) -> None:
    """``--device`` (default auto), turned into a torch device by :func:`device_from`."""
    p.add_argument("--device", default="auto", help=f"{what}: {choices} (default auto)")


def device_from(args: argparse.Namespace, kinds: tuple[str, ...] = ("cuda", "mps", "cpu")) -> torch.device:
    """``--device`` as a torch device (``lmkit.train.distributed.resolve_device``, among the device
    ``kinds`` the command runs on), tried with an empty tensor so that a device this torch cannot
    use (a driver too old for its CUDA) is one line naming the flag rather than a traceback later."""
    import torch

    from lmkit.train.distributed import resolve_device

    device = resolve_device(args.device, what="--device", kinds=kinds)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise LmkitError(f"--device {args.device}: not usable here ({str(e).splitlines()[0]})") from None
    return device


def add_threads(p: argparse.ArgumentParser, default: int | None, what: str) -> None:
    """``--threads``: torch's CPU threads for ``what`` (1 to the CPU count, checked by
    :func:`check_shared_flags`); ``default`` None leaves torch's own choice."""
    shown = "torch's choice" if default is None else str(default)
    p.add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"CPU threads {what}, 1 to this machine's CPU count (default {shown})",
    )


def check_shared_flags(args: argparse.Namespace) -> None:
    """Refuse a ``--seed`` no random generator takes and a ``--threads`` under 1 or over this
    machine's CPU count, whichever command has them (one line naming the flag)."""
    seed = getattr(args, "seed", None)
    if seed is not None:
        from lmkit.config import validate_seed

        validate_seed(seed, "--seed")
    threads = getattr(args, "threads", None)
    if threads is not None:
        cores = os.cpu_count() or 1
        if threads < 1:
            raise LmkitError(f"--threads must be at least 1, got {threads}")
        if threads > cores:
            raise LmkitError(f"--threads must be 1 to {cores} (this machine's CPUs), got {threads}")


def add_yes(
    p: argparse.ArgumentParser, work: str, basis: str = "predicted from its FLOPs at this machine's measured peak"
) -> None:
    """``--yes`` for a command whose ``work`` may take longer than ``lmkit.plan.compute.LONG_RUN_HOURS``
    (``basis``: how its time is known); ``lmkit.plan.compute.check_run_time`` asks for it."""
    from lmkit.plan.compute import LONG_RUN_HOURS, NEVER_DAYS

    p.add_argument(
        "--yes",
        action="store_true",
        help=f"start {work} even when it takes more than {LONG_RUN_HOURS:.0f} hours ({basis}); "
        f"beyond {NEVER_DAYS:.0f} days it is refused, --yes or not",
    )


def add_run_config(p: argparse.ArgumentParser, what: str, required: bool = False, note: str = "") -> None:
    """``--config``: the run config ``what`` a command trains from, a YAML file or a recipe lmkit ships
    (``lmkit.config_io.resolve_recipe``)."""
    p.add_argument(
        "--config",
        required=required,
        default=None,
        help=f"{what}: a YAML file (sections model, train, data) or a recipe name (tiny, cpu-small, "
        f"gpu-124m, ...){note}",
    )


def add_training_text(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--data`` (the training text) and ``--tokenizer`` (else one is trained on it), as ``pretrain``
    and ``scale sweep`` take them (``data.paths`` and ``data.tokenizer`` of the run config)."""
    p.add_argument(
        "--data",
        nargs="+",
        required=required,
        default=None,
        help="training text (files, folders) or a packed shard folder",
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or folder; default: train one on --data")


def add_token_counter(p: argparse.ArgumentParser) -> None:
    """``--tokenizer`` of the data commands that report token counts without training on them."""
    p.add_argument(
        "--tokenizer",
        default=None,
        help="count tokens with this tokenizer.json/folder (default: a regex word-token proxy)",
    )


def add_scaling_law(p: argparse.ArgumentParser, use: str, instead: str) -> None:
    """``--scaling-law FIT.json``: the Approach-3 law ``lmkit scale fit`` wrote, to ``use`` instead of
    ``instead`` (read by ``lmkit.plan.chinchilla.load_scaling_law``)."""
    p.add_argument(
        "--scaling-law",
        default=None,
        metavar="FIT.json",
        help=f"{use} your own law: the Approach-3 fit `lmkit scale fit` wrote (instead of {instead})",
    )


def add_card_flags(p: argparse.ArgumentParser) -> None:
    """``--license``, ``--language`` and ``--add-section``: what a model card (``lmkit.ship.card``)
    cannot read from the checkpoint."""
    p.add_argument(
        "--license",
        default=None,
        help="license id for the model card's front matter, e.g. apache-2.0 (default: unknown)",
    )
    p.add_argument("--language", nargs="+", default=None, help="language codes of the training data, e.g. en")
    p.add_argument(
        "--add-section",
        nargs="+",
        default=None,
        metavar="FILE",
        help="Markdown files appended to the model card as sections (a '## <file name>' heading is added if missing)",
    )
