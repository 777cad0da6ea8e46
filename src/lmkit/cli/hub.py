"""The ``lmkit hub`` command group: push, pull, list, search and show, on lmkit's own hub or (``--hf``) the Hugging Face hub.

``add_hub(sub)`` declares the flags, with help that teaches; ``_run_hub(args)`` calls the domain
modules and prints their answer as a table or card, or as JSON. lmkit's hub (a folder or fsspec URL)
is :mod:`lmkit.ship.hub` with its query language :mod:`lmkit.ship.hub_search`; ``search --hf`` and
``show --hf`` ask the Hugging Face hub through :mod:`lmkit.ship.hf_search`, which lists only the
models ``lmkit import-hf`` can import. The domain modules load only when the command runs, so
``lmkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lmkit.cli.common import add_checkpoint, add_json, add_no_verify, add_out, add_overwrite, print_json
from lmkit.errors import LmkitError
from lmkit.families import FAMILIES, PIPELINE_TAG

HF_LIMIT = 20  # models a `search --hf` shows unless --limit says otherwise


def add_hub(sub: Any) -> None:
    p = sub.add_parser(
        "hub",
        help="publish, fetch and browse models in a hub (a folder or any fsspec URL); find importable "
        "models on the Hugging Face hub (search/show --hf)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A model hub in a folder or any fsspec URL (s3://, gs:// with s3fs/gcsfs installed; "
        "memory:// for tests). Where: --hub URL, else $LMKIT_HUB, else $XDG_CACHE_HOME/lmkit/hub "
        "(~/.cache/lmkit/hub).\n\n"
        "Names are 'model' or 'namespace/model' (ASCII letters, digits, . _ -). Each push makes a new "
        "revision (1, 2, ...); NAME@3 is revision 3, NAME the latest. Every file is stored under its "
        "sha256 and verified on pull.\n\n"
        "search --hf and show --hf ask the Hugging Face hub instead (HF_ENDPOINT, HF_TOKEN; not with "
        "HF_HUB_OFFLINE=1): the models `lmkit import-hf` can import, and their cards.\n\n"
        "examples:\n  lmkit hub push runs/small alice/small-decoder -m 'first run'\n"
        "  lmkit hub list\n  lmkit hub search family:decoder size<10M legal\n"
        "  lmkit hub show alice/small-decoder\n  lmkit hub pull alice/small-decoder@1 --out models/small\n"
        "  lmkit hub search --hf smol --family decoder --max-params 500M\n"
        "  lmkit hub show --hf HuggingFaceTB/SmolLM2-135M",
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
    hf = argparse.ArgumentParser(add_help=False)
    hf.add_argument(
        "--hf",
        action="store_true",
        help="the Hugging Face hub instead of lmkit's (HF_ENDPOINT sets a mirror, HF_TOKEN a token)",
    )
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
        parents=[common, hf],
        help="find models by name, family, task, size, card text (--hf: on the Hugging Face hub)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="lmkit's hub: every term must match. family:decoder, task:fill-mask, size<10M, "
        "params>=1M filter; other words are looked for in the name, family, task, architecture and "
        "model card.\n\n"
        "--hf: the Hugging Face hub's models that `lmkit import-hf` can import (a class lmkit has an "
        "adapter for, the classes `lmkit import-hf --help` lists; a repository of any other class, e.g. "
        "BertForSequenceClassification, is left out), most downloaded "
        "first, with task, parameters (the hub's safetensors count; '?' when it has none, and then no "
        "size bound admits it), downloads, license and what its card says of its uses and limitations. "
        "Words must all appear in the model's name; filter with --family, --task, --min-params, "
        "--max-params (135M, 1.1B), and --limit (default 20). Needs the hub: with HF_HUB_OFFLINE=1 it is "
        "refused. `lmkit hub --help` has examples.",
    )
    search.add_argument("query", nargs="*", help="terms, e.g. family:encoder size<5M legal (--hf: words in the name)")
    search.add_argument(
        "--family",
        default=None,
        choices=[f.name for f in FAMILIES],
        help="only models of this model.family: "
        + "; ".join(f"{f.name}, {f.kind}" for f in FAMILIES)
        + " (`lmkit families` compares them)",
    )
    search.add_argument(
        "--task",
        default=None,
        help=f"lmkit's hub: one of {', '.join(PIPELINE_TAG.values())}; --hf: any hub pipeline tag "
        "(text-generation, fill-mask, text2text-generation, translation, summarization, ...)",
    )
    search.add_argument("--min-params", default=None, help="smallest size, e.g. 1M")
    search.add_argument("--max-params", default=None, help="largest size, e.g. 135M or 1.1B")
    search.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help=f"show at most N models (default: all on lmkit's hub, {HF_LIMIT} with --hf)",
    )
    show = hsub.add_parser(
        "show",
        parents=[common, hf],
        help="print a model's card (--json: its manifest); --hf: a Hugging Face hub model's card",
        description="Print a model's card. --hf: the README.md of a Hugging Face hub model (kept in the "
        "hub cache, so a card read once is shown again with HF_HUB_OFFLINE=1); --json with --hf: its "
        "license, uses and limitations and the card's text.",
    )
    show.add_argument(
        "spec", metavar="NAME[@REV]", help="model name, optionally @revision (--hf: a branch, tag or commit)"
    )
    p.set_defaults(func=_run_hub)


def _run_hub(args: argparse.Namespace) -> int:
    """``lmkit hub push|pull|list|search|show``."""
    if getattr(args, "hf", False):
        if args.hub or args.hub_top:
            raise LmkitError("--hub names lmkit's hub and --hf the Hugging Face hub: give one of them")
        return _run_hf_show(args) if args.hub_command == "show" else _run_hf_search(args)
    from lmkit.ship.hub import Hub, parse_spec
    from lmkit.ship.hub_search import search

    if getattr(args, "task", None) is not None and args.task not in PIPELINE_TAG.values():
        raise LmkitError(f"--task {args.task!r}: lmkit's hub knows {', '.join(PIPELINE_TAG.values())}")
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
            min_params=_count(args.min_params, "--min-params"),
            max_params=_count(args.max_params, "--max-params"),
        )[: _limit(args.limit)]
    if args.json:
        print_json(found)
    elif not found:
        print(f"no models in hub {hub.url}" if action == "list" else f"nothing in hub {hub.url} matches")
    else:
        print(
            _table(
                ["NAME", "REV", "FAMILY", "TASK", "PARAMS", "TOKENS", "LOSS", "PUSHED"], [_hub_row(m) for m in found]
            )
        )
    return 0


def _run_hf_search(args: argparse.Namespace) -> int:
    """``lmkit hub search --hf [WORDS] [--family F] [--task T] [--min-params N] [--max-params N] [--limit N]``."""
    from lmkit.ship.hf_search import hub_endpoint, search_hf

    found = search_hf(
        args.query,
        family=args.family,
        task=args.task,
        min_params=_count(args.min_params, "--min-params"),
        max_params=_count(args.max_params, "--max-params"),
        limit=args.limit if args.limit is not None else HF_LIMIT,
    )
    if args.json:
        print_json(found)
        return 0
    if not found:
        print(f"no model on the Hugging Face hub ({hub_endpoint()}) that lmkit can import matches")
        return 0
    head = ["NAME", "CLASS", "TASK", "PARAMS", "DOWNLOADS", "LICENSE"]
    rows = [_hf_row(m) for m in found]
    lines = _table(head, rows).splitlines()
    print(lines[0])
    for m, line in zip(found, lines[1:]):
        print(line)
        if m.get("card_error"):
            print(f"    card not read: {m['card_error']}")
        else:
            print(f"    uses: {m['uses'] or 'not found in its card'}")
            print(f"    limitations: {m['limitations'] or 'not found in its card'}")
    print(f"import one: lmkit import-hf {found[0]['name']} --out DIR   (hub show --hf NAME prints its card)")
    return 0


def _run_hf_show(args: argparse.Namespace) -> int:
    """``lmkit hub show --hf NAME[@REV]``: the card as it is (``--json``: its summary and text)."""
    from lmkit.ship.hf_search import card_summary, fetch_card, split_spec

    name, rev = split_spec(args.spec)
    text = fetch_card(name, rev)
    if not args.json:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    from huggingface_hub import ModelCard

    try:
        license = ModelCard(text, ignore_metadata_errors=True).data.to_dict().get("license")
    except Exception:  # noqa: BLE001 - malformed front matter: the card is still printed
        license = None
    print_json({"name": name, "revision": rev, "license": license, **card_summary(text), "card": text})
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


def _hf_row(m: dict[str, Any]) -> list[str]:
    from lmkit.ship.card.figures import si

    return [
        m["name"] + (" (gated)" if m["gated"] else ""),
        m["architecture"],
        m["task"] or "?",
        si(m["params"]) if m["params"] else "?",
        si(m["downloads"]) if m["downloads"] else "0",
        m["license"] or "?",
    ]


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def _limit(n: int | None) -> int | None:
    if n is not None and n < 1:
        raise LmkitError(f"--limit must be at least 1, got {n}")
    return n


def _count(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    from lmkit.plan import parse_count

    return parse_count(text, flag)
