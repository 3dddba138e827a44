"""Top-down training targets: H2 mass density averaged over latitude.

The target of reversion is a map on ``(distance, lon)``: for each heliocentric distance and
longitude pixel, the H2 mass density ``2 x_h2 X rho`` (see :func:`~iris_nb.sim.fields.h2_density`)
averaged over the grid's latitude pixels, in solMass / pc3.  It is the mean over the
latitude window, so a cloud thinner than the window is diluted by the window's pixel count.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .fields import FIELD_DIMS, FIELD_UNITS, _unit_factor, h2_density, validate_field

__all__ = ["columnize", "columnize_tensors"]


def columnize(field: xr.Dataset) -> xr.DataArray:
    """Latitude-averaged H2 mass density of a field.

    Parameters
    ----------
    field:
        A physical field (``density`` in solMass / pc3 or another mass-density unit, ``x_h2``),
        validated with :func:`~iris_nb.sim.fields.validate_field`.

    Returns
    -------
    xarray.DataArray, shape ``(distance, lon)``, solMass / pc3, float32
        Mean over ``lat`` of the H2 mass density; coords ``distance`` (pc) and ``lon`` (deg)
        with units attrs; attrs ``units``, ``long_name`` and the field's ``seed`` and ``model``.
    """
    validate_field(field)
    density = field["density"].transpose(*FIELD_DIMS).values
    factor = _unit_factor("density", field["density"].attrs.get("units"))
    x_h2 = field["x_h2"].transpose(*FIELD_DIMS).values
    top = h2_density(density, x_h2).mean(axis=2, dtype=np.float64) * factor
    top = top.astype(np.float32)
    attrs = {"units": FIELD_UNITS["density"], "long_name": "H2 mass density, latitude average"}
    for key in ("seed", "model"):
        if key in field.attrs:
            attrs[key] = field.attrs[key]
    coords = {name: (name, field[name].values, dict(field[name].attrs)) for name in FIELD_DIMS[:2]}
    return xr.DataArray(top, dims=FIELD_DIMS[:2], coords=coords, attrs=attrs)


def columnize_tensors(fields: dict) -> torch.Tensor:
    """Latitude-averaged H2 mass density of batched field tensors.

    Parameters
    ----------
    fields:
        Dict with ``density`` (solMass / pc3) and ``x_h2`` tensors of shape
        ``(B, distance, lon, lat)``, as made by :func:`~iris_nb.sim.fields.field_tensors`.

    Returns
    -------
    Tensor, shape ``(B, distance, lon)``, solMass / pc3
        Same dtype and device as the input; differentiable.
    """
    missing = [name for name in ("density", "x_h2") if name not in fields]
    if missing:
        raise ValueError(f"columnize_tensors needs the tensors {missing}; pass field_tensors(field)")
    density, x_h2 = fields["density"], fields["x_h2"]
    if density.ndim != 4 or density.shape != x_h2.shape:
        raise ValueError(f"density and x_h2 must both be (B, distance, lon, lat) tensors, got "
                         f"{tuple(density.shape)} and {tuple(x_h2.shape)}")
    return h2_density(density, x_h2).mean(dim=-1)
