"""Progress bars that suit where stderr goes: lmkit's one way to show progress on long work.

``progress(...)`` takes tqdm's common arguments (an iterable, ``total``, ``desc``, ``unit``,
``initial``, ``unit_scale``, ``unit_divisor``, ``disable``) and returns:

- on a terminal: a tqdm bar, redrawn in place as usual;
- anywhere else (``make demo | tee demo.log``, a CI log, a file): a :class:`LineProgress` that
  prints whole lines, never carriage-return redraws: one when the work starts, one each time it
  crosses another ``STEP_PERCENT`` percent of ``total`` (or, with no total or slow progress, at most
  every ``EVERY_SECONDS`` seconds while it advances), and a last one when it closes. The line of
  finished work (100%) is printed once, by ``close``, with the postfix set after the last update
  (a bar that is complete but not closed prints no 100% line). A bar of any length so writes at
  most about 100 / STEP_PERCENT + 1 lines plus one per ``EVERY_SECONDS``.

Both answer ``update``, ``set_postfix``, ``set_postfix_str``, ``set_description``, ``close``,
``n``, iteration and ``with``. tqdm is imported only when a bar is drawn on a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

STEP_PERCENT = 5.0  # a line each time the work crosses another 5% of its total
EVERY_SECONDS = 30.0  # and at most this often in between, while it advances


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is a terminal: where a bar may redraw itself in place (also the test for
    bars drawn by other libraries, such as the tokenizer trainer's)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _size(x: float, unit_scale: bool, divisor: int) -> str:
    if not unit_scale:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"
    from tqdm import tqdm  # the same k/M/G figures a bar on a terminal shows

    return str(tqdm.format_sizeof(x, divisor=divisor))


def _rate(r: float, unit_scale: bool, divisor: int) -> str:
    if unit_scale:
        return _size(r, True, divisor)
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def _clock(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class LineProgress:
    """A progress report in whole lines, for a stderr that is not a terminal (see the module doc)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        unit_scale: bool = False,
        unit_divisor: int = 1000,
        disable: bool = False,
        file: TextIO | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc, self.unit = desc, unit
        self.unit_scale, self.unit_divisor = unit_scale, unit_divisor
        self.disable = disable
        self.file = file
        self.n: float = initial
        self.postfix = ""
        self.start = time.monotonic()
        self._initial = initial
        self._last_time = self.start
        self._last_n: float | None = None
        self._last_postfix = ""
        self._bucket = self._bucket_of(initial)
        self.closed = False
        self._emit()

    def _bucket_of(self, n: float) -> int:
        return int(100.0 * n / self.total // STEP_PERCENT) if self.total else 0

    def line(self) -> str:
        """The line this bar prints for its state at the call: desc, percent and count, elapsed time,
        rate, postfix."""
        elapsed = time.monotonic() - self.start
        done = self.n - self._initial
        n = _size(self.n, self.unit_scale, self.unit_divisor)
        unit = self.unit.strip()
        if self.total:  # as tqdm: the unit after a bare count, and in the rate
            head = f"{100.0 * self.n / self.total:3.0f}% {n}/{_size(self.total, self.unit_scale, self.unit_divisor)}"
        else:
            head = f"{n} {unit}"
        rate = (
            f", {_rate(done / elapsed, self.unit_scale, self.unit_divisor)} {unit}/s"
            if elapsed > 0 and done > 0
            else ""
        )
        eta = ""
        if self.total and done > 0 and self.n < self.total:
            eta = f" <{_clock((self.total - self.n) * elapsed / done)}"
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc + ': ' if self.desc else ''}{head} [{_clock(elapsed)}{eta}{rate}{post}]"

    def _emit(self) -> None:
        if self.disable:
            return
        print(self.line(), file=self.file if self.file is not None else sys.stderr, flush=True)
        self._last_time, self._last_n, self._last_postfix = time.monotonic(), self.n, self.postfix

    def update(self, k: float = 1) -> None:
        """Advance by ``k``; print a line when another step of the total is crossed or time is up
        (never at the total itself: ``close`` prints that line)."""
        self.n += k
        if self.disable or self.closed:
            return
        if self.total and self.n >= self.total:
            return  # the 100% line is close()'s, so that it is printed once, with the final postfix
        bucket = self._bucket_of(self.n)
        if bucket > self._bucket or (time.monotonic() - self._last_time >= EVERY_SECONDS and self.n != self._last_n):
            self._bucket = bucket
            self._emit()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Shown at the end of the next line: ``key=value, ...`` (as tqdm's)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Shown at the end of the next line."""
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        """Print the last line (unless nothing changed since the previous one)."""
        if self.closed:
            return
        self.closed = True
        if not self.disable and (self.n != self._last_n or self.postfix != self._last_postfix):
            self._emit()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress report wraps no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    unit_scale: bool = False,
    unit_divisor: int = 1000,
    disable: bool = False,
    mininterval: float = 0.1,
    file: TextIO | None = None,
) -> Any:
    """A progress bar on stderr: tqdm on a terminal, :class:`LineProgress` lines elsewhere.

    ``file``: where to write (default sys.stderr, looked up at call time so a redirected stderr
    is honoured). Returns an object with tqdm's ``update`` / ``set_postfix`` / ``close`` / ``n``.
    """
    stream = file if file is not None else sys.stderr
    if not disable and is_terminal(stream):
        from tqdm import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc or None,
            unit=unit,
            initial=initial,
            unit_scale=unit_scale,
            unit_divisor=unit_divisor,
            file=stream,
            dynamic_ncols=True,
            mininterval=mininterval,
        )
    return LineProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        unit_scale=unit_scale,
        unit_divisor=unit_divisor,
        disable=disable,
        file=file,
    )


__all__ = ["EVERY_SECONDS", "STEP_PERCENT", "LineProgress", "is_terminal", "progress"]
