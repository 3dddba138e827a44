"""Jupyter widgets (ipywidgets 8) that edit iris_nb configuration values with live previews.

Each widget is usable alone, exposes the value it edits as ``.value`` (a package config
value), is observable with ``.observe(handler, names="value")``, shows bad input as a message
inside the widget instead of a traceback, and round-trips with the CLI config files through
``to_dict()`` / ``from_dict()``::

    from iris_nb.widgets import ReductionPicker
    picker = ReductionPicker(cube)     # mean | max, with the PV image of ``cube``
    picker                             # display it in a notebook cell
    picker.value                       # "mean" or "max"

Importing this module needs ipywidgets; nothing else in iris_nb imports it.
"""

from .base import ConfigWidget, ErrorMessage, render_png, report_errors
from .explorer import UNIT_CHOICES, ReversionExplorer
from .litter import SIDE_LABELS, LitterPicker, store_side
from .noise import NoisePicker, check_noise, noise_levels
from .reduction import REDUCTIONS, ReductionPicker
from .training import TrainingPanel

__all__ = [
    "ConfigWidget",
    "ErrorMessage",
    "LitterPicker",
    "NoisePicker",
    "REDUCTIONS",
    "ReductionPicker",
    "ReversionExplorer",
    "SIDE_LABELS",
    "TrainingPanel",
    "UNIT_CHOICES",
    "check_noise",
    "noise_levels",
    "render_png",
    "report_errors",
    "store_side",
]
