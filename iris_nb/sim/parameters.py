"""Drawing a gas model's parameters from its table of ranges.

A table maps each parameter name to ``(low, high, unit, meaning)``.  Every parameter is drawn
in table order -- integers uniformly from ``low..high``, the others uniformly in ``[low,
high)`` -- whether or not the caller fixes it, so fixing one leaves the draws of the others
unchanged for the same generator state.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["draw_parameters"]


def draw_parameters(rng: np.random.Generator, table: dict, integers, params: dict, model: str,
                    check: Callable[[str, object], object]) -> dict:
    """Draw every parameter of ``table``, then apply the caller's ``params``.

    ``integers`` names the integer parameters; ``check(name, value)`` validates an explicit
    value and returns it converted (raising with a clear message otherwise); ``model`` names
    the gas model in the error for unknown names (a :class:`TypeError` listing the valid ones).
    Returns a dict of plain floats and ints in the units of the table.
    """
    unknown = sorted(set(params) - set(table))
    if unknown:
        raise TypeError(f"{model} got unknown parameters {unknown}; valid names are {list(table)}")
    drawn = {name: int(rng.integers(low, high + 1)) if name in integers else float(rng.uniform(low, high))
             for name, (low, high, _, _) in table.items()}
    for name, value in params.items():
        drawn[name] = check(name, value)
    return drawn
