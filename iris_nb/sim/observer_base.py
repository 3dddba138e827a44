"""The shared front end of the synthetic observers: input checks and the xarray interface."""

from __future__ import annotations

import json

import numpy as np
import torch
import xarray as xr

from ..grids import Grid
from .fields import field_tensors, validate_field

__all__ = ["Observer", "SKY_DIMS"]

SKY_DIMS = ("lon", "lat", "velocity")
_SKY_DIMS = SKY_DIMS


class Observer(torch.nn.Module):
    """Shared input checks and the xarray front end of the observers."""

    units = ""
    input_space = ""
    required: tuple = ()

    def __init__(self, grid: Grid):
        super().__init__()
        if not isinstance(grid, Grid):
            raise TypeError(f"an observer needs an iris_nb.grids.Grid, got {type(grid).__name__}; "
                            "use e.g. iris_nb.grids.SMALL")
        self.grid = grid

    def __call__(self, fields, *args, **kwargs):
        """Observe a dict of ``(B, distance, lon, lat)`` tensors (the torch forward), or an xarray
        field or list of fields (the same as :meth:`observe`, which returns a DataArray)."""
        if isinstance(fields, xr.Dataset) or (isinstance(fields, (list, tuple)) and fields
                                               and all(isinstance(f, xr.Dataset) for f in fields)):
            return self.observe(fields, *args, **kwargs)
        return super().__call__(fields, *args, **kwargs)

    @property
    def config(self) -> dict:
        """JSON-ready description of the observer (class name and settings, not the grid)."""
        return {"observer": type(self).__name__}

    def _beam_applied(self) -> float:
        return 0.0

    def _check_fields(self, fields) -> dict:
        """Validate the dict of ``(B, distance, lon, lat)`` tensors; return it (floating, same device)."""
        if not isinstance(fields, dict):
            raise TypeError(f"{type(self).__name__} takes a dict of (B, distance, lon, lat) tensors "
                            f"(iris_nb.sim.fields.field_tensors) or an xarray field Dataset, got "
                            f"{type(fields).__name__}")
        missing = [k for k in self.required if k not in fields]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the field variables {list(self.required)}; "
                             f"missing {missing} (make the dict with field_tensors)")
        g = self.grid
        expected = (g.distance.steps, g.lon.steps, g.lat.steps)
        first = fields[self.required[0]]
        for name in self.required + tuple(k for k in ("temperature_dust",) if k in fields):
            t = fields[name]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"field variable {name!r} must be a torch.Tensor, got {type(t).__name__}")
            if t.ndim != 4 or tuple(t.shape[1:]) != expected:
                raise ValueError(f"field variable {name!r} has shape {tuple(t.shape)}; the grid expects "
                                 f"(B, distance, lon, lat) = (B, {expected[0]}, {expected[1]}, {expected[2]}); "
                                 "make the field on this observer's grid or build the observer on the field's grid")
            if t.shape[0] != first.shape[0] or t.device != first.device or t.dtype != first.dtype:
                raise ValueError(f"field variable {name!r} ({tuple(t.shape)}, {t.dtype}, {t.device}) does not "
                                 f"match {self.required[0]!r} ({tuple(first.shape)}, {first.dtype}, {first.device}); "
                                 "give every variable the same batch size, dtype and device")
            if not t.is_floating_point():
                raise TypeError(f"field variable {name!r} must be a floating-point tensor, got {t.dtype}")
            if bool(torch.isnan(t.detach()).any()):
                raise ValueError(f"field variable {name!r} holds NaN cells; fill them (e.g. density 0) "
                                 "before observing")
        return fields

    def _extra_dims(self) -> dict:
        """Leading output dims after the batch (name -> coordinate values); none by default."""
        return {}

    def observe(self, field_or_fields, device=None, dtype=torch.float32) -> xr.DataArray:
        """Observe one field (or a list of fields) given as xarray Datasets.

        Parameters
        ----------
        field_or_fields:
            A physical field (:mod:`iris_nb.sim.fields`) on this observer's grid, or a list of them.
        device, dtype:
            Where and in what precision to compute (default CPU, float32).

        Returns
        -------
        xarray.DataArray
            ``(lon, lat, velocity)``, or ``(sample, lon, lat, velocity)`` for a list (with a
            ``transition`` dim before ``lon`` for a multi-line observer), float32, in
            :attr:`units`, with coords in deg, deg, km/s and attrs ``units``, ``rest_frequency``
            (GHz), ``line``, ``beam_fwhm`` (arcsec, 0 when no beam was applied), ``source`` and
            ``observer`` (JSON settings).
        """
        single = isinstance(field_or_fields, xr.Dataset)
        fields = [field_or_fields] if single else list(field_or_fields)
        if not fields:
            raise ValueError("observe() got an empty list of fields; pass at least one field")
        for i, field in enumerate(fields):
            if not isinstance(field, xr.Dataset):
                raise TypeError(f"item {i} is a {type(field).__name__}; observe() takes xarray field Datasets")
            validate_field(field, self.grid)
        tensors = field_tensors(fields, device=device, dtype=dtype, validate=False)
        with torch.no_grad():
            cube = self(tensors).detach().to("cpu", torch.float32).numpy()
        models = sorted({str(f.attrs.get("model", "unknown")) for f in fields})
        seeds = [int(f.attrs.get("seed", -1)) for f in fields]
        attrs = {
            "units": self.units,
            "rest_frequency": self.grid.rest_frequency,
            "line": self.grid.line,
            "beam_fwhm": self._beam_applied(),
            "source": f"iris_nb.sim.{type(self).__name__} of {', '.join(models)} "
                      f"(seed {seeds[0] if single else seeds})",
            "observer": json.dumps(self.config, sort_keys=True),
        }
        coords = {name: self.grid.coord(name) for name in _SKY_DIMS}
        extra = self._extra_dims()
        coords.update({name: (name, list(values)) for name, values in extra.items()})
        dims = tuple(extra) + _SKY_DIMS
        if single:
            return xr.DataArray(cube[0], dims=dims, coords=coords, attrs=attrs)
        coords["sample"] = ("sample", np.arange(len(fields)))
        coords["seed"] = ("sample", np.asarray(seeds, dtype=np.int64))
        return xr.DataArray(cube, dims=("sample",) + dims, coords=coords, attrs=attrs)
