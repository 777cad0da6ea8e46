"""Stopping a run cleanly: while a run trains, SIGINT/SIGTERM only ask it to stop after the
current step (``StopSignals``); the loop then saves a checkpoint and raises ``TrainingInterrupted``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run after a step; ``checkpoint`` is where it was saved."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM only record that a stop was asked
    for, in ``signum``; the loop stops after its current step. A second one of the same signal
    acts as it would have before (Ctrl-C twice interrupts at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        signal.signal(signum, self._restore(signum))

    def _restore(self, signum: int) -> Any:
        prev = self._previous.get(signum)
        return prev if prev is not None else signal.SIG_DFL

    def __exit__(self, *exc: object) -> None:
        for sig in self._previous:
            signal.signal(sig, self._restore(sig))
