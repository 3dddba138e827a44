"""HEALPix maps of spectral-line surveys onto a Galactic lon/lat/velocity cube."""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.coordinates import SkyCoord

from ..conventions import ascending, beam_attrs, beam_pair, rest_frequency_ghz, wrap_lon
from ._common import brightness_factor, check_dtype, make_cube, parse_brightness_unit

__all__ = ["from_healpix"]

UNSEEN = -1.6375e30
"""healpy's marker of unobserved pixels; read as NaN."""


def _nside(npix: int, nside) -> int:
    guess = int(round(math.sqrt(npix / 12)))
    if 12 * guess * guess != npix:
        raise ValueError(
            f"HEALPix maps have 12 * nside**2 pixels; got {npix} pixels along the first axis of values "
            "(values must have shape (npix, n_velocity) or (npix,))"
        )
    if nside is not None and int(nside) != guess:
        raise ValueError(f"nside={nside} does not match the {npix} pixels of values (nside {guess})")
    if guess & (guess - 1):
        raise ValueError(f"nside must be a power of two, got {guess}")
    return guess


def _sky_axes(lon, lat, grid):
    if grid is not None:
        if lon is not None or lat is not None:
            raise ValueError("give either grid= or lon=/lat= centres, not both")
        from ..grids import get_grid

        grid = get_grid(grid)
        return grid.lon.centers(), grid.lat.centers()
    if lon is None or lat is None:
        raise ValueError("from_healpix needs the output sky pixels: pass lon= and lat= centres in deg, or grid=")
    result = []
    for name, values in (("lon", lon), ("lat", lat)):
        if isinstance(values, u.Quantity):
            values = values.to_value(u.deg)
        values = np.atleast_1d(np.asarray(values, dtype=float))
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be a 1-D array of finite pixel centres in deg, got shape {values.shape}")
        result.append(values)
    return result


def from_healpix(
    values,
    velocity,
    *,
    nside=None,
    nested=False,
    frame="galactic",
    lon=None,
    lat=None,
    grid=None,
    units=None,
    rest_frequency=None,
    beam_fwhm=None,
    line=None,
    dtype="float32",
) -> xr.DataArray:
    """Interpolate a HEALPix spectral map onto a Galactic (lon, lat, velocity) cube.

    Parameters
    ----------
    values:
        Brightness per HEALPix pixel and channel, shape (npix, n_velocity), or (npix,) for a
        single channel; ``npix = 12 * nside**2``. A Quantity carries its unit; NaN and
        healpy's UNSEEN (-1.6375e30) mark blanks.
    velocity:
        Channel centres, shape (n_velocity,), km/s (or a velocity Quantity), LSR radio.
    nside, nested:
        HEALPix resolution (checked against npix when given) and pixel ordering.
    frame:
        Sky frame of the HEALPix map ("galactic", "icrs", "fk5", ...).
    lon, lat, grid:
        Output pixel centres in deg: 1-D ``lon`` and ``lat`` arrays, or an iris_nb ``Grid``
        (or preset name) whose lon/lat centres are used.
    units:
        Brightness unit of ``values`` ('K', 'mK', 'Jy/beam'); required unless ``values`` is a
        Quantity. Jy/beam needs ``beam_fwhm`` (arcsec) and ``rest_frequency`` (GHz).
    line, dtype:
        Line name for ``attrs``; floating type of the result.

    Returns
    -------
    xarray.DataArray
        Dims ``(lon, lat, velocity)`` in K, coordinates ascending (deg, deg, km/s), values
        from bilinear interpolation between the four nearest HEALPix pixel centres
        (``astropy_healpix``); NaN where a neighbour is blank.
    """
    from astropy_healpix import HEALPix

    dtype = check_dtype(dtype)
    if isinstance(values, u.Quantity):
        units = values.unit if units is None else units
        values = values.value
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"values must have shape (npix, n_velocity) or (npix,), got {values.shape}")
    if values.dtype.kind not in "fiu":
        raise TypeError(f"values must be numbers, got dtype {values.dtype}")
    order = "nested" if nested else "ring"
    n = _nside(values.shape[0], nside)
    if isinstance(velocity, u.Quantity):
        velocity = velocity.to_value(u.km / u.s)
    velocity = np.atleast_1d(np.asarray(velocity, dtype=float))
    if velocity.ndim != 1 or velocity.size != values.shape[1]:
        raise ValueError(
            f"velocity has {velocity.size} channels but values has {values.shape[1]} "
            f"(values shape {values.shape}); give one velocity (km/s) per column of values"
        )
    velocity, flip_v = ascending(velocity, "velocity", "HEALPix map")
    out_lon, out_lat = _sky_axes(lon, lat, grid)
    out_lon, _ = ascending(wrap_lon(out_lon), "lon", "output grid")
    out_lat, _ = ascending(out_lat, "lat", "output grid")
    if units is None:
        raise ValueError("from_healpix needs the brightness unit of values: pass units='K' (or 'mK', 'Jy/beam')")
    rest = rest_frequency_ghz(rest_frequency, "HEALPix map")
    beam = beam_pair(beam_fwhm, "HEALPix map")
    scale = brightness_factor(parse_brightness_unit(units, "HEALPix map"), rest, beam, "HEALPix map")

    try:
        healpix = HEALPix(nside=n, order=order, frame=frame)
    except ValueError as err:
        raise ValueError(f"unknown HEALPix frame {frame!r} ({err}); use 'galactic', 'icrs' or 'fk5'") from None
    lon2d, lat2d = np.meshgrid(out_lon, out_lat, indexing="ij")
    points = SkyCoord(l=lon2d.ravel() * u.deg, b=lat2d.ravel() * u.deg, frame="galactic")
    points = points.transform_to(healpix.frame)
    sph = points.represent_as("unitspherical")
    index, weight = healpix.bilinear_interpolation_weights(sph.lon, sph.lat)
    data = np.zeros((index.shape[1], values.shape[1]), dtype=np.float64)
    for corner in range(index.shape[0]):
        neighbour = values[index[corner]].astype(np.float64)
        neighbour[neighbour <= UNSEEN * 0.999] = np.nan
        data += weight[corner][:, None] * neighbour
    data *= scale
    if flip_v:
        data = data[:, ::-1]
    cube = data.reshape(out_lon.size, out_lat.size, velocity.size).astype(dtype)
    attrs = {
        "rest_frequency": rest,
        "line": line,
        "source": f"HEALPix nside={n} ({order}, {frame})",
        "original_units": str(units),
    }
    attrs.update(beam_attrs(beam))
    return make_cube(cube, out_lon, out_lat, velocity, attrs, "from HEALPix")
