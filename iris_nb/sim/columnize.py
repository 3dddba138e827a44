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

from .fields import FIELD_DIMS, FIELD_UNITS, h2_density, unit_factor, validate_field

__all__ = ["columnize", "columnize_tensors", "columnize_velocity", "columnize_velocity_tensors"]


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
    factor = unit_factor("density", field["density"].attrs.get("units"))
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


def columnize_velocity_tensors(fields: dict) -> torch.Tensor:
    """H2-mass-weighted mean line-of-sight velocity over latitude of batched field tensors.

    The second reversion target (beside :func:`columnize_tensors`): for each heliocentric
    distance and longitude pixel, ``sum_b rho_H2 v / sum_b rho_H2`` over the grid's latitude
    pixels, km/s (v_LSR).  Pixels without H2 get 0 km/s (they carry no mass, so no observer
    sees their velocity).  ``fields`` needs ``density``, ``x_h2`` and ``velocity_los``
    ``(B, distance, lon, lat)`` tensors; returns ``(B, distance, lon)``, differentiable.
    """
    missing = [name for name in ("density", "x_h2", "velocity_los") if name not in fields]
    if missing:
        raise ValueError(f"columnize_velocity_tensors needs the tensors {missing}; pass field_tensors(field)")
    rho = h2_density(fields["density"], fields["x_h2"])
    mass = rho.sum(dim=-1)
    moment = (rho * fields["velocity_los"]).sum(dim=-1)
    return torch.where(mass > 0, moment / mass.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(mass))


def columnize_velocity(field: xr.Dataset) -> xr.DataArray:
    """:func:`columnize_velocity_tensors` of one xarray field: ``(distance, lon)`` km/s, float32."""
    from .fields import field_tensors

    validate_field(field)
    top = columnize_velocity_tensors(field_tensors(field, dtype=torch.float64, validate=False))[0]
    attrs = {"units": FIELD_UNITS["velocity_los"],
             "long_name": "H2-mass-weighted line-of-sight velocity, latitude average"}
    for key in ("seed", "model"):
        if key in field.attrs:
            attrs[key] = field.attrs[key]
    coords = {name: (name, field[name].values, dict(field[name].attrs)) for name in FIELD_DIMS[:2]}
    return xr.DataArray(top.numpy().astype(np.float32), dims=FIELD_DIMS[:2], coords=coords, attrs=attrs)
