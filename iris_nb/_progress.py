"""Progress display for long loops: a live bar where someone watches, plain lines in logs.

:func:`progress_bar` gives a ``tqdm.auto`` bar on a terminal or in a notebook and a
:class:`LineProgress` elsewhere (torchrun rank logs, CI, piped output): newline-ended lines,
one every :data:`LINE_STEP` of the run or :data:`LINE_INTERVAL` seconds, never the
carriage-return redraws that pile up into one long garbled line in a log file.  Training
(:mod:`iris_nb.train.progress`), ``write_dataset`` and the dataset converters use it.
"""

from __future__ import annotations

import math
import sys
import time

__all__ = ["LINE_INTERVAL", "LINE_STEP", "LineProgress", "is_interactive", "progress_bar", "progress_iter"]

LINE_INTERVAL = 60.0
"""Seconds between two plain progress lines when no :data:`LINE_STEP` mark is passed."""
LINE_STEP = 0.1
"""Fraction of the run between two plain progress lines (10%)."""


def is_interactive(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is shown live: a terminal or a Jupyter cell."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def progress_bar(total: int | None, desc: str, unit: str = "batch", initial: int = 0, disable: bool = False,
                 stream=None):
    """A ``tqdm.auto`` bar on a terminal or in a notebook, else a :class:`LineProgress`.

    Both take ``update(n)``, ``set_postfix(**values)``, ``set_description(text)`` and ``close()``.
    """
    if disable or is_interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream)
    return LineProgress(total, desc, unit=unit, initial=initial, stream=stream)


class LineProgress:
    """Progress as plain lines for logs: ``desc: 40/100 batch (40%), 2.1 batch/s, 29 s left, loss=0.31``.

    A line is written when the count passes the next ``step`` of ``total`` (every 10%) or
    ``interval`` seconds after the last line, and once more by :meth:`close` unless the last
    line already showed the final count.  The rate is the average since the bar was made.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "batch", initial: int = 0, stream=None,
                 interval: float = LINE_INTERVAL, step: float = LINE_STEP) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.stream, self.interval, self.step = stream, float(interval), float(step)
        self.postfix: dict = {}
        self._start_n, self._start = self.n, time.monotonic()
        self._last_time, self._last_n, self._closed = self._start, None, False
        self._next_mark = self._mark_after(self.n)

    def _mark_after(self, n: int) -> float:
        if not self.total:
            return math.inf
        return (math.floor(n / self.total / self.step + 1e-9) + 1) * self.step

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; write a line when one is due."""
        self.n += int(n)
        now = time.monotonic()
        passed = bool(self.total) and self.n / self.total >= self._next_mark - 1e-9
        if passed or now - self._last_time >= self.interval:
            self._write(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        """Values shown at the end of the next line (``loss=0.31``)."""
        self.postfix = {**dict(ordered_dict or {}), **values}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        """Nothing: lines are written by :meth:`update` and :meth:`close` only."""

    def close(self) -> None:
        """Write the final line (unless the last one showed the same count)."""
        if not self._closed and self._last_n != self.n and self.n != self._start_n:
            self._write(time.monotonic())
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self, now: float | None = None) -> str:
        """The text of a progress line for the present count."""
        now = time.monotonic() if now is None else now
        done, elapsed = self.n - self._start_n, now - self._start
        parts = [f"{self.desc}: {self.n} {self.unit}"]
        if self.total:
            parts[0] = f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            if self.total and self.n < self.total:
                parts.append(f"{(self.total - self.n) / rate:.0f} s left")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _write(self, now: float) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(self.line(now) + "\n")
        stream.flush()
        self._last_time, self._last_n = now, self.n
        self._next_mark = self._mark_after(self.n)


def progress_iter(iterable, total: int | None, desc: str, unit: str = "batch", disable: bool = False):
    """Yield from ``iterable`` while a :func:`progress_bar` counts one per item."""
    bar = progress_bar(total, desc, unit=unit, disable=disable)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
