"""Emission and mass observables of one synthetic cube or field (the columns of
:func:`~iris_nb.sim.family.family_summary`; definitions in that module's text)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..grids import Grid
from .fields import h2_density, unit_factor, validate_field

__all__ = ["cell_volumes", "cube_observables", "effective_line_width", "h2_mass", "SGR_B2_LON", "SGR_C_LON"]

SGR_B2_LON, SGR_C_LON = 0.67, -0.57
"""Galactic longitudes of Sgr B2 and Sgr C, deg."""


def cell_volumes(grid: Grid) -> np.ndarray:
    """Exact volume of each field cell, pc3, shape ``(distance, 1, lat)`` (same for every lon).

    A cell spans ``[d_lo, d_hi]`` pc, ``dl`` in longitude and ``[b_lo, b_hi]`` in latitude:
    ``V = (d_hi^3 - d_lo^3) / 3 * dl_rad * (sin b_hi - sin b_lo)``.
    """
    d, b = grid.distance.edges(), np.radians(grid.lat.edges())
    radial = np.diff(d**3) / 3.0
    return radial[:, None, None] * math.radians(grid.lon.step) * np.diff(np.sin(b))[None, None, :]


def h2_mass(field: xr.Dataset, grid: Grid | None = None) -> float:
    """H2 mass of a field in its grid's window, solMass (``sum h2_density * cell volume``)."""
    grid = validate_field(field, grid)
    dims = ("distance", "lon", "lat")
    density = field["density"].transpose(*dims).values.astype(np.float64)
    density *= unit_factor("density", field["density"].attrs.get("units"))
    rho_h2 = h2_density(density, field["x_h2"].transpose(*dims).values.astype(np.float64))
    return float((rho_h2 * cell_volumes(grid)).sum())


def effective_line_width(cube, channel_width: float, bright_fraction: float = 0.25,
                         component_fraction: float = 0.1) -> np.ndarray:
    """Equivalent-width dispersion of the brightest component of each bright sightline.

    ``cube`` is ``(..., velocity)`` in K on channels ``channel_width`` km/s wide.  Returns the
    ``(...)`` array of ``sigma`` in km/s (module text), NaN where the spectrum's peak is below
    ``bright_fraction`` times the cube's peak (or the cube holds no positive emission).
    """
    spectra = np.asarray(cube, dtype=np.float64)
    shape = spectra.shape[:-1]
    spectra = spectra.reshape(-1, spectra.shape[-1])
    out = np.full(spectra.shape[0], np.nan)
    top = spectra.max() if spectra.size else 0.0
    if not top > 0:
        return out.reshape(shape)
    peak_channel = spectra.argmax(axis=1)
    peak = spectra.max(axis=1)
    bright = np.flatnonzero(peak >= bright_fraction * top)
    s, k, t_pk = spectra[bright], peak_channel[bright, None], peak[bright, None]
    channel = np.arange(spectra.shape[1])[None, :]
    below = s < component_fraction * t_pk
    left = np.where(below & (channel < k), channel, -1).max(axis=1, keepdims=True)
    right = np.where(below & (channel > k), channel, spectra.shape[1]).min(axis=1, keepdims=True)
    run = (channel > left) & (channel < right)
    out[bright] = (s * run).sum(axis=1) * channel_width / (math.sqrt(2.0 * math.pi) * t_pk[:, 0])
    return out.reshape(shape)


def _span(mask: np.ndarray, step: float) -> float:
    hits = np.flatnonzero(mask)
    return float((hits[-1] - hits[0] + 1) * step) if hits.size else 0.0


def _feature_velocities(pv: np.ndarray, grid: Grid, lon0: float, half_width: float, threshold: float):
    """(intensity-weighted mean v, peak v) of the PV ``(lon, v)`` near ``lon0``, km/s."""
    lon, v = grid.lon.centers(), grid.velocity.centers()
    window = pv[np.abs(lon - lon0) <= half_width]
    if window.size == 0:
        return math.nan, math.nan
    weights = np.where(window >= threshold, window, 0.0).sum(axis=0)
    mean_v = float((weights * v).sum() / weights.sum()) if weights.sum() > 0 else math.nan
    spectrum = window.mean(axis=0)
    peak_v = float(v[spectrum.argmax()]) if spectrum.max() >= threshold else math.nan
    return mean_v, peak_v


def cube_observables(cube, grid: Grid, *, bright_fraction: float = 0.25, component_fraction: float = 0.1,
                     lv_threshold: float = 0.5, feature_half_width: float = 0.05) -> dict:
    """The emission observables of one cube (module text), as a dict of floats.

    ``cube`` is a ``(lon, lat, velocity)`` array in K on ``grid`` (a DataArray with those dims
    in any order is transposed).  ``lv_threshold`` is in K of the latitude-mean PV,
    ``feature_half_width`` in deg.
    """
    if isinstance(cube, xr.DataArray):
        cube = cube.transpose("lon", "lat", "velocity").values
    cube = np.asarray(cube, dtype=np.float64)
    if cube.shape != grid.ppv_shape:
        raise ValueError(f"cube has shape {cube.shape}; the grid expects (lon, lat, velocity) = {grid.ppv_shape}")
    dv = grid.velocity.step
    pv = cube.mean(axis=1)
    footprint = pv >= lv_threshold
    b2, b2_peak = _feature_velocities(pv, grid, SGR_B2_LON, feature_half_width, lv_threshold)
    c, c_peak = _feature_velocities(pv, grid, SGR_C_LON, feature_half_width, lv_threshold)
    return {
        "cube_peak_K": float(cube.max()),
        "pv_peak_K": float(pv.max()),
        "integrated_intensity_K_km_s": float(cube.sum(axis=2).mean() * dv),
        "line_width_km_s": float(np.nanmedian(effective_line_width(cube, dv, bright_fraction, component_fraction)))
        if cube.max() > 0 else math.nan,
        "lv_velocity_span_km_s": _span(footprint.any(axis=0), dv),
        "lv_lon_span_deg": _span(footprint.any(axis=1), grid.lon.step),
        "v_sgr_b2_km_s": b2, "v_sgr_c_km_s": c, "v_peak_sgr_b2_km_s": b2_peak, "v_peak_sgr_c_km_s": c_peak,
    }
