"""What a pre-training run records about itself: :func:`run_meta`, the body of each checkpoint's
meta.json (what was trained, on what, how far, at what precision and memory), and
:func:`curation_summary`, the curation figures of its data.

What this module owns: the record describes the run as it stands when the checkpoint is written
(step, tokens and FLOPs so far, the last logged training loss, the latest evaluation), the data it
was trained on (paths, token counts per split and per source, bytes per token, ``lmkit curate``'s
totals for curated folders, the fingerprint ``--resume`` checks, each ``--new-data`` switch), and
the peak memory measured beside ``lmkit plan``'s prediction. It reads the run (:class:`RecordedRun`,
which ``lmkit.train.loop.Trainer`` is) and changes nothing; the checkpoint's layout fields are
``lmkit.train.checkpoint.layout_record``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from lmkit.config import RunConfig
from lmkit.data.shards import TokenShards
from lmkit.tokenizer import Tokenizer
from lmkit.train.distributed import Dist, hardware_summary
from lmkit.train.steps import Horizon


def curation_summary(paths: list[str]) -> dict[str, Any] | None:
    """The overall figures of ``lmkit curate``'s report.json for curated input folders, if any."""
    totals: dict[str, Any] = {}
    for p in paths:
        report = Path(p) / "report.json"
        if report.is_file():
            try:
                totals[str(p)] = json.loads(report.read_text(encoding="utf-8")).get("totals")
            except (OSError, ValueError):
                continue
    if not totals:
        return None
    return next(iter(totals.values())) if len(totals) == 1 else totals


class RecordedRun(Protocol):
    """What a training run offers its record (``lmkit.train.loop.Trainer`` is one)."""

    @property
    def cfg(self) -> RunConfig: ...
    @property
    def step(self) -> int: ...
    @property
    def tokens_per_step(self) -> int: ...
    @property
    def flops_per_token(self) -> float: ...
    @property
    def n_params(self) -> int: ...
    @property
    def precision_choice(self) -> str: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def dist(self) -> Dist: ...
    @property
    def horizon(self) -> Horizon: ...
    @property
    def history(self) -> dict[str, Any]: ...
    @property
    def train_shards(self) -> TokenShards: ...
    @property
    def val_shards(self) -> TokenShards: ...
    @property
    def tokenizer(self) -> Tokenizer: ...
    @property
    def init_from(self) -> Path | None: ...
    @property
    def base_model(self) -> Any: ...
    @property
    def data_fingerprint(self) -> dict[str, Any]: ...
    @property
    def data_changes(self) -> list[dict[str, Any]]: ...
    def memory_report(self) -> dict[str, Any]: ...


def run_meta(t: RecordedRun, last: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """meta.json's record of the run ``t`` after ``elapsed`` seconds, ``last`` its last logged metrics."""
    tokens = t.step * t.tokens_per_step
    return {
        "step": t.step,
        "tokens": tokens,
        "flops": tokens * t.flops_per_token,
        "flops_per_token": t.flops_per_token,
        "params": t.n_params,
        "family": t.cfg.model.family,
        "objective": t.cfg.model.objective,
        "wall_time_s": elapsed,
        "precision": t.cfg.train.precision,
        "precision_choice": t.precision_choice,
        "hardware": hardware_summary(t.device, t.dist),
        "horizon": {"steps": t.horizon.steps, "reason": t.horizon.reason},
        "train_loss": last.get("loss"),
        "eval": t.history.get("eval", {}),
        "data": {
            "paths": t.cfg.data.paths,
            "train_tokens": t.train_shards.num_tokens,
            "val_tokens": t.val_shards.num_tokens,
            "sources": t.train_shards.meta.get("tokens_per_source", {}),
            "bytes_per_token": t.train_shards.bytes_per_token,
            "curation": curation_summary(t.cfg.data.paths),
        },
        "tokenizer_sha256": t.tokenizer.sha256,
        "init_from": str(t.init_from) if t.init_from else None,
        "base_model": t.base_model,  # the foundation model it descends from (lmkit.ship.hf_source)
        "data_fingerprint": t.data_fingerprint,  # checked by --resume (lmkit.train.resume)
        "data_changes": t.data_changes,  # each --resume --new-data that switched the data
        "memory": t.memory_report(),  # measured peak beside lmkit plan's prediction
    }


__all__ = ["RecordedRun", "curation_summary", "run_meta"]
