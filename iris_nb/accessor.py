"""The ``.iris`` accessor on :class:`xarray.DataArray` cubes.

Importing this module registers it (``import iris_nb`` does so).  Each method checks its
arguments and delegates to a plain function that is usable without the accessor:

=====================================  =============================================
``cube.iris.standardize()``            :func:`iris_nb.cube.standardize_cube`
``cube.iris.reduce(how="mean")``       :func:`iris_nb.cube.reduce_cube`
``cube.iris.regrid(grid_or_model)``    :func:`iris_nb.regrid.regrid_cube`
``cube.iris.revert(model, ...)``       :func:`iris_nb.reversion.revert`
``cube.iris.diagnose(model)``          :func:`iris_nb.diagnose.diagnose`
=====================================  =============================================
"""

from __future__ import annotations

import xarray as xr

from .cube import reduce_cube, standardize_cube
from .diagnose import diagnose
from .grids import Grid
from .regrid import regrid_cube
from .reversion import revert

__all__ = ["IrisAccessor"]


@xr.register_dataarray_accessor("iris")
class IrisAccessor:
    """IRIS operations on a cube ``DataArray`` with dims ``lon``, ``lat``, ``velocity``
    (any order, plus at most one leading stack dim) and ``attrs["units"]`` everywhere."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def standardize(self) -> xr.DataArray:
        """The cube as ``(extra?, lon, lat, velocity)``: lon (deg) in (-180, 180] ascending,
        lat (deg) and velocity (km/s) ascending, data in K.  See :func:`~iris_nb.cube.standardize_cube`."""
        return standardize_cube(self._obj)

    def reduce(self, how: str = "mean") -> xr.DataArray:
        """PV image ``(extra?, lon, velocity)`` in the cube's unit: NaN-aware ``"mean"`` or
        ``"max"`` over latitude.  See :func:`~iris_nb.cube.reduce_cube`."""
        if not isinstance(how, str):
            raise TypeError(f"how must be 'mean' or 'max', got {type(how).__name__}")
        return reduce_cube(self._obj, how)

    def regrid(self, grid_or_model) -> xr.DataArray:
        """The cube on a grid's (or a model's grid's) lon/lat/velocity pixel centres, same unit,
        flux-conserving and NaN-aware.  See :func:`~iris_nb.regrid.regrid_cube`."""
        grid = getattr(grid_or_model, "grid", grid_or_model)
        if not isinstance(grid, (Grid, str, dict)):
            raise TypeError(
                f"regrid needs a Grid, a preset name or a model with a .grid, got {type(grid_or_model).__name__}"
            )
        return regrid_cube(self._obj, grid)

    def revert(self, model, units="Msun/pc3", in_units=None, batch_size: int = 8, device=None,
               column_consistent: bool = False):
        """Top-down density ``(extra?, distance, lon)`` in ``units`` (DataArray); for a list of
        models a Dataset with ``mean``, ``std`` and ``members``; for a two-output model or a RIM
        a Dataset with ``density``, ``velocity_los`` and the consistency maps ``pv``,
        ``pv_model``, ``pv_residual``.  See :func:`~iris_nb.reversion.revert`."""
        if model is None:
            raise TypeError("revert needs a model: cube.iris.revert(iris_nb.Reverter.load(path))")
        return revert(self._obj, model, units=units, in_units=in_units, batch_size=batch_size, device=device,
                      column_consistent=column_consistent)

    def diagnose(self, model, in_units=None):
        """pandas DataFrame, one row per statistic: where the cube's PV image (prepared as
        ``revert`` prepares it) falls among the model's training inputs, with the training
        range and whether it lies inside.  See :func:`~iris_nb.diagnose.diagnose`."""
        if model is None:
            raise TypeError("diagnose needs a model: cube.iris.diagnose(iris_nb.Reverter.load(path))")
        return diagnose(self._obj, model, in_units=in_units)
