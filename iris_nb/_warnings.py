"""Where a warning should point: the user's line, not the package's."""

from __future__ import annotations

import os
import sys

import torch

_SKIPPED = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(torch.__file__) + os.sep)


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that names the first frame
    outside iris_nb and torch (``observer(fields)`` passes through ``nn.Module.__call__``)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_SKIPPED):
        frame, level = frame.f_back, level + 1
    return level
