"""The noise numbers and preview source of :class:`~iris_nb.widgets.noise.NoisePicker`.

:func:`noise_levels` gives the noise (K) that training adds to one PV image, for a noise
setting, a latitude reduction and a grid; :func:`preview_source` turns the cube (or PV image)
given to the picker into the image the preview adds noise to, and the grid of its pixels and
beam.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import torch
import xarray as xr

from ..cube import cube_beam, cube_rest_frequency, standardize_cube
from ..grids import SMALL, Axis, Grid
from ..sim.noise import Noise, NoiseConfig
from ..units import brightness_scale, parse_unit

__all__ = ["noise_levels", "preview_source"]

_MAX_DRAWS = (1, 64, 64)  # PV noise pixels drawn to measure the law of the max reduction


def noise_levels(config: NoiseConfig | None, reduction: str, n_lat: int, grid: Grid | None = None,
                 seed: int = 0) -> dict:
    """Mean and standard deviation (K) of the noise that training adds to one PV image.

    ``config`` is the noise (``None``: none), ``reduction`` ``"mean"`` or ``"max"`` over
    ``n_lat`` latitude pixels, ``grid`` the beam and pixel sizes for beam-correlated noise.
    ``grid`` also gives the channel width that scales ``config.sigma`` to the rms per cube
    pixel (it may be ``None`` only for ``channel_width="grid"`` white noise).
    Values are at fade factor 1 (with ``fade`` each sample's noise is scaled by ``U(0, 1)``).
    Returns ``{"sigma_pixel", "pv_std", "pv_mean", "pv_std_mean", "measured"}``:
    ``sigma_pixel`` is the rms per cube pixel (:attr:`Noise.sigma_pixel`), ``pv_std_mean``
    :meth:`Noise.pv_std` (the exact std for the mean reduction); for the max reduction
    ``pv_mean``/``pv_std`` are measured on a seeded draw of 64 x 64 PV pixels
    (``measured=True``), as the max of ``n_lat`` noisy pixels has no simple closed form.
    """
    if config is None:
        return {"sigma_pixel": 0.0, "pv_std": 0.0, "pv_mean": 0.0, "pv_std_mean": 0.0, "measured": False}
    noise = Noise.from_config(dataclasses.replace(config, fade=False), grid=grid)
    std_mean = noise.pv_std(n_lat)
    levels = {"sigma_pixel": noise.sigma_pixel, "pv_std": std_mean, "pv_mean": config.mean,
              "pv_std_mean": std_mean, "measured": False}
    if reduction == "mean":
        return levels
    draw = noise.draw(_MAX_DRAWS, mode="pv", reduction=reduction, n_lat=n_lat,
                      generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {**levels, "pv_std": float(draw.std()), "pv_mean": float(draw.mean()), "measured": True}


def _edges_axis(centres: np.ndarray, fallback: Axis) -> Axis:
    """An :class:`Axis` whose pixel centres are ``centres`` (ascending, regular), in deg."""
    if centres.size < 2:
        half = 0.5 * fallback.step
        return Axis(float(centres[0]) - half, float(centres[0]) + half, 1)
    step = (float(centres[-1]) - float(centres[0])) / (centres.size - 1)
    return Axis(float(centres[0]) - 0.5 * step, float(centres[-1]) + 0.5 * step, centres.size)


def _beam_grid(std: xr.DataArray) -> Grid:
    """SMALL with the lon/lat/velocity pixels and beam of a standardised cube ``(lon, lat, velocity)``."""
    beam = cube_beam(std.attrs)
    if isinstance(beam, tuple):
        beam = math.sqrt(beam[0] * beam[1])
    return SMALL.replace(lon=_edges_axis(np.asarray(std["lon"].values, float), SMALL.lon),
                         lat=_edges_axis(np.asarray(std["lat"].values, float), SMALL.lat),
                         velocity=_edges_axis(np.asarray(std["velocity"].values, float), SMALL.velocity),
                         beam_fwhm=SMALL.beam_fwhm if beam is None else float(beam), name="cube pixels")


def _pv_grid(pv: xr.DataArray, grid: Grid) -> Grid:
    """``grid`` with the velocity channels of a PV image ``(lon, velocity)`` whose velocity
    coordinate states its unit (else ``grid`` unchanged)."""
    coord = pv.coords.get("velocity")
    if coord is None or coord.ndim != 1 or coord.size < 2 or "units" not in coord.attrs:
        return grid
    values = np.sort(np.asarray(coord.values, float) * parse_unit(coord.attrs["units"], "PV velocity").to("km/s"))
    return grid.replace(velocity=_edges_axis(values, grid.velocity))


def preview_source(cube, grid: Grid | None, n_lat) -> tuple[xr.DataArray | None, Grid, int]:
    """``(cube (lon, lat, velocity) or PV (lon, velocity) in K or None, beam grid, n_lat)``."""
    if n_lat is not None and (isinstance(n_lat, bool) or not isinstance(n_lat, numbers.Integral) or n_lat < 1):
        raise ValueError(f"n_lat must be a positive integer (latitude pixels reduced), got {n_lat!r}")
    if cube is None:
        grid = SMALL if grid is None else grid
        return None, grid, int(n_lat) if n_lat is not None else grid.lat.steps
    if not isinstance(cube, xr.DataArray):
        raise TypeError(f"cube must be an xarray.DataArray cube (lon, lat, velocity) or PV image (lon, velocity), "
                        f"got {type(cube).__name__}; open a FITS file with iris_nb.open_cube(path)")
    if set(cube.dims) == {"lon", "velocity"}:
        attrs = cube.attrs
        rest = cube_rest_frequency(attrs) or (grid or SMALL).rest_frequency
        factor = brightness_scale(parse_unit(attrs.get("units"), "PV image"), rest, cube_beam(attrs))
        pv = (cube.transpose("lon", "velocity").astype(np.float64) * factor).assign_attrs(units="K")
        grid = _pv_grid(cube, SMALL) if grid is None else grid
        return pv, grid, int(n_lat) if n_lat is not None else grid.lat.steps
    std = standardize_cube(cube, to_kelvin=True)
    if std.ndim != 3:
        raise ValueError(f"the preview shows one cube, but this one has dims {tuple(cube.dims)}; "
                         f"select one cube of the stack first, e.g. cube.isel({std.dims[0]}=0)")
    if n_lat is not None and n_lat != std.sizes["lat"]:
        raise ValueError(f"n_lat={n_lat} but the cube has {std.sizes['lat']} latitude pixels; leave n_lat out")
    return std, _beam_grid(std) if grid is None else grid, std.sizes["lat"]
