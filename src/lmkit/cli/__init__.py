"""The ``lmkit`` command line: one entry point; each command group has its own module.

The thirteen groups, each holding its commands' flags, runners and printing:

* ``data``: curate, mix, tokenizer (train, stats)
* ``train``: pretrain, finetune-head, demo
* ``plan``: plan
* ``numerics``: numerics
* ``families``: families
* ``infer``: generate, evaluate, fill-mask, viz (attention, embeddings)
* ``ship``: quantize, export, import-hf, card
* ``hub``: hub (push, pull, list, search, show; search and show --hf on the Hugging Face hub)
* ``serve``: serve
* ``adapt``: adapt
* ``icl``: icl
* ``scale``: scale (sweep, fit)
* ``compare``: compare

The flags several commands share are declared once, in :mod:`lmkit.cli.common`. A runner parses,
calls the library and prints; it imports its library modules lazily, so ``lmkit --help`` is
instant. Errors about the user's input (``LmkitError``) are printed as one line
(``lmkit: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from lmkit.cli import adapt, compare, data, families, hub, icl, infer, numerics, plan, scale, serve, ship, train
from lmkit.cli.common import check_shared_flags
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


# --------------------------------------------------------------------------- parser and main

ADDERS: tuple[Callable[[Any], None], ...] = (
    data.add_curate,
    data.add_mix,
    data.add_tokenizer,
    train.add_pretrain,
    infer.add_generate,
    train.add_demo,
    plan.add_plan,
    numerics.add_numerics,
    ship.add_quantize,
    infer.add_evaluate,
    ship.add_export,
    ship.add_import_hf,
    ship.add_card,
    hub.add_hub,
    infer.add_fill_mask,
    train.add_finetune_head,
    infer.add_viz,
    families.add_families,
    serve.add_serve,
    adapt.add_adapt,
    icl.add_icl,
    scale.add_scale,
    compare.add_compare,
)
# Subcommands whose unknown ``--a.b value`` arguments are config overrides.
TAKES_OVERRIDES = {"pretrain", "plan", "curate"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmkit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        check_shared_flags(args)
        if getattr(args, "no_verify", False):  # --no-verify: the checkpoint loaders skip their checksums
            from lmkit.models.checkpoint import checksums_unverified

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
