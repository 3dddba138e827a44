"""How a training run reports: callbacks, the progress display, and the lines ``launch`` reads.

* :func:`check_callbacks` accepts what ``train_reverter(callbacks=...)`` may be given.
* :func:`progress_bar` is a ``tqdm.auto`` bar where someone watches (a terminal, a notebook)
  and a :class:`LineProgress` elsewhere (torchrun rank logs, CI, piped output): plain
  newline-ended lines, one every :data:`LINE_STEP` of the run or :data:`LINE_INTERVAL` seconds,
  never the carriage-return redraws that pile up into one long garbled line in a log file.
* :func:`progress_printer` is the callback rank 0 runs under :func:`~iris_nb.train.launch.launch`:
  one ``IRIS_PROGRESS {json}`` line per event, which ``launch`` turns back into a bar.
"""

from __future__ import annotations

import json
import sys

from .._progress import LINE_INTERVAL, LINE_STEP, LineProgress, is_interactive, progress_bar  # noqa: F401

__all__ = ["PROGRESS_PREFIX", "LINE_INTERVAL", "LINE_STEP", "LineProgress", "check_callbacks", "is_interactive",
           "progress_bar", "progress_printer"]

PROGRESS_PREFIX = "IRIS_PROGRESS "
"""Start of the machine-readable progress lines rank 0 prints (followed by one JSON object)."""

def check_callbacks(callbacks) -> tuple:
    """A tuple of callables ``cb(event, info)`` (one callable alone is accepted too)."""
    if callbacks is None:
        return ()
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables cb(event, info), got {type(callback).__name__}")
    return callbacks


def progress_printer(stream=None):
    """A training callback that prints one ``IRIS_PROGRESS {json}`` line per event.

    :func:`~iris_nb.train.launch.launch` reads these lines from rank 0 to drive its progress
    bar.  Values that are not JSON numbers, strings or booleans are left out; the
    ``train_end`` line carries only the event name.
    """

    def callback(event: str, info: dict):
        plain = {} if event == "train_end" else {
            k: v for k, v in dict(info or {}).items()
            if isinstance(v, (int, float, str, bool)) or v is None}
        out = stream if stream is not None else sys.stdout
        out.write(PROGRESS_PREFIX + json.dumps({"event": event, **plain}) + "\n")
        out.flush()
        return None

    return callback
