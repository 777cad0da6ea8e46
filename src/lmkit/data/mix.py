"""Data mixing: a training mix in token proportions from several curated sources.

What this module owns: the functions behind ``lmkit mix SRC=WEIGHT ... --out DIR [--tokens N]``
(:func:`mix`, :func:`mix_markdown`), which packing can call too (:func:`plan_mix`, :func:`iter_mix`);
the command's flags, runner and printing are in :mod:`lmkit.cli.data`.

How a mix is built. A first pass counts the tokens of every document of every source (with the
tokenizer given, or the same regex proxy as ``lmkit curate``). Weights are normalised to sum to
1. The target size is ``--tokens`` or, by default, the largest mix in which no source is
repeated (``min(available_i / weight_i)``). Each source then gets ``weight_i * total`` tokens: a
source with fewer is up-sampled (every document repeated ``floor(r)`` times, plus a random
subset for the fraction), a source with more is down-sampled (a random subset of documents whose
tokens add up to the target). The subsets come from a seeded random permutation, so a mix is
reproducible. The second pass streams the chosen documents, interleaving the sources so that
every prefix of the output has about the target proportions, and spreading the repeats of an
up-sampled source over the run (its k-th copy comes in the k-th pass over that source).

Output: curated-format shards (``part-NNNNN.jsonl.gz`` of ``{"id", "text", "source"}``) where
``source`` is the mix source's name (so per-source token counts downstream are per mix source)
and ``id`` is the document's original id (repeats share it), plus ``report.json``/``report.md``
with the realised tokens and proportions of every source. Memory: 10 bytes per input document
(its token count and number of copies).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmkit import __version__
from lmkit.data.curate.engine import OUR_FILES, ShardWriter
from lmkit.data.curate.text import proxy_tokens
from lmkit.data.read import iter_documents
from lmkit.errors import LmkitError
from lmkit.files import check_out_dir, replace_dir
from lmkit.tokenizer import Tokenizer


@dataclass
class MixSource:
    """One source of the mix: a curated folder (or any readable path), its weight and name."""

    path: str
    weight: float
    name: str


def parse_sources(specs: Sequence[str]) -> list[MixSource]:
    """Parse ``PATH=WEIGHT`` arguments (weight a number or a percentage such as ``51%``)."""
    out: list[MixSource] = []
    names: set[str] = set()
    for spec in specs:
        if "=" not in spec:
            raise LmkitError(f"mix source {spec!r}: expected PATH=WEIGHT, e.g. clean/legal=0.51")
        path, w = spec.rsplit("=", 1)
        w = w.strip()
        try:
            weight = float(w[:-1]) / 100 if w.endswith("%") else float(w)
        except ValueError:
            raise LmkitError(f"mix source {spec!r}: weight {w!r} is not a number") from None
        if not weight > 0 or weight != weight or weight == float("inf"):
            raise LmkitError(f"mix source {spec!r}: weight must be positive")
        if not Path(path).expanduser().exists():
            raise LmkitError(f"mix source {spec!r}: {path}: no such file or folder")
        base = Path(path.rstrip("/")).name or path
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        out.append(MixSource(path=path, weight=weight, name=name))
    if not out:
        raise LmkitError("mix: give at least one source PATH=WEIGHT")
    return out


def _counter(tokenizer: str | None) -> tuple[Callable[[list[str]], list[int]], str]:
    if tokenizer is None:
        return (
            lambda texts: [proxy_tokens(t) for t in texts],
            "proxy: regex word tokens \\w+|[^\\w\\s]+ (runs of letters/digits, runs of punctuation)",
        )
    tok = Tokenizer.load(tokenizer, strict=False)
    return (lambda texts: [len(x) for x in tok.encode_batch(texts)]), f"tokenizer {tokenizer}"


def count_tokens(
    src: MixSource, count: Callable[[list[str]], list[int]], text_field: str = "text", bar: Any = None
) -> np.ndarray:
    """Tokens of every document of a source, in reading order (the first pass)."""
    out: list[int] = []
    batch: list[str] = []
    for doc in iter_documents([src.path], text_field=text_field):
        batch.append(doc.text)
        if len(batch) >= 512:
            out.extend(count(batch))
            if bar is not None:
                bar.update(len(batch))
            batch = []
    if batch:
        out.extend(count(batch))
        if bar is not None:
            bar.update(len(batch))
    return np.asarray(out, dtype=np.int64)


@dataclass
class SourcePlan:
    """How many times each document of one source goes into the mix."""

    source: MixSource
    share: float  # normalised weight
    doc_tokens: np.ndarray  # tokens per document
    copies: np.ndarray  # uint16 copies per document
    target_tokens: int

    @property
    def available_tokens(self) -> int:
        return int(self.doc_tokens.sum())

    @property
    def realised_tokens(self) -> int:
        return int((self.doc_tokens * self.copies).sum())

    @property
    def factor(self) -> float:
        return self.target_tokens / self.available_tokens if self.available_tokens else 0.0


def plan_mix(
    sources: Sequence[MixSource], doc_tokens: Sequence[np.ndarray], total_tokens: int | None = None, seed: int = 0
) -> list[SourcePlan]:
    """Choose copies per document so each source brings ``share * total`` tokens (see module doc)."""
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    shares = weights / weights.sum()
    avail = np.array([int(t.sum()) for t in doc_tokens], dtype=np.float64)
    for s, a in zip(sources, avail):
        if a <= 0:
            raise LmkitError(f"mix source {s.path}: no tokens (empty or unreadable)")
    total = float(total_tokens) if total_tokens is not None else float(np.min(avail / shares))
    plans: list[SourcePlan] = []
    for i, (src, share, toks) in enumerate(zip(sources, shares, doc_tokens)):
        target = int(round(share * total))
        full = int(target // avail[i])
        if full > np.iinfo(np.uint16).max - 1:
            raise LmkitError(f"mix source {src.path}: would need {full} repeats; ask for fewer tokens")
        copies = np.full(toks.shape[0], full, dtype=np.uint16)
        rest = target - full * avail[i]
        if rest > 0:
            rng = np.random.default_rng([seed, i])
            order = rng.permutation(toks.shape[0])
            cum = np.cumsum(toks[order])
            k = int(np.searchsorted(cum, rest, side="left"))  # first prefix reaching the rest
            # take k or k+1 documents, whichever lands closer to the target
            take = k + 1 if k < len(order) and (cum[k] - rest) <= (rest - (cum[k - 1] if k else 0)) else k
            copies[order[:take]] += 1
        plans.append(SourcePlan(src, float(share), toks, copies, target))
    return plans


def _source_stream(plan: SourcePlan, text_field: str) -> Iterator[tuple[str, str, int]]:
    """(id, text, tokens) of one source's chosen documents: pass k yields docs with > k copies."""
    passes = int(plan.copies.max()) if plan.copies.size else 0
    for k in range(passes):
        for j, doc in enumerate(iter_documents([plan.source.path], text_field=text_field)):
            if j >= plan.copies.shape[0]:
                raise LmkitError(f"mix source {plan.source.path} changed while mixing (more documents than counted)")
            if plan.copies[j] > k:
                yield doc.id, doc.text, int(plan.doc_tokens[j])


def iter_mix(plans: Sequence[SourcePlan], text_field: str = "text") -> Iterator[tuple[str, str, str, int]]:
    """(id, text, source name, tokens) of the mix, sources interleaved to keep the proportions."""
    streams = [_source_stream(p, text_field) for p in plans]
    emitted = [0] * len(plans)
    heads: list[tuple[str, str, int] | None] = [next(s, None) for s in streams]
    while True:
        best, best_ratio = -1, float("inf")
        for i, h in enumerate(heads):
            if h is None:
                continue
            ratio = emitted[i] / max(1, plans[i].target_tokens)
            if ratio < best_ratio:
                best, best_ratio = i, ratio
        if best < 0:
            return
        doc_id, text, toks = heads[best]  # type: ignore[misc]
        emitted[best] += toks
        yield doc_id, text, plans[best].source.name, toks
        heads[best] = next(streams[best], None)


def mix(
    sources: Sequence[MixSource],
    out: str | Path,
    total_tokens: int | None = None,
    *,
    seed: int = 0,
    tokenizer: str | None = None,
    text_field: str = "text",
    overwrite: bool = False,
    shard_docs: int = 100_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the mix into ``out`` (shards + report.json + report.md); returns the report."""
    from lmkit.progress import progress as progress_bar

    out = Path(out).expanduser()
    check_out_dir(out, overwrite, [s.path for s in sources], ours=OUR_FILES, kind="curate/mix output")
    count, counter_name = _counter(tokenizer)
    t0 = time.perf_counter()
    bar = progress_bar(desc="count tokens", unit="doc", disable=not progress)
    try:
        doc_tokens = [count_tokens(s, count, text_field, bar) for s in sources]
    finally:
        bar.close()
    plans = plan_mix(sources, doc_tokens, total_tokens, seed)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    writer = ShardWriter(tmp, shard_docs, 256_000_000, 5)
    got_tokens = [0] * len(plans)
    got_docs = [0] * len(plans)
    index = {p.source.name: i for i, p in enumerate(plans)}
    total_docs = int(sum(int(p.copies.sum()) for p in plans))
    bar = progress_bar(desc="mix", total=total_docs, unit="doc", disable=not progress)
    try:
        buf: list[tuple[str, str, str]] = []
        for doc_id, text, name, toks in iter_mix(plans, text_field):
            i = index[name]
            got_tokens[i] += toks
            got_docs[i] += 1
            buf.append((doc_id, text, name))
            if len(buf) >= 1000:
                writer.write(*zip(*buf))  # type: ignore[call-arg]
                bar.update(len(buf))
                buf = []
        if buf:
            writer.write(*zip(*buf))  # type: ignore[call-arg]
            bar.update(len(buf))
        files = writer.close()
        bar.close()
        realised = sum(got_tokens)
        report: dict[str, Any] = {
            "lmkit_version": __version__,
            "out": str(out),
            "seed": seed,
            "token_counter": counter_name,
            "target_tokens": int(sum(p.target_tokens for p in plans)),
            "requested_tokens": total_tokens,
            "realised_tokens": realised,
            "docs": int(sum(got_docs)),
            "sources": [
                {
                    "name": p.source.name,
                    "path": p.source.path,
                    "weight": p.source.weight,
                    "target_share": round(p.share, 6),
                    "available_docs": int(p.doc_tokens.shape[0]),
                    "available_tokens": p.available_tokens,
                    "target_tokens": p.target_tokens,
                    "realised_tokens": got_tokens[i],
                    "realised_share": round(got_tokens[i] / realised, 6) if realised else 0.0,
                    "docs": got_docs[i],
                    "sampling_factor": round(p.factor, 4),
                    "sampling": ("up-sampled" if p.factor > 1 else "down-sampled" if p.factor < 1 else "as is"),
                    "max_copies": int(p.copies.max()) if p.copies.size else 0,
                }
                for i, p in enumerate(plans)
            ],
            "output": {"shards": [f.name for f in files], "format": "jsonl.gz lines of {id, text, source}"},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(mix_markdown(report), encoding="utf-8")
        replace_dir(tmp, out)  # the old folder (checked to hold only OUR_FILES) goes in one step
        return report
    finally:
        bar.close()
        writer.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def mix_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Data mix",
        "",
        f"{r['docs']:,} documents, {r['realised_tokens']:,} tokens (target {r['target_tokens']:,}); "
        f"seed {r['seed']}; tokens counted with {r['token_counter']}.",
        "",
        "| source | path | target share | realised share | available tokens | target tokens | "
        "realised tokens | docs | sampling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in r["sources"]:
        lines.append(
            f"| {s['name']} | {s['path']} | {100 * s['target_share']:.2f}% | {100 * s['realised_share']:.2f}% "
            f"| {s['available_tokens']:,} | {s['target_tokens']:,} | {s['realised_tokens']:,} | {s['docs']:,} "
            f"| {s['sampling']} x{s['sampling_factor']:.3f} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["MixSource", "SourcePlan", "parse_sources", "count_tokens", "plan_mix", "iter_mix", "mix", "mix_markdown"]
