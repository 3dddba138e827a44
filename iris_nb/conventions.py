"""The cube conventions of iris_nb, in one place (DESIGN.md section 3).

Every cube the package hands out or takes in follows these rules; the readers in
:mod:`iris_nb.io`, :func:`iris_nb.cube.standardize_cube`, :mod:`iris_nb.regrid` and the
simulators all use the functions below rather than their own copies:

* dims ``(lon, lat, velocity)`` (:data:`CUBE_DIMS`), coordinates in deg, deg, km/s
  (:data:`COORD_UNITS`), each ascending (:func:`axis_order`, :func:`ascending`);
* Galactic longitude wrapped to (-180, 180] deg (:func:`wrap_lon`);
* the line named in ``attrs["line"]``, compared in a spelling-blind form
  (:func:`normalise_line`, :func:`same_line`: ``13CO(2-1)``, ``13CO 2-1`` and ``13co21`` are one line);
* the rest frequency in ``attrs["rest_frequency"]``, GHz (:func:`rest_frequency_ghz`,
  :func:`cube_rest_frequency`);
* the beam FWHM in ``attrs["beam_fwhm"]`` (and ``beam_fwhm_minor`` when elliptical), arcsec
  (:func:`beam_pair`, :func:`cube_beam`, :func:`beam_attrs`).
"""

from __future__ import annotations

import math
import re

import astropy.units as u
import numpy as np

__all__ = [
    "CUBE_DIMS",
    "COORD_UNITS",
    "wrap_lon",
    "normalise_line",
    "same_line",
    "rest_frequency_ghz",
    "cube_rest_frequency",
    "beam_pair",
    "cube_beam",
    "beam_attrs",
    "axis_order",
    "ascending",
]

CUBE_DIMS = ("lon", "lat", "velocity")
"""Dimension names of a cube, in the package's order."""

COORD_UNITS = {"lon": "deg", "lat": "deg", "velocity": "km/s"}
"""Unit of each cube coordinate."""

_HZ_LIMIT_GHZ = 1e5
"""A 'rest frequency in GHz' above this is almost certainly given in Hz."""


# -------------------------------------------------------------------------------- longitude
def wrap_lon(lon):
    """Galactic longitude (deg, any shape) wrapped to ``(-180, 180]``; float64 array.

    Values already in the range come back bit for bit, so a cube on a model grid stays on it.
    """
    lon = np.asarray(lon, dtype=float)
    wrapped = np.mod(lon, 360.0)
    wrapped = np.where(wrapped > 180.0, wrapped - 360.0, wrapped)
    return np.where((lon > -180.0) & (lon <= 180.0), lon, wrapped)


# ------------------------------------------------------------------------------- line name
def normalise_line(name) -> str | None:
    """Comparable form of a line name, or ``None`` when there is none.

    Case, spaces and punctuation are dropped: ``"13CO(2-1)"``, ``"13CO 2-1"``,
    ``"13co21"`` and ``"13CO_2_1"`` all give ``"13co21"``.
    """
    if name is None:
        return None
    text = re.sub(r"[^0-9a-z]", "", str(name).lower())
    return text or None


def same_line(first, second) -> bool:
    """True unless both line names are known and differ (see :func:`normalise_line`)."""
    a, b = normalise_line(first), normalise_line(second)
    return a is None or b is None or a == b


# ---------------------------------------------------------------------------- rest frequency
def rest_frequency_ghz(value, what: str):
    """Validate a rest frequency in GHz (number, or a frequency Quantity); ``None`` passes.

    ``ValueError`` for non-positive, non-finite or non-frequency values, and for numbers
    that look like Hz (above 1e5 GHz), naming ``what``.
    """
    if value is None:
        return None
    try:
        if isinstance(value, u.Quantity):
            value = value.to_value(u.GHz, equivalencies=u.spectral())
        value = float(value)
    except (TypeError, ValueError, u.UnitsError):
        raise ValueError(
            f"rest_frequency for {what} must be a number in GHz (or a frequency Quantity), got {value!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"rest_frequency for {what} must be a positive number in GHz, got {value}")
    if value > _HZ_LIMIT_GHZ:
        raise ValueError(
            f"rest_frequency={value:g} for {what} looks like Hz; give it in GHz "
            f"(e.g. {value / 1e9:.7g})"
        )
    return value


def cube_rest_frequency(attrs: dict) -> float | None:
    """Rest frequency (GHz) stated in a cube's attrs, or ``None``.

    Looks at ``rest_frequency`` (a number in GHz, or a string/Quantity with a frequency
    unit) and at the FITS keywords ``RESTFRQ`` / ``RESTFREQ`` (numbers in Hz).
    ``ValueError`` when the value is not a positive frequency.
    """
    for key, default_unit in (("rest_frequency", u.GHz), ("RESTFRQ", u.Hz), ("RESTFREQ", u.Hz)):
        if key not in attrs or attrs[key] is None:
            continue
        value = attrs[key]
        try:
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                ghz = float((float(value) * default_unit).to_value(u.GHz))
            else:
                ghz = float(u.Quantity(value).to_value(u.GHz, equivalencies=u.spectral()))
        except (TypeError, ValueError, u.UnitsError):
            raise ValueError(
                f"cube attrs[{key!r}] = {value!r} is not a frequency; give a number in "
                f"{default_unit} or a string such as '220.3987 GHz'"
            ) from None
        return rest_frequency_ghz(ghz, f"the cube (attrs[{key!r}])")
    return None


# -------------------------------------------------------------------------------------- beam
def beam_pair(beam_fwhm, what: str):
    """``(major, minor)`` beam FWHM in arcsec from a number, a pair or ``None``."""
    if beam_fwhm is None:
        return None
    try:
        if isinstance(beam_fwhm, u.Quantity):
            beam_fwhm = beam_fwhm.to_value(u.arcsec)
        values = np.atleast_1d(np.asarray(beam_fwhm, dtype=float)).ravel()
    except (TypeError, ValueError, u.UnitsError):
        values = np.array([np.nan])
    if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"beam_fwhm for {what} must be a positive FWHM in arcsec or a (major, minor) pair, "
            f"got {beam_fwhm!r}"
        )
    return float(values.max()), float(values.min())


def cube_beam(attrs: dict):
    """Beam FWHM in arcsec from a cube's attrs: a number, a ``(major, minor)`` pair or ``None``.

    Reads ``beam_fwhm`` (arcsec; with ``beam_fwhm_minor`` for an elliptical beam) or the
    FITS keywords ``BMAJ``/``BMIN`` (deg).  ``ValueError`` when the value is not a number.
    """
    try:
        if attrs.get("beam_fwhm") is not None:
            beam = attrs["beam_fwhm"]
            if isinstance(beam, (tuple, list, np.ndarray)):
                return tuple(float(b) for b in beam)
            if attrs.get("beam_fwhm_minor") is not None:
                return (float(beam), float(attrs["beam_fwhm_minor"]))
            return float(beam)
        if attrs.get("BMAJ") is not None:
            major = float(attrs["BMAJ"]) * 3600.0
            minor = float(attrs.get("BMIN", attrs["BMAJ"])) * 3600.0
            return (major, minor)
    except (TypeError, ValueError):
        raise ValueError(
            f"cube attrs give the beam as beam_fwhm={attrs.get('beam_fwhm')!r}, "
            f"BMAJ={attrs.get('BMAJ')!r}; expected numbers (beam_fwhm in arcsec, BMAJ/BMIN in deg)"
        ) from None
    return None


def beam_attrs(beam) -> dict:
    """``beam_fwhm`` (and ``beam_fwhm_minor`` when different) from a ``(major, minor)`` pair."""
    if beam is None:
        return {}
    major, minor = beam
    attrs = {"beam_fwhm": float(major)}
    if not math.isclose(major, minor, rel_tol=1e-6):
        attrs["beam_fwhm_minor"] = float(minor)
    return attrs


# ----------------------------------------------------------------------------- axis order
def axis_order(values, name: str, what: str = "cube", sort: bool = True):
    """Indexer that makes a 1-D coordinate ascending.

    Returns ``None`` (already ascending), a reversing slice (descending), or, with
    ``sort=True``, a stable argsort.  ``ValueError`` for repeated values, and for an axis
    that is neither ascending nor descending when ``sort=False``.
    """
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return None
    diff = np.diff(values)
    if np.all(diff > 0):
        return None
    if np.all(diff < 0):
        return slice(None, None, -1)
    if not sort:
        raise ValueError(f"{what} {name} axis is not monotonic; cannot order it")
    order = np.argsort(values, kind="stable")
    if np.any(np.diff(values[order]) == 0):
        raise ValueError(f"{what} coordinate {name!r} has duplicate values; every pixel needs its own {name}")
    return order


def ascending(values, name: str, what: str):
    """``(values ascending, flipped?)`` of a monotonic axis; ``ValueError`` when it is not."""
    values = np.asarray(values, dtype=float)
    order = axis_order(values, name, what, sort=False)
    if order is None:
        return values, False
    return values[order].copy(), True
