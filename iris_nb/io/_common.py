"""Shared helpers of the cube readers: unit parsing, spectral axes, DataArray assembly.

Nothing here reads files; :mod:`iris_nb.io.fits`, :mod:`iris_nb.io.spectral`,
:mod:`iris_nb.io.mosaic` and :mod:`iris_nb.io.healpix` build on these functions.  The cube
conventions themselves (dims, longitude wrapping, line names, beam, rest frequency, axis
order) live in :mod:`iris_nb.conventions`.
"""

from __future__ import annotations

import re

import astropy.constants as const
import astropy.units as u
import numpy as np
import xarray as xr

from ..conventions import COORD_UNITS, CUBE_DIMS
from ..units import brightness_scale

C_KMS = const.c.to_value(u.km / u.s)
ALIGN_TOLERANCE = 0.01
"""Largest misalignment, in pixels, still treated as 'on the same pixel grid'."""


def parse_brightness_unit(value, what: str) -> u.UnitBase:
    """Parse a FITS ``BUNIT``-like string (``"K"``, ``"mK"``, ``"JY/BEAM"``, ``"K (Tmb)"``).

    Raises ``ValueError`` naming ``what`` (e.g. the file) when nothing sensible is found.
    """
    if isinstance(value, u.UnitBase):
        return value
    if value is None or not str(value).strip():
        raise ValueError(
            f"{what} has no brightness unit (no BUNIT); pass units='K' (or 'mK', 'Jy/beam') "
            "to say what the data are in"
        )
    text = str(value).strip()
    candidates = [text, re.split(r"[\s(\[]", text)[0]]
    for candidate in candidates:
        for fmt in ("fits", None):
            try:
                return u.Unit(candidate, format=fmt, parse_strict="raise")
            except (ValueError, TypeError):
                continue
    # FITS writers spell beam in many ways ("JY/BEAM", "Jy/Beam"); try a case-folded guess.
    if text.replace(" ", "").lower() in ("jy/beam", "jybeam-1", "jy.beam-1", "jy/bm"):
        return u.Jy / u.beam
    raise ValueError(
        f"{what} has brightness unit {text!r}, which astropy cannot parse; "
        "pass units='K' (or 'mK', 'Jy/beam') to say what the data are in"
    )


def brightness_factor(unit, rest_frequency_ghz, beam_fwhm, what: str) -> float:
    """Factor to K for ``unit``; checks the rest frequency is known when it is needed."""
    unit = parse_brightness_unit(unit, what)
    if unit.is_equivalent(u.K):
        return float((1.0 * unit).to_value(u.K))
    if unit == u.dimensionless_unscaled:
        raise ValueError(
            f"{what} has dimensionless data; pass units='K' (or 'mK', 'Jy/beam') to say what they are"
        )
    if rest_frequency_ghz is None:
        raise ValueError(
            f"{what} is in {unit}, and converting it to K needs the line frequency; "
            "pass rest_frequency= in GHz (e.g. 220.3986842 for 13CO(2-1))"
        )
    try:
        return brightness_scale(unit, rest_frequency_ghz, beam_fwhm)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def check_dtype(dtype):
    """Numpy floating dtype from ``dtype``; ``TypeError`` for integer or other dtypes."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a numpy float type such as 'float32', got {dtype!r}") from None
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating type such as 'float32' or 'float64', got {dtype}")
    return dtype


def regular_step(values, name: str, what: str, rtol: float = 1e-3) -> float:
    """Step of an evenly spaced ascending coordinate; ``ValueError`` when it is not regular."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError(
            f"{what} has a single {name} pixel; cannot infer the {name} pixel size (a pixel grid "
            f"needs at least two {name} pixels; in a mosaic the first tile sets the grid)"
        )
    steps = np.diff(values)
    step = (values[-1] - values[0]) / (values.size - 1)
    if step <= 0 or np.max(np.abs(steps - step)) > rtol * abs(step):
        raise ValueError(
            f"{what} {name} coordinate is not evenly spaced and ascending "
            f"(steps from {steps.min():g} to {steps.max():g}); regrid it first"
        )
    return float(step)


def radio_velocity(axis: u.Quantity, ctype: str, rest_hz, what: str) -> np.ndarray:
    """Spectral axis values converted to radio-convention velocity, km/s, float64.

    ``ctype`` is the FITS spectral type (``VRAD``, ``VOPT``, ``ZOPT``, ``VELO``, ``BETA``,
    ``FREQ``, ``WAVE``, ``ENER``, ``WAVN``); ``rest_hz`` the rest frequency in Hz or ``None``.
    ``VRAD`` needs no rest frequency; every other type does.
    """
    code = ctype.strip().upper()[:4]
    if code == "VRAD":
        if not axis.unit.is_equivalent(u.m / u.s):
            raise ValueError(f"{what} spectral axis is VRAD but in {axis.unit}; expected a velocity unit")
        return axis.to_value(u.km / u.s).astype(float)
    known = ("VOPT", "ZOPT", "VELO", "BETA", "FREQ", "WAVE", "ENER", "WAVN")
    if code not in known:
        raise ValueError(
            f"{what} has spectral axis type {ctype!r}, which iris_nb cannot convert; "
            f"expected one of VRAD, {', '.join(known)}"
        )
    if rest_hz is None or not rest_hz > 0:
        raise ValueError(
            f"{what} has a {code} spectral axis and no rest frequency (RESTFRQ/RESTFREQ); "
            "pass rest_frequency= in GHz (e.g. 220.3986842 for 13CO(2-1))"
        )
    rest = rest_hz * u.Hz
    if code == "ZOPT":
        axis = axis.to_value(u.one) * const.c
    elif code == "BETA":
        axis = axis.to_value(u.one) * const.c
    if code in ("VOPT", "ZOPT"):
        freq = axis.to(u.Hz, equivalencies=u.doppler_optical(rest))
    elif code in ("VELO", "BETA"):
        freq = axis.to(u.Hz, equivalencies=u.doppler_relativistic(rest))
    else:
        try:
            freq = axis.to(u.Hz, equivalencies=u.spectral())
        except u.UnitConversionError:
            raise ValueError(f"{what} spectral axis {code} is in {axis.unit}, which is not spectral") from None
    return C_KMS * (1.0 - freq.to_value(u.Hz) / rest_hz)


def make_cube(data, lon, lat, velocity, attrs: dict, what: str) -> xr.DataArray:
    """Wrap ``data`` (lon, lat, velocity), K, into the package's cube DataArray.

    ``lon``, ``lat`` in deg and ``velocity`` in km/s are ascending 1-D arrays; ``attrs`` is
    completed with ``units="K"``. ``ValueError`` when no value is finite.
    """
    if not np.isfinite(data).any():
        raise ValueError(f"cube {what} has no finite values (all NaN or blank); check the file and its mask")
    coords = {
        name: (name, np.asarray(values, dtype=float), {"units": COORD_UNITS[name]})
        for name, values in zip(CUBE_DIMS, (lon, lat, velocity))
    }
    coords["lon"][2]["long_name"] = "Galactic longitude"
    coords["lat"][2]["long_name"] = "Galactic latitude"
    coords["velocity"][2]["long_name"] = "LSR velocity (radio convention)"
    full = {"units": "K", "long_name": "brightness temperature"}
    full.update({k: v for k, v in attrs.items() if v is not None})
    return xr.DataArray(data, dims=CUBE_DIMS, coords=coords, attrs=full)


def copy_into(target, block) -> None:
    """``target[...] = block`` for (lon, lat, k) arrays, one latitude row at a time.

    ``block`` is usually a transposed view of (k, lat, lon) FITS data; copying row by row
    keeps both sides cache-friendly (about 5x faster than one strided assignment).
    """
    for row in range(block.shape[1]):
        target[:, row, :] = block[:, row, :]
