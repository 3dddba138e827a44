"""Jupyter widgets (ipywidgets 8) that edit iris_nb configuration values with live previews.

Each widget is usable alone, exposes the value it edits as ``.value`` (a package config
value), is observable with ``.observe(handler, names="value")``, shows bad input as a message
inside the widget instead of a traceback, and round-trips with the CLI config files through
``to_dict()`` / ``from_dict()``::

    from iris_nb.widgets import ReductionPicker
    picker = ReductionPicker(cube)     # mean | max, with the PV image of ``cube``
    picker                             # display it in a notebook cell
    picker.value                       # "mean" or "max"

The pickers (:class:`ReductionPicker`, :class:`NoisePicker`, :class:`LitterPicker`), the
:class:`TrainingPanel` that trains through :func:`iris_nb.train.run_training`, and the
:class:`ReversionExplorer` are what a notebook types; the building blocks stay importable from
their modules (:mod:`iris_nb.widgets.base`, ``.noise``, ``.litter``...).

Importing this module needs ipywidgets; nothing else in iris_nb imports it.
"""

from .explorer import ReversionExplorer
from .litter import LitterPicker
from .noise import NoisePicker
from .reduction import REDUCTIONS, ReductionPicker
from .training import TrainingPanel

__all__ = [
    "LitterPicker",
    "NoisePicker",
    "REDUCTIONS",
    "ReductionPicker",
    "ReversionExplorer",
    "TrainingPanel",
]

# Names this package listed before; importable here still, advertised in their modules.
_MOVED = {
    "ConfigWidget": "base", "ErrorMessage": "base", "render_png": "base", "report_errors": "base",
    "UNIT_CHOICES": "explorer", "SIDE_LABELS": "litter", "store_side": "litter",
    "check_noise": "noise", "noise_levels": "noise",
}


def __getattr__(name):
    """``from iris_nb.widgets import render_png`` and the like keep working (see ``_MOVED``)."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
