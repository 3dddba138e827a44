"""Write iris_nb cubes as survey-style FITS files (the inverse of :func:`iris_nb.io.open_cube`).

Surveys such as SEDIGISM store a cube in numpy order ``(velocity, lat, lon)`` with Galactic
longitude *descending* along the x axis (``CDELT1 < 0``) in the 0..360 deg convention, the
spectral axis as radio velocity in m/s, the brightness unit in ``BUNIT`` and the beam in
``BMAJ``/``BMIN``.  :func:`write_fits_cube` writes exactly that by default, so notebooks and
tests can make realistic tiles from a synthetic cube and read them back with ``open_cube``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits

from ..conventions import beam_pair, cube_beam, cube_rest_frequency, rest_frequency_ghz
from ..cube import standardize_cube
from ..units import brightness_scale, parse_unit
from ._common import check_dtype, parse_brightness_unit, regular_step

__all__ = ["write_fits_cube"]

SPECTRAL_TYPES = ("VRAD", "VELO-LSR", "FREQ")


def _check_options(path, spectral, velocity_unit, extra_header, overwrite) -> tuple[Path, str, u.UnitBase]:
    """Validate the non-array arguments; return (path, spectral type, velocity unit)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as {path / 'cube.fits'}")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.exists():
        raise ValueError(f"the folder {path.parent} does not exist; create it first (path.parent.mkdir())")
    code = str(spectral).strip().upper()
    if code not in SPECTRAL_TYPES:
        raise ValueError(f"spectral={spectral!r} is not supported; choose one of {SPECTRAL_TYPES}")
    v_unit = parse_unit(velocity_unit, "velocity_unit")
    if not v_unit.is_equivalent(u.km / u.s):
        raise ValueError(f"velocity_unit={velocity_unit!r} is not a speed; use 'm/s' (SEDIGISM) or 'km/s'")
    if extra_header is not None and not hasattr(extra_header, "items"):
        raise TypeError(f"extra_header must be a dict of FITS keywords, got {type(extra_header).__name__}")
    return path, code, v_unit


def _output_scale(std: xr.DataArray, units, rest_ghz, beam) -> tuple[float, u.UnitBase]:
    """Factor taking the standardised cube's values to ``units`` (or 1 and the cube's unit)."""
    src = parse_brightness_unit(std.attrs["units"], "cube data")
    if units is None:
        return 1.0, src
    dst = parse_brightness_unit(units, "units")
    if dst == src:
        return 1.0, dst
    needs_line = not (src.is_equivalent(u.K) and dst.is_equivalent(u.K))
    if needs_line and rest_ghz is None:
        raise ValueError(
            f"converting the cube from {src} to {dst} needs the line frequency; pass "
            "rest_frequency= in GHz or set cube.attrs['rest_frequency']"
        )
    freq = rest_ghz or 1.0
    try:
        to_kelvin = brightness_scale(src, freq, beam)
        from_kelvin = brightness_scale(dst, freq, beam)
    except ValueError as err:
        raise ValueError(f"cannot write the cube in {dst}: {err}") from None
    return to_kelvin / from_kelvin, dst


def _header(lon, lat, velocity, *, lon_360, lon_descending, code, v_unit, rest_ghz) -> fits.Header:
    """WCS keywords for a Galactic CAR cube on evenly spaced centres (deg, deg, km/s)."""
    d_lon = regular_step(lon, "lon", "cube")
    d_lat = regular_step(lat, "lat", "cube")
    d_v = regular_step(velocity, "velocity", "cube")
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "GLON-CAR", "GLAT-CAR"
    # reference on the equator (CRVAL2 = 0): the CAR grid is then exactly linear in lon and lat
    ref = lon.size - 1 if lon_descending else 0
    header["CRPIX1"] = 1.0
    header["CRVAL1"] = float(lon[ref]) % 360.0 if lon_360 else float(lon[ref])
    header["CDELT1"] = -d_lon if lon_descending else d_lon
    header["CUNIT1"] = "deg"
    header["CRPIX2"] = 1.0 - float(lat[0]) / d_lat
    header["CRVAL2"] = 0.0
    header["CDELT2"] = d_lat
    header["CUNIT2"] = "deg"
    if code == "FREQ":
        f0 = rest_ghz * 1e9
        header["CTYPE3"], header["CUNIT3"] = "FREQ", "Hz"
        header["CRVAL3"] = f0 * (1.0 - float(velocity[0]) / 299792.458)
        header["CDELT3"] = -f0 * d_v / 299792.458
    else:
        scale = (1.0 * u.km / u.s).to_value(v_unit)
        header["CTYPE3"], header["CUNIT3"] = code, v_unit.to_string("fits")
        header["CRVAL3"] = float(velocity[0]) * scale
        header["CDELT3"] = d_v * scale
    header["CRPIX3"] = 1.0
    header["SPECSYS"] = "LSRK"
    return header


def write_fits_cube(
    da: xr.DataArray,
    path,
    *,
    units=None,
    lon_360: bool = True,
    lon_descending: bool = True,
    velocity_unit="m/s",
    spectral: str = "VRAD",
    rest_frequency=None,
    beam_fwhm=None,
    line=None,
    dtype="float32",
    overwrite: bool = False,
    extra_header: dict | None = None,
) -> Path:
    """Write a cube as a survey-style FITS file and return its path.

    Parameters
    ----------
    da:
        Cube DataArray with dims ``lon``, ``lat``, ``velocity`` (any order) on evenly spaced
        coordinates carrying ``attrs["units"]`` (angles; speeds in radio convention), data in
        a brightness unit in ``attrs["units"]`` (``K``, ``mK``, ``Jy/beam``...).  NaN voxels
        (unobserved) are written as NaN.
    path:
        File to write (``.fits``); an existing file is replaced only with ``overwrite=True``.
    units:
        Brightness unit to write (``BUNIT``), e.g. ``"K"``, ``"mK"`` or ``"Jy/beam"``; the data
        are converted (Jy/beam needs a beam and the rest frequency).  Default: the cube's unit.
    lon_360, lon_descending:
        Write ``CRVAL1`` in 0..360 deg and longitude decreasing along x (``CDELT1 < 0``), as
        Galactic surveys do.  ``False`` gives (-180, 180] and ascending longitude.
    velocity_unit, spectral:
        Spectral axis type ``"VRAD"`` (default), ``"VELO-LSR"`` (velocity in
        ``velocity_unit``, ``"m/s"`` by default) or ``"FREQ"`` (Hz, needs the rest frequency).
    rest_frequency, beam_fwhm, line:
        Line rest frequency (GHz), beam FWHM (arcsec, or a ``(major, minor)`` pair) and line
        name for ``RESTFRQ``, ``BMAJ``/``BMIN`` and ``LINE``; default: the cube's attrs
        (``rest_frequency``, ``beam_fwhm``, ``line``).  Keywords that are unknown are omitted.
    dtype:
        Floating type stored in the file (``"float32"`` default, ``"float64"``).
    extra_header:
        Further FITS keywords (a dict), set last, e.g. ``{"TELESCOP": "APEX"}``.

    Returns
    -------
    pathlib.Path of the file: one primary HDU holding an array of shape
    ``(velocity, lat, lon)`` in ``units``, with a Galactic CAR WCS.
    """
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"write_fits_cube expects an xarray.DataArray cube, got {type(da).__name__}")
    if da.ndim != 3:
        raise ValueError(
            f"write_fits_cube writes one cube with dims (lon, lat, velocity); got dims {tuple(da.dims)}: "
            "select one cube of a stack first, e.g. da.isel(sample=0)"
        )
    path, code, v_unit = _check_options(path, spectral, velocity_unit, extra_header, overwrite)
    dtype = check_dtype(dtype)
    rest_ghz = rest_frequency_ghz(rest_frequency, "the cube") or cube_rest_frequency(da.attrs)
    beam = beam_pair(beam_fwhm if beam_fwhm is not None else cube_beam(da.attrs), "the cube")
    if code == "FREQ" and rest_ghz is None:
        raise ValueError("spectral='FREQ' needs the rest frequency: pass rest_frequency= in GHz")
    parse_brightness_unit(da.attrs.get("units"), "cube data")
    std = standardize_cube(da, to_kelvin=False)  # (lon, lat, velocity): deg, deg, km/s ascending
    scale, out_unit = _output_scale(std, units, rest_ghz, beam)
    lon, lat, velocity = (np.asarray(std[name].values, dtype=float) for name in ("lon", "lat", "velocity"))
    header = _header(lon, lat, velocity, lon_360=lon_360, lon_descending=lon_descending, code=code,
                     v_unit=v_unit, rest_ghz=rest_ghz)

    data = np.asarray(std.values).transpose(2, 1, 0)  # (velocity, lat, lon)
    if lon_descending:
        data = data[:, :, ::-1]
    out = np.empty(data.shape, dtype=dtype)
    np.multiply(data, dtype.type(scale), out=out, casting="unsafe")

    header["BUNIT"] = "Jy/beam" if out_unit == u.Jy / u.beam else out_unit.to_string("fits")
    if rest_ghz is not None:
        header["RESTFRQ"] = rest_ghz * 1e9
    if beam is not None:
        header["BMAJ"], header["BMIN"], header["BPA"] = beam[0] / 3600.0, beam[1] / 3600.0, 0.0
    name = line if line is not None else da.attrs.get("line")
    if name:
        header["LINE"] = str(name)
    if da.attrs.get("source"):
        header["OBJECT"] = str(da.attrs["source"])[:68]
    header["ORIGIN"] = "iris_nb write_fits_cube"
    for key, value in (extra_header or {}).items():
        header[key] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # long OBJECT strings
        fits.PrimaryHDU(data=out, header=header).writeto(path, overwrite=overwrite)
    return path
