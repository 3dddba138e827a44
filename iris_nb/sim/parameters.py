"""The parameter tables of the gas models, and drawing and checking parameters from them.

A gas model (:func:`~iris_nb.sim.cmz.make_cmz`, :func:`~iris_nb.sim.litter.make_litter`)
declares its parameters once, as a text table read by :meth:`ParameterTable.parse`::

    name          | low  | high | kind | unit          | description
    density_scale | 0.25 | 1.0  | >=0  |               | overall factor multiplying every density
    cloud_count   | 5    | 30   | int  |               | number of dense clouds on the ring
                  |      |      |      |               | (a row with no name continues the description)

The result is a dict ``name -> (low, high, description, unit)`` in table order, plus each
parameter's ``kind``: ``int`` (a non-negative integer), ``>0``, ``>=0`` or ``any``.  Every
parameter is drawn in table order -- integers uniformly from ``low..high``, the others
uniformly in ``[low, high)`` -- whether or not the caller fixes it, so fixing one leaves the
draws of the others unchanged for the same generator state.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np

__all__ = ["ParameterTable", "KINDS", "draw_parameters"]

KINDS = {"int": "a non-negative integer", ">0": "> 0", ">=0": ">= 0", "any": "a real number"}
"""The kinds of parameter a table may declare, and what each must be."""


class ParameterTable(dict):
    """``name -> (low, high, description, unit)`` of a gas model, in drawing order.

    ``kinds`` maps each name to one of :data:`KINDS`.  :meth:`check` validates an explicit
    value by its kind, :meth:`draw` draws every parameter and applies the explicit ones.
    """

    def __init__(self, rows: dict, kinds: dict) -> None:
        super().__init__(rows)
        unknown = {name: kind for name, kind in kinds.items() if kind not in KINDS}
        if set(kinds) != set(rows) or unknown:
            raise ValueError(f"every parameter needs one kind of {list(KINDS)}; got {kinds}")
        self.kinds = dict(kinds)

    @classmethod
    def parse(cls, text: str) -> "ParameterTable":
        """A table from rows ``name | low | high | kind | unit | description`` (first row: header).

        ``low``/``high`` are ints for ``int`` parameters, else floats; a row with an empty
        name continues the description of the row above (joined with one space).
        """
        lines = [line for line in text.strip().splitlines() if line.strip()]
        rows, kinds, last = {}, {}, None
        for line in lines[1:]:
            cells = [cell.strip() for cell in line.split("|", 5)]
            if len(cells) != 6:
                raise ValueError(f"a parameter row has 6 cells separated by '|', got {line!r}")
            name, low, high, kind, unit, description = cells
            if not name:
                if last is None:
                    raise ValueError(f"a continuation row needs a parameter row above it: {line!r}")
                low_, high_, text_, unit_ = rows[last]
                rows[last] = (low_, high_, f"{text_} {description}", unit_)
                continue
            number = int if kind == "int" else float
            rows[name], kinds[name], last = (number(low), number(high), description, unit), kind, name
        return cls(rows, kinds)

    @property
    def integers(self) -> set:
        """Names of the integer parameters."""
        return {name for name, kind in self.kinds.items() if kind == "int"}

    def check(self, name: str, value, model: str, kind: str | None = None):
        """An explicit value of parameter ``name`` of ``model``: an int for ``int`` parameters,
        else a float; TypeError for a non-number, ValueError for one its kind forbids.
        ``kind`` overrides the table's (for a derived parameter that has no row)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise TypeError(f"{model} parameter {name}={value!r} must be a finite real number")
        kind = self.kinds[name] if kind is None else kind
        bad = {"int": value < 0 or int(value) != value, ">0": value <= 0, ">=0": value < 0, "any": False}[kind]
        if bad:
            raise ValueError(f"{model} parameter {name}={value!r} must be {KINDS[kind]} "
                             f"(typical range {self[name][:2] if name in self else 'not tabulated'})")
        return int(value) if kind == "int" else float(value)

    def draw(self, rng: np.random.Generator, params: dict, model: str,
             check: Callable[[str, object], object] | None = None) -> dict:
        """Every parameter drawn in table order, then ``params`` applied (see :func:`draw_parameters`);
        ``check`` defaults to :meth:`check`."""
        check = check or (lambda name, value: self.check(name, value, model))
        return draw_parameters(rng, self, self.integers, params, model, check)


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
