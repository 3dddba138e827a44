"""Geometry of :mod:`iris_nb.sim.augment`: resampling a field about the Galactic Centre, the
observer's reflex velocity, density-weighted velocity smoothing and the skew gradient.

All functions take and return numpy arrays on a field's ``(distance, lon, lat)`` cells (this
order) with velocities in km/s; positions are Galactocentric ``(x, y, z)`` in pc, the frame of
:mod:`iris_nb.sim.kinematics`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..grids import Grid
from .fields import FIELD_DIMS
from .kinematics import cell_positions, line_of_sight_velocity

__all__ = ["galactic_centre", "keep_mass", "reflex_velocity", "resample", "smooth_velocity", "skew_factor"]

_ROWS = 1 << 20  # cells per block of distance rows when resampling


def galactic_centre(grid: Grid, shift_distance: float, shift_lon: float) -> np.ndarray:
    """Galactocentric ``(x, y, z)`` (pc) of the Galactic Centre put at ``R0 + dr``, longitude ``dl``."""
    x, y, z = cell_positions(grid.observer_distance + shift_distance, shift_lon, 0.0, grid.observer_distance)
    return np.array([float(x), float(y), float(z)])


def reflex_velocity(grid: Grid) -> np.ndarray:
    """Line-of-sight velocity (km/s) of gas at rest in each direction, ``(1, lon, lat)`` float32."""
    x, y, z = cell_positions(1.0, grid.lon.centers()[:, None], grid.lat.centers()[None, :], grid.observer_distance)
    return line_of_sight_velocity(x, y, z, 0.0, 0.0, 0.0, grid.observer_distance)[None].astype(np.float32)


def resample(values: dict, gas, grid: Grid, scale: float, centre, interpolation: str):
    """Resample a field so that the gas at ``r`` moves to ``centre + scale * r``.

    Parameters
    ----------
    values:
        Field variables, name -> ``(distance, lon, lat)`` float32 arrays; must hold ``density``.
    gas:
        The gas's own line-of-sight velocity ``v_LSR - reflex``, ``(distance, lon, lat)`` km/s.
    grid:
        The field's grid.
    scale:
        Size factor ``s > 0``.
    centre:
        Galactocentric ``(x, y, z)`` (pc) where the Galactic Centre goes.
    interpolation:
        ``"linear"`` (trilinear in index space) or ``"nearest"``.

    Returns
    -------
    (dict, ndarray)
        The resampled variables (density 0 where the source ``(r - centre) / scale`` of an
        output cell lies outside the grid; other variables take the edge value there) and the
        resampled gas velocity (km/s, interpolated as momentum over mass, *not* yet scaled).
    """
    d, lon, lat = (getattr(grid, name).centers() for name in FIELD_DIMS)
    axes = [getattr(grid, name) for name in FIELD_DIMS]
    order = 1 if interpolation == "linear" else 0
    out = {name: np.empty_like(arr) for name, arr in values.items()}
    gas_out = np.empty_like(gas)
    momentum = values["density"] * gas
    rows = max(1, _ROWS // (lon.size * lat.size))
    for i0 in range(0, d.size, rows):
        x, y, z = cell_positions(d[i0:i0 + rows, None, None], lon[None, :, None], lat[None, None, :],
                                 grid.observer_distance)
        rx = (x - centre[0]) / scale
        ry = (y - centre[1]) / scale + grid.observer_distance
        rz = np.broadcast_to((z - centre[2]) / scale, rx.shape)
        dist = np.sqrt(rx * rx + ry * ry + rz * rz)
        source = (dist, np.degrees(np.arctan2(rx, ry)), np.degrees(np.arcsin(np.clip(rz / dist, -1, 1))))
        index = [np.broadcast_to((s - a.start) / a.step - 0.5, dist.shape).ravel() for s, a in zip(source, axes)]
        inside = np.ones(index[0].shape, dtype=bool)
        for idx, axis in zip(index, axes):
            inside &= (idx >= -0.5) & (idx <= axis.steps - 0.5)
        shape = dist.shape

        def sample(arr, index=index, shape=shape):
            return ndimage.map_coordinates(arr, index, order=order, mode="nearest", prefilter=False).reshape(shape)

        for name, arr in values.items():
            out[name][i0:i0 + rows] = sample(arr)
        rho = out["density"][i0:i0 + rows]
        if order == 0:  # one source cell: momentum over mass is its velocity
            gas_out[i0:i0 + rows] = sample(gas)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                moved = sample(momentum) / rho
            empty = ~(rho > 0)
            if empty.any():
                moved[empty] = sample(gas)[empty]
            gas_out[i0:i0 + rows] = moved
        rho[~inside.reshape(shape)] = 0.0
    return out, gas_out


def smooth_velocity(gas, density, sigma: float):
    """Density-weighted Gaussian smoothing ``G*(rho v) / G*rho`` (plain ``G*v`` where no gas)."""
    rho = density.astype(np.float32)
    num = ndimage.gaussian_filter(rho * gas, sigma, mode="nearest")
    den = ndimage.gaussian_filter(rho, sigma, mode="nearest")
    plain = ndimage.gaussian_filter(gas, sigma, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, plain).astype(np.float32)


def skew_factor(grid: Grid, density, amplitude: float, angle: float, centre) -> np.ndarray:
    """``max(0, 1 + k u)`` over ``(distance, lon, lat)``, rescaled to keep the total mass.

    ``u`` is the in-plane distance from ``centre`` (pc) along the direction ``angle`` (deg from
    ``+x`` towards ``+y``) over half the grid's distance window; ``density`` any unit.
    """
    d, lon, lat = (getattr(grid, name).centers() for name in FIELD_DIMS)
    x, y, _ = cell_positions(d[:, None, None], lon[None, :, None], lat[None, None, :], grid.observer_distance)
    a = math.radians(angle)
    u = ((x - centre[0]) * math.cos(a) + (y - centre[1]) * math.sin(a)) / (0.5 * grid.distance.span)
    return keep_mass(grid, density, np.maximum(0.0, 1.0 + amplitude * u).astype(np.float32))


def keep_mass(grid: Grid, density, factor) -> np.ndarray:
    """``factor`` rescaled so that ``density * factor`` holds the same total mass as ``density``.

    Cell volumes ``d^2 cos(b) dd dl db`` (up to a constant) weight the sums; a factor that
    leaves no mass (or a field with none) is returned unchanged.  ``(distance, lon, lat)`` float32.
    """
    d, lat = grid.distance.centers(), grid.lat.centers()
    volume = ((d[:, None, None] ** 2) * np.cos(np.radians(lat))[None, None, :]).astype(np.float32)
    before = float(np.sum(density * volume, dtype=np.float64))
    after = float(np.sum(density * factor * volume, dtype=np.float64))
    if after > 0 and before > 0:
        factor = factor * np.float32(before / after)
    return factor.astype(np.float32, copy=False)
