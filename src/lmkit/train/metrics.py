"""Training metrics: the metrics.jsonl writer, reading it back and plotting the loss curve."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _metric_records(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each whole JSON object line; a line torn by a kill mid-write is dropped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


class Metrics:
    """metrics.jsonl (appended, truncated back to the checkpoint on resume) and TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool, resume_step: int | None) -> None:
        self.path = out / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            kept = [
                line
                for line, rec in _metric_records(text)
                if isinstance(rec.get("step", 0), int) and rec.get("step", 0) <= resume_step
            ]
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.file = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                self.tb = None

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [rec for _, rec in _metric_records(path.read_text(encoding="utf-8", errors="replace"))]


def plot_loss_curve(run_dir: str | Path, out_png: str | Path | None = None) -> Path | None:
    """Training loss (and held-out loss) against tokens seen, as a PNG beside the metrics."""
    records = read_metrics(run_dir)
    train = [(r["tokens"], r["loss"]) for r in records if "loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(*zip(*train), label="training loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="held-out loss", lw=1.5, ms=4)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"Loss curve: {Path(run_dir).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png) if out_png else Path(run_dir) / "loss_curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out
