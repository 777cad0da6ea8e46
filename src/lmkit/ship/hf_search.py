"""Finding foundation models on the Hugging Face hub that ``lmkit import-hf`` can import, and reading their cards.

What this module owns:

- :func:`search_hf`: the hub's model listing (``HfApi.list_models``: one request per transformers
  ``model_type`` that :data:`lmkit.models.hf.ADAPTERS` reads, sent side by side, most downloaded
  first) narrowed to the models whose config is a class lmkit imports, as
  :func:`lmkit.models.hf.adapter_for_hf` decides it: the registry is the one list of what lmkit
  imports, so a repository tagged ``bert`` whose class is ``BertForSequenceClassification`` is left
  out. Filters: family (the adapters' target family), task (the hub's pipeline tag), words that
  must all appear in the name, and parameter bounds on the hub's safetensors total (a model the hub
  gives no total for has an unknown size, which no bound admits). Each record holds the name, the
  class, family, task, parameters, downloads, likes, license, whether it is gated, and the card's
  summary of uses and limitations.
- :func:`fetch_card`: a model's ``README.md`` through ``hf_hub_download``, so it lands in the hub
  cache and a card read once is shown again offline.
- :func:`card_summary` (pure): the opening sentences of a card's uses-like section ("Intended uses",
  "Uses", "Direct Use", ...) and limitations-like section ("Bias, Risks, and Limitations",
  "Out-of-Scope Use", ...); a section holding only the card template's "[More Information Needed]"
  says nothing and the next one is tried.

The environment works as for ``transformers``: ``HF_ENDPOINT`` (read when a request is made, so a
mirror set after import is used), ``HF_TOKEN``, and ``HF_HUB_OFFLINE=1``, with which a search is one
line saying it needs the hub, and a card is read from the cache or is one line saying it is not there.
Each hub failure is one line (:class:`~lmkit.errors.LmkitError`) naming the model and what went wrong.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError
from lmkit.models.hf import ADAPTERS, adapter_for_hf
from lmkit.models.hf_adapters.base import HFAdapter

# What the listing asks the hub for about each model (ModelInfo's fields of the same names).
EXPAND = ["config", "cardData", "safetensors", "downloads", "likes", "pipeline_tag", "tags", "gated"]
SUMMARY_CHARS = 200  # longest summary of a card section
_WORKERS = 8  # listing requests and card downloads sent at once
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment variable


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` as it is now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether offline mode is on (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, now or at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or env.upper() in _TRUE


def importable(config: Any, name: str = "") -> HFAdapter | None:
    """The adapter lmkit imports a hub config as (by ``architectures``, else ``model_type``), or None."""
    if not isinstance(config, dict):
        return None
    try:
        return adapter_for_hf(config, name)
    except LmkitError:
        return None


def count_bound(n: float, up: bool) -> str:
    """A parameter bound as the hub's ``num_parameters`` spells it: 135M, 1100M, 2B (rounded outward)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        q = n / div
        if q >= 1 and abs(q - round(q)) < 1e-9:
            return f"{round(q)}{unit}"
    return str(math.ceil(n) if up else math.floor(n))


def search_hf(
    words: Sequence[str] = (),
    *,
    family: str | None = None,
    task: str | None = None,
    min_params: float | None = None,
    max_params: float | None = None,
    limit: int = 20,
    cards: bool = True,
) -> list[dict[str, Any]]:
    """Up to ``limit`` hub models lmkit can import that match every filter, most downloaded first.

    ``words`` must all appear in the model's name (the longest is sent as the hub's ``search``);
    ``cards`` reads each one's card for its uses and limitations (``card_error`` says why not).
    """
    if limit < 1:
        raise LmkitError(f"--limit must be at least 1, got {limit}")
    words = [w.lower() for w in words if w]
    for w in words:
        if re.search(r"[:<>=]", w):
            raise LmkitError(
                f"hub search --hf: {w!r} is a term of the local hub's query; with --hf use --family, --task, "
                "--min-params and --max-params (words are looked for in model names)"
            )
    if min_params is not None and max_params is not None and min_params > max_params:
        raise LmkitError(f"--min-params {min_params:g} is above --max-params {max_params:g}")
    if hub_offline():
        raise LmkitError(
            "hub search --hf asks the Hugging Face hub, and offline mode is on (HF_HUB_OFFLINE=1): unset it, "
            "or search the local hub without --hf"
        )
    model_types = list(dict.fromkeys(a.target.model_type for a in ADAPTERS if family in (None, a.target.family)))
    if not model_types:
        known = ", ".join(sorted({a.target.family for a in ADAPTERS}))
        raise LmkitError(f"--family {family!r}: lmkit imports models of the families {known}")
    bounds = ([f"min:{count_bound(min_params, up=False)}"] if min_params is not None else []) + (
        [f"max:{count_bound(max_params, up=True)}"] if max_params is not None else []
    )
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint())

    def listing(model_type: str) -> list[Any]:
        return list(
            api.list_models(
                filter=model_type,
                search=max(words, key=len) if words else None,
                pipeline_tag=task,
                num_parameters=",".join(bounds) or None,
                sort="downloads",
                limit=limit,
                expand=EXPAND,  # type: ignore[arg-type]
            )
        )

    with _hub_errors("hub search --hf"), ThreadPoolExecutor(min(_WORKERS, len(model_types))) as pool:
        pages = list(pool.map(listing, model_types))
    found: dict[str, dict[str, Any]] = {}
    for info in (i for page in pages for i in page):
        rec = model_record(info)
        if rec is None or rec["name"] in found or not all(w in rec["name"].lower() for w in words):
            continue
        if task and rec["task"] != task:
            continue
        p = rec["params"]
        if min_params is not None and not (p is not None and p >= min_params):
            continue
        if max_params is not None and not (p is not None and p <= max_params):
            continue
        found[rec["name"]] = rec
    rows = sorted(found.values(), key=lambda r: (-(r["downloads"] or 0), r["name"]))[:limit]
    if cards and rows:
        from huggingface_hub.utils import disable_progress_bars

        with disable_progress_bars(), ThreadPoolExecutor(min(_WORKERS, len(rows))) as pool:
            list(pool.map(_add_summary, rows))
    return rows


def model_record(info: Any) -> dict[str, Any] | None:
    """One search result from a ``huggingface_hub.ModelInfo``, or None when lmkit cannot import its class."""
    adapter = importable(info.config, info.id)
    if adapter is None:
        return None
    license = getattr(info.card_data, "license", None) if info.card_data is not None else None
    if not license:
        license = next((t.split(":", 1)[1] for t in info.tags or [] if t.startswith("license:")), None)
    if isinstance(license, list):
        license = ", ".join(str(x) for x in license)
    total = info.safetensors.total if info.safetensors is not None else None
    return {
        "name": info.id,
        "architecture": adapter.target.architecture,
        "family": adapter.target.family,
        "task": info.pipeline_tag,
        "params": int(total) if isinstance(total, (int, float)) and total > 0 else None,
        "downloads": info.downloads,
        "likes": info.likes,
        "license": str(license) if license else None,
        "gated": bool(info.gated),
        "uses": None,
        "limitations": None,
    }


def _add_summary(rec: dict[str, Any]) -> None:
    try:
        rec.update(card_summary(fetch_card(rec["name"])))
    except LmkitError as e:
        rec["card_error"] = str(e)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``owner/name@revision`` -> (``owner/name``, ``revision``); no ``@``: the default branch."""
    name, _, rev = spec.partition("@")
    if not name or (spec.count("@") and not rev):
        raise LmkitError(f"{spec!r}: give a hub model name, optionally @revision (owner/name@main)")
    return name, rev or None


def fetch_card(name: str, revision: str | None = None) -> str:
    """The text of hub model ``name``'s README.md (from the hub cache when offline)."""
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    at = f"{name}@{revision}" if revision else name
    with _hub_errors(at):
        path = hf_hub_download(name, "README.md", revision=revision, endpoint=hub_endpoint(), local_files_only=offline)
    return Path(path).read_text(encoding="utf-8", errors="replace")


@contextmanager
def _hub_errors(at: str) -> Iterator[None]:
    """huggingface_hub's failures as one line naming ``at`` (a model, or the command)."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = hub_endpoint()
    try:
        yield
    except OfflineModeIsEnabled:
        raise LmkitError(f"{at}: offline mode is on (HF_HUB_OFFLINE=1) and this needs the hub at {where}") from None
    except LocalEntryNotFoundError:
        raise LmkitError(
            f"{at}: its card is not in the hub cache, and the hub cannot be asked (HF_HUB_OFFLINE=1, or no "
            f"network to {where}): read it once online"
        ) from None
    except GatedRepoError:
        raise LmkitError(f"{at}: a gated model; accept its terms on the hub, then set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise LmkitError(f"{at}: no such model on the hub at {where} (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise LmkitError(f"{at}: no such revision (a branch, tag or commit)") from None
    except EntryNotFoundError:
        raise LmkitError(f"{at}: the repository has no README.md (no model card)") from None
    except HfHubHTTPError as e:
        raise LmkitError(f"{at}: the hub at {where} refused ({str(e).splitlines()[0]})") from None
    except HFValidationError as e:
        raise LmkitError(f"{at}: not a hub model name ({str(e).splitlines()[0]})") from None
    except (httpx2.HTTPError, OSError) as e:
        raise LmkitError(f"{at}: cannot reach the hub at {where} ({e}); HF_ENDPOINT sets a mirror") from None


# --------------------------------------------------------------------------- reading a card

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)[\s#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_LIMITS = re.compile(r"limitation|bias|risk|out[- ]of[- ]scope|caveat|misuse", re.I)
_USES = re.compile(r"\buses?\b|intended|use[- ]cases?|applications?", re.I)
_HOW_TO = re.compile(r"how to|usage|get(ting)? started|quick ?start", re.I)


def card_sections(text: str) -> list[tuple[int, str, str]]:
    """(heading level, heading, text up to the next heading) of each section of a Markdown card,
    front matter left out. A ``#`` line inside a fenced code block is code, not a heading."""
    from huggingface_hub import ModelCard

    try:
        body = ModelCard(text, ignore_metadata_errors=True).text
    except Exception:  # noqa: BLE001 - malformed front matter: read the whole text as the body
        body = text
    out: list[tuple[int, str, str]] = []
    head: tuple[int, str] | None = None
    lines: list[str] = []
    fence: str | None = None
    for line in body.splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            fence = m.group(1) if fence is None else None
        elif fence is None and (h := _HEADING.match(line)):
            if head is not None:
                out.append((*head, "\n".join(lines)))
            head, lines = (len(h.group(1)), h.group(2)), []
            continue
        lines.append(line)
    if head is not None:
        out.append((*head, "\n".join(lines)))
    return out


def plain(markdown: str) -> str:
    """Markdown as one line of prose: code blocks, tables, images, HTML and the card template's
    placeholders dropped, links and emphasis reduced to their text."""
    kept, fence = [], None
    for line in markdown.splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or m.group(1) == fence):
            fence = m.group(1) if fence is None else None
        elif fence is None and not line.lstrip().startswith("|"):
            kept.append(line)
    t = "\n".join(kept)
    t = re.sub(r"<!--.*?-->", " ", t, flags=re.S)
    t = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", t)  # images
    t = re.sub(r"\[more information needed\]", " ", t, flags=re.I)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)  # links
    t = re.sub(r"<[^>]+>", " ", t)
    t = re.sub(r"(\*\*|__|`)", "", t)
    t = re.sub(r"(?m)^\s*(?:[-*+]|\d+[.)])\s+", " ", t)  # list bullets
    t = re.sub(r"(?m)^\s*>\s?", " ", t)  # quotes
    return " ".join(t.split())


def shorten(text: str, chars: int = SUMMARY_CHARS) -> str:
    """``text`` cut to at most ``chars``: at the last sentence end when one is far enough in, else a word."""
    if len(text) <= chars:
        return text
    head = text[:chars]
    end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if end >= chars // 3:
        return head[: end + 1]
    return head[: head.rfind(" ")].rstrip(" ,;:") + " …" if " " in head else head + "…"


def card_summary(text: str) -> dict[str, str | None]:
    """The card's uses and limitations, each the opening of the first section of its kind that says something.

    Uses: a heading naming uses or intended use ("Intended uses", "Uses", "Direct Use") before one
    that also names limitations ("Intended uses & limitations"), before "How to use" / "Usage".
    Limitations: a heading naming limitations, bias, risks or out-of-scope use, before one that
    also names intended uses. A section's own text comes first; one with nothing of its own is read
    with its subsections ("Bias, Risks, and Limitations" then "Recommendations") after every
    section that has.
    """
    sections = card_sections(text)
    own = [plain(body) for _, _, body in sections]
    whole = []  # each section with its subsections
    for i, (level, _, _) in enumerate(sections):
        end = next((j for j in range(i + 1, len(sections)) if sections[j][0] <= level), len(sections))
        whole.append(" ".join(x for x in own[i:end] if x))

    def uses_tier(t: str) -> int | None:
        if _HOW_TO.search(t):
            return 2
        if not _USES.search(t) or re.search(r"out[- ]of[- ]scope|misuse", t, re.I):
            return None
        return 1 if _LIMITS.search(t) else 0

    def limits_tier(t: str) -> int | None:
        if not _LIMITS.search(t):
            return None
        return 1 if re.search(r"intended", t, re.I) else 0

    def first(tier: Callable[[str], int | None], other: str | None = None) -> str | None:
        ranked = sorted(
            (tr + 3 * late, i, late)
            for i, (_, title, _) in enumerate(sections)
            if (tr := tier(title)) is not None
            for late in (0, 1)
        )
        for _, i, late in ranked:
            said = whole[i] if late else own[i]
            if len(said) >= 12 and shorten(said) != other:  # shorter: a stray word or mark, not a statement
                return shorten(said)
        return None

    uses = first(uses_tier)  # "Intended uses & limitations" is not said twice
    return {"uses": uses, "limitations": first(limits_tier, uses)}


__all__ = [
    "EXPAND",
    "card_sections",
    "card_summary",
    "count_bound",
    "fetch_card",
    "hub_endpoint",
    "hub_offline",
    "importable",
    "model_record",
    "plain",
    "search_hf",
    "shorten",
    "split_spec",
]
