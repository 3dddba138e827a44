"""Field normalisation, file I/O and pre-flight checks behind :class:`iris_nb.train.run.RunConfig`."""

from __future__ import annotations

import os
from pathlib import Path

from ..grids import Grid

__all__ = ["RunConfigError", "check_run_files", "store_summary"]


class RunConfigError(ValueError):
    """A run config is malformed, or names files that do not fit together."""


# ---------------------------------------------------------------------- fields


def as_path(value, name: str) -> str:
    """A non-empty path given as str or os.PathLike, returned as str."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise RunConfigError(f"RunConfig.{name} must be a non-empty path, got {value!r}")
    return value


def as_paths(value, name: str) -> tuple[str, ...]:
    """One path or a non-empty list of paths, returned as a tuple of str."""
    if isinstance(value, (str, os.PathLike)):
        return (as_path(value, name),)
    if isinstance(value, (list, tuple)) and value:
        return tuple(as_path(item, f"{name}[{i}]") for i, item in enumerate(value))
    raise RunConfigError(f"RunConfig.{name} must be a store path or a non-empty list of paths, got {value!r}")


# ---------------------------------------------------------------------- files


# ---------------------------------------------------------------------- checks


def store_summary(path: str) -> dict:
    """Grid, reduction and number of finished samples of a dataset store (metadata only).

    Returns ``{"grid": Grid, "reduction": str, "n": int}``; raises :class:`RunConfigError`
    when ``path`` is missing, is not a dataset store, or holds no finished sample.
    """
    from ..data.layout import store_info

    try:
        info = store_info(path)
    except FileNotFoundError:
        raise RunConfigError(f"dataset store {path} does not exist; write it with "
                             "iris_nb.data.write_dataset(path, n, grid) or fix the path in the run config") from None
    except (ValueError, KeyError, OSError) as err:
        raise RunConfigError(f"{path} cannot be used as a dataset store: {err}") from None
    if info.n_done == 0:
        raise RunConfigError(f"dataset store {path} holds no finished sample yet; run write_dataset on it "
                             "again to finish it")
    return {"grid": info.grid, "reduction": info.reduction, "n": info.n_done}


def _grid_difference(a: Grid, b: Grid) -> str:
    fields = ("distance", "lon", "lat", "velocity", "observer_distance", "rest_frequency", "beam_fwhm", "line")
    return ", ".join(f"{f}: {getattr(a, f)} vs {getattr(b, f)}" for f in fields if getattr(a, f) != getattr(b, f))


def check_run_files(run) -> Grid:
    """Pre-flight checks of a :class:`~iris_nb.train.run.RunConfig`; returns its grid."""
    summaries = [(path, store_summary(path)) for path in run.dataset]
    first_path, first = summaries[0]
    grid = first["grid"]
    for path, info in summaries[1:]:
        if info["grid"] != grid:
            raise RunConfigError(f"dataset stores {first_path} and {path} are on different grids "
                                 f"({_grid_difference(grid, info['grid'])}); train on stores of one grid")
    if run.grid is not None and run.grid != grid:
        raise RunConfigError(f"RunConfig.grid {run.grid.name!r} differs from the grid of store {first_path} "
                             f"({_grid_difference(run.grid, grid)}); set grid: null to use the store's grid "
                             "or write the store on the run's grid")
    for path, info in summaries:
        if info["reduction"] not in (None, run.reduction):
            raise RunConfigError(f"store {path} holds PV images reduced with {info['reduction']!r} but the run "
                                 f"has reduction {run.reduction!r}; set reduction: {info['reduction']}")
    if run.litter is not None:
        for path in run.litter.paths:
            info = store_summary(path)
            if info["grid"].pv_shape != grid.pv_shape:
                raise RunConfigError(f"litter store {path} has PV images of shape {info['grid'].pv_shape} "
                                     f"but the run's grid needs {grid.pv_shape}; write the litter on a grid "
                                     "with the same lon and velocity axes")
    if run.init is not None:
        _check_init(run.init, grid, run.reduction)
    return grid


def _check_init(path: str, grid: Grid, reduction: str) -> None:
    from ..model.model_file import ModelFileError, load_reverter

    target = Path(path)
    if not target.is_file():
        raise RunConfigError(f"init model file {target} does not exist; give a file written by "
                             "Reverter.save or set init: null to start from random weights")
    try:
        model = load_reverter(target, grid=grid)
    except ModelFileError as err:
        raise RunConfigError(f"init: {err}") from None
    if model.grid != grid:
        raise RunConfigError(f"init model {target} was made for another grid "
                             f"({_grid_difference(model.grid, grid)}); start from a model on the "
                             "dataset's grid or set init: null")
    if model.reduction != reduction:
        raise RunConfigError(f"init model {target} uses reduction {model.reduction!r} but the run uses "
                             f"{reduction!r}; set reduction: {model.reduction} or choose another model")
