"""The out-of-distribution guard: does a cube look like what the model was trained on?

A trained :class:`~iris_nb.model.Reverter` carries summary statistics of its training inputs
(``model.input_statistics``, see :mod:`iris_nb.model.input_statistics`: PV intensity
quantiles, emission fraction, velocity extent per longitude, line width and the sign of the
longitude-velocity correlation).  :func:`diagnose` prepares a cube exactly as
:func:`~iris_nb.reversion.revert` does (standardise, regrid, reduce, convert to the model's
input unit) and returns a table of where its PV image falls among them;
``revert`` warns with :class:`OutOfDistributionWarning` when a statistic lies outside the
training range, since the network then extrapolates.  Models without statistics (trained
before they were recorded, bare IRIS state dicts) are not checked.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ._warnings import user_stacklevel
from .model.input_statistics import STATISTICS, InputStatistics, pv_statistics
from .reversion import PreparedInputs, check_models, prepare_inputs

__all__ = ["OutOfDistributionWarning", "diagnose", "input_table", "warn_out_of_distribution"]

COLUMNS = ("value", "unit", "low", "high", "training_median", "percentile", "inside")
_NO_STATISTICS = ("the model has no input statistics (trained before iris_nb recorded them, or a bare state "
                  "dict): nothing to compare the cube with; retrain it, or set model.input_statistics = "
                  "InputStatistics.from_inputs(training_pvs, model.grid)")


class OutOfDistributionWarning(UserWarning):
    """A cube's PV image lies outside the range of the model's training inputs."""


def diagnose(cube, model_or_models, in_units=None) -> pd.DataFrame:
    """Where the cube's PV image falls among the model's training inputs.

    Parameters
    ----------
    cube:
        Cube ``(extra?, lon, lat, velocity)`` as for :func:`~iris_nb.reversion.revert` (any
        dim order and units; one optional leading stack dim).
    model_or_models:
        A :class:`~iris_nb.model.Reverter` or a list of them (an ensemble: the union of the
        members' ranges).
    in_units:
        Unit of the cube data, overriding ``cube.attrs["units"]``.

    Returns
    -------
    pandas.DataFrame with one row per statistic (index ``statistic``; for a stack, a
    MultiIndex ``(stack dim, statistic)``) and columns ``value`` (the cube's, in ``unit``:
    the model's input unit for intensities, km/s for velocities), ``low`` and ``high`` (the
    training range), ``training_median``, ``percentile`` (0-100 among the training inputs,
    interpolated) and ``inside`` (nullable boolean; ``<NA>`` for a model without statistics,
    whose ranges are NaN).  ``table.attrs["note"]`` says which ranges were used.
    """
    models, _ = check_models(model_or_models)
    prepared = prepare_inputs(cube, models, in_units=in_units)
    return input_table(prepared, models)


def _stack_labels(prepared: PreparedInputs):
    pv = next(iter(prepared.pvs.values()))[0]
    if pv.ndim != 3:
        return None, None
    name = str(pv.dims[0])
    labels = pv.coords[name].values if name in pv.coords else np.arange(pv.shape[0])
    return name, list(labels)


def input_table(prepared: PreparedInputs, models: list) -> pd.DataFrame:
    """The table of :func:`diagnose` for inputs already made by
    :func:`~iris_nb.reversion.prepare_inputs`."""
    checked = [m for m in models if getattr(m, "input_statistics", None) is not None]
    first = checked[0] if checked else models[0]
    grid = first.grid
    values = pv_statistics(prepared.model_inputs(first), grid)
    # a statistic is inside when it is inside the range of any checked member (each on its own inputs)
    member_values = [values] + [pv_statistics(prepared.model_inputs(m), grid) for m in checked[1:]]
    stats = InputStatistics.union([m.input_statistics for m in checked]) if checked else None
    stack_name, labels = _stack_labels(prepared)
    n = len(values["intensity_p99"])
    rows, index = [], []
    for i in range(n):
        for name in STATISTICS:
            value = float(values[name][i])
            if stats is None:
                unit = first.input_unit.to_string() if STATISTICS[name][0] == "input" else STATISTICS[name][0]
                row = (value, unit, math.nan, math.nan, math.nan, math.nan, pd.NA)
            else:
                inside = any(m.input_statistics.inside(name, float(v[name][i])) for m, v in zip(checked, member_values))
                low, high = stats.ranges[name]
                median = stats.quantiles[name][stats.levels.index(0.5)]
                row = (value, stats.unit_of(name), low, high, median, stats.percentile(name, value), inside)
            rows.append(row)
            index.append((labels[i], name) if labels is not None else name)
    if labels is not None:
        index = pd.MultiIndex.from_tuples(index, names=[stack_name, "statistic"])
    else:
        index = pd.Index(index, name="statistic")
    table = pd.DataFrame(rows, index=index, columns=list(COLUMNS))
    table["inside"] = table["inside"].astype("boolean")
    if not checked:
        note = _NO_STATISTICS
    elif len(models) > 1:
        note = f"union of the training ranges of the {len(checked)} ensemble members with input statistics"
        if len(checked) < len(models):
            note += f" ({len(models) - len(checked)} members have none)"
    else:
        note = f"training range of the model: {stats.source or f'{stats.n_samples} training inputs'}"
    table.attrs["note"] = note
    return table


def _format(value: float) -> str:
    return f"{value:.3g}"


def _describe(table: pd.DataFrame, name: str, stacked: bool) -> str:
    rows = table.xs(name, level="statistic") if stacked else table.loc[[name]]
    outside = rows[rows["inside"] == False]  # noqa: E712  (nullable booleans)
    unit = rows["unit"].iloc[0]
    low, high = rows["low"].iloc[0], rows["high"].iloc[0]
    values = outside["value"].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size:
        centre = 0.5 * (low + high)
        worst = finite[np.argmax(np.abs(finite - centre))] if math.isfinite(centre) else finite[0]
        shown = f"{name} = {_format(worst)}{' ' + unit if unit else ''}"
    else:
        shown = f"{name} undefined, no emission above the noise"
    where = f" in {len(outside)} of {len(rows)} cubes" if stacked else ""
    return f"{shown}{where} (training range {_format(low)} to {_format(high)}{' ' + unit if unit else ''})"


def warn_out_of_distribution(prepared: PreparedInputs, models: list, ensemble: bool = False) -> pd.DataFrame | None:
    """Warn (:class:`OutOfDistributionWarning`, one warning) naming each statistic outside
    the training range; returns the table (``None`` when no model has statistics)."""
    if not any(getattr(m, "input_statistics", None) is not None for m in models):
        return None
    table = input_table(prepared, models)
    stacked = isinstance(table.index, pd.MultiIndex)
    outside = table[table["inside"] == False]  # noqa: E712
    if outside.empty:
        return table
    names = list(dict.fromkeys(outside.index.get_level_values("statistic")))
    what = (f"the union of the training ranges of the {len(models)}-member ensemble" if ensemble
            else "the training range of the model")
    message = (f"the cube's PV image is outside {what} in {len(names)} statistic"
               f"{'s' if len(names) > 1 else ''}: " + "; ".join(_describe(table, n, stacked) for n in names)
               + ". The reversion extrapolates beyond what the model was trained on; see "
               "cube.iris.diagnose(model) and check the cube's units, velocity convention and signal.")
    warnings.warn(message, OutOfDistributionWarning, stacklevel=user_stacklevel())
    return table
