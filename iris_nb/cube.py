"""Spectral-line cubes: validation, standardisation and latitude reduction.

A *cube* is an :class:`xarray.DataArray` with dims ``lon``, ``lat`` and ``velocity`` in any
order, optionally preceded by one extra dim (``sample``, ``time``, ...) for a stack of
cubes.  Units live in ``attrs["units"]`` on the data and on every coordinate.
:func:`standardize_cube` turns any such cube into the package convention (DESIGN.md
section 3):

* dims ``(extra, lon, lat, velocity)`` (``extra`` only when present);
* ``lon`` in deg wrapped to (-180, 180] and ascending, ``lat`` in deg ascending,
  ``velocity`` in km/s ascending;
* data in K (optional; :func:`reduce_cube` keeps the cube's own unit).

Every check runs before any array-sized work, so a bad cube fails in milliseconds.
Regridding lives in :mod:`iris_nb.regrid`, reversion in :mod:`iris_nb.reversion`.
"""

from __future__ import annotations

import math
import warnings

import astropy.units as u
import numpy as np
import xarray as xr

from .conventions import COORD_UNITS, CUBE_DIMS, axis_order, cube_beam, cube_rest_frequency, same_line, wrap_lon
from .grids import Grid
from .units import brightness_scale, parse_unit

__all__ = [
    "CUBE_DIMS",
    "LineMismatchWarning",
    "standardize_cube",
    "reduce_cube",
    "REDUCTIONS",
    "cube_rest_frequency",
    "cube_beam",
    "all_nan_fraction",
]

REDUCTIONS = ("mean", "max")
"""The latitude reductions of a cube into a PV image (:func:`reduce_cube`), used by stores, noise,
models and runs alike."""
_COORD_UNITS = {name: u.Unit(unit) for name, unit in COORD_UNITS.items()}
_ALIASES = {
    "lon": ("l", "glon", "longitude", "x", "ra"),
    "lat": ("b", "glat", "latitude", "y", "dec"),
    "velocity": ("v", "vel", "vlsr", "v_lsr", "z", "spectral", "freq", "frequency"),
}
_BLOCK_BYTES = 16 * 2**20  # work on slabs of about this size to bound temporaries


class LineMismatchWarning(UserWarning):
    """The cube's spectral line or rest frequency differs from the model grid's."""


# --------------------------------------------------------------------- attribute helpers
def all_nan_fraction(da: xr.DataArray) -> float | None:
    """Fraction of PV pixels that were all-NaN in latitude, as recorded by :func:`reduce_cube`."""
    return da.attrs.get("all_nan_fraction")


def _check_line(attrs: dict, grid: Grid) -> None:
    """Warn (:class:`LineMismatchWarning`) when the cube's line differs from ``grid``'s."""
    line = attrs.get("line")
    if not same_line(line, grid.line):
        warnings.warn(
            f"cube attrs say line {line!r} but the model grid is for {grid.line!r}; the "
            "reversion assumes the model's line", LineMismatchWarning, stacklevel=3,
        )
    freq = cube_rest_frequency(attrs)
    if freq is not None and not math.isclose(freq, grid.rest_frequency, rel_tol=1e-5):
        warnings.warn(
            f"cube rest frequency {freq:.7g} GHz differs from the model grid's "
            f"{grid.rest_frequency:.7g} GHz ({grid.line}); the reversion assumes the model's line",
            LineMismatchWarning, stacklevel=3,
        )


# ----------------------------------------------------------------------- dims and coords
def _check_dims(da: xr.DataArray) -> tuple[str, ...]:
    """Validate dim names; return the target order ``(extra?, lon, lat, velocity)``."""
    dims = tuple(str(d) for d in da.dims)
    missing = [d for d in CUBE_DIMS if d not in dims]
    extra = [d for d in dims if d not in CUBE_DIMS]
    if missing:
        hints = []
        for want in missing:
            for have in extra:
                if have.lower() in _ALIASES[want]:
                    hints.append(f"{have!r}: {want!r}")
        rename = "{" + ", ".join(hints) + "}" if hints else "{...}"
        raise ValueError(
            f"cube has dims {dims}; expected lon, lat, velocity (any order, plus at most one "
            f"leading dim such as 'sample'); {missing} missing — rename with cube.rename({rename})"
        )
    if len(extra) > 1:
        raise ValueError(
            f"cube has {len(dims)} dims {dims}; expected lon, lat, velocity and at most one extra "
            f"dim for a stack of cubes, got the extra dims {extra}: select or stack them first "
            "(cube.isel(...) or cube.stack(sample=[...]))"
        )
    return tuple(extra) + CUBE_DIMS


def _coord_values(da: xr.DataArray, name: str) -> tuple[np.ndarray, u.UnitBase]:
    """1-D float64 values of coordinate ``name`` converted to its package unit."""
    if name not in da.coords:
        raise ValueError(
            f"cube has no {name!r} coordinate values; assign them with "
            f"cube.assign_coords({name}=values) and set cube['{name}'].attrs['units']"
        )
    coord = da.coords[name]
    if coord.ndim != 1:
        raise ValueError(f"cube coordinate {name!r} must be 1-D, got dims {coord.dims}")
    unit = parse_unit(coord.attrs.get("units"), f"cube coordinate {name!r}")
    values = np.asarray(coord.values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(
            f"cube coordinate {name!r} has {bad} missing (NaN/inf) values out of {values.size}; "
            "every pixel needs a finite coordinate"
        )
    target = _COORD_UNITS[name]
    if not unit.is_equivalent(target):
        spectral = unit.is_equivalent(u.Hz) or unit.is_equivalent(u.m)
        if name == "velocity" and spectral:
            fix = (" convert the spectral axis to radio velocity first, e.g. with spectral-cube: "
                   "cube.with_spectral_unit('km/s', velocity_convention='radio', rest_value=...)")
        else:
            fix = f" convert it to {target}"
        raise ValueError(f"cube {name!r} axis is in {unit}, expected a unit like {target};{fix}")
    return (values * unit).to_value(target), target


def _float_data(da: xr.DataArray) -> xr.DataArray:
    """Data as floating point (integers become float32, float16 becomes float32)."""
    dtype = da.dtype
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"cube data must be numeric, got dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"cube data must be real, got dtype {dtype}")
    if dtype in (np.float32, np.float64):
        return da
    return da.astype(np.float32)


def _check_not_all_nan(data, extra: bool) -> None:
    """Raise when the cube (or one cube of a stack) holds no finite value; stops early."""
    stack = data if extra else data[None]
    for index in range(stack.shape[0]):
        one = stack[index]
        per_slab = max(1, _BLOCK_BYTES // max(1, one[0].nbytes))
        if not any(np.isfinite(np.asarray(one[i:i + per_slab])).any() for i in range(0, one.shape[0], per_slab)):
            where = f"cube {index} of the stack" if extra else "the cube"
            raise ValueError(f"{where} holds only NaN/inf values; check the file or the selection")


def standardize_cube(
    da: xr.DataArray,
    grid: Grid | None = None,
    *,
    data_units=None,
    to_kelvin: bool = True,
) -> xr.DataArray:
    """Bring a cube to the package convention, checking everything first.

    Parameters
    ----------
    da:
        Cube ``(lon, lat, velocity)`` in any dim order, optionally with one extra dim for
        a stack; data in a brightness unit (``K``, ``mK``, ``Jy/sr``, ``Jy/beam`` with
        ``attrs["beam_fwhm"]`` in arcsec) or, with ``to_kelvin=False``, any unit;
        coordinates with ``attrs["units"]`` (angles, velocities in any astropy unit).
    grid:
        Optional model grid; when given, a cube whose attrs name another line or rest
        frequency triggers a :class:`LineMismatchWarning`.  Its rest frequency is also used
        to convert ``Jy/sr`` to K when the cube does not state one.
    data_units:
        Overrides ``da.attrs["units"]`` (for cubes without units, or mislabelled ones).
    to_kelvin:
        Convert the data to Rayleigh-Jeans brightness temperature in K (default).  With
        ``False`` the data keep their unit (it must still parse).

    Returns
    -------
    DataArray ``(extra?, lon, lat, velocity)``: lon (deg) wrapped to (-180, 180] and
    ascending, lat (deg) and velocity (km/s) ascending, data in K (or the original unit),
    float32 or float64.  No copy of the data is made when the cube is already standard.
    """
    if not isinstance(da, xr.DataArray):
        raise TypeError(
            f"expected an xarray.DataArray cube with dims lon, lat, velocity, got {type(da).__name__}"
            + ("; pick one variable, e.g. ds['intensity']" if isinstance(da, xr.Dataset) else "")
        )
    if da.ndim not in (3, 4):
        raise ValueError(
            f"cube has {da.ndim} dims {tuple(da.dims)}; expected 3 (lon, lat, velocity) or 4 "
            "(a leading stack dim plus lon, lat, velocity)"
        )
    order = _check_dims(da)
    extra = len(order) == 4
    if 0 in da.shape:
        raise ValueError(f"cube is empty, shape {dict(zip(da.dims, da.shape))}")
    unit_given = data_units if data_units is not None else da.attrs.get("units")
    unit = parse_unit(unit_given, "cube data")
    scale, out_unit = 1.0, unit
    if to_kelvin:
        freq = cube_rest_frequency(da.attrs) or (grid.rest_frequency if grid is not None else None)
        # a dry run at a nominal frequency reports wrong units and missing beams first
        scale = brightness_scale(unit, freq or 1.0, cube_beam(da.attrs))
        if freq is None and not unit.is_equivalent(u.K):
            raise ValueError(
                f"cube data are in {unit}; converting to K needs the line's rest frequency: set "
                "cube.attrs['rest_frequency'] (GHz) or pass the model grid"
            )
        out_unit = u.K
    new_coords, indexers = {}, {}
    for name in CUBE_DIMS:
        values, target = _coord_values(da, name)
        if name == "lon":
            values = wrap_lon(values)
        indexer = axis_order(values, name)
        if indexer is not None:
            indexers[name] = indexer
            values = values[indexer]
        new_coords[name] = (name, values, {**da.coords[name].attrs, "units": target.to_string()})
    if grid is not None:
        _check_line(da.attrs, grid)
    data = _float_data(da)
    _check_not_all_nan(data.transpose(*order).data, extra)

    # ---- only cheap (view) operations from here on, unless the cube really needs them
    out = data.transpose(*order) if tuple(data.dims) != order else data
    if indexers:
        out = out.isel(indexers)
    out = out.assign_coords(new_coords)
    if scale != 1.0:
        out = out * out.dtype.type(scale)
    attrs = dict(da.attrs)
    attrs["units"] = out_unit.to_string()
    if out_unit != unit:
        attrs["original_units"] = unit.to_string()
    out.attrs = attrs
    out.name = da.name
    return out


# ---------------------------------------------------------------------------- reduction
def _reduce_block(block: np.ndarray, how: str, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one slab over ``axis`` ignoring NaN; return (values, all-NaN mask)."""
    valid = ~np.isnan(block)
    if how == "max":
        result = np.fmax.reduce(block, axis=axis)
        empty = np.isnan(result)
    elif valid.all():
        return np.add.reduce(block, axis=axis) / block.dtype.type(block.shape[axis]), np.zeros(
            np.delete(block.shape, axis), dtype=bool)
    else:
        count = np.add.reduce(valid, axis=axis, dtype=np.int32)
        total = np.add.reduce(np.where(valid, block, block.dtype.type(0)), axis=axis)
        empty = count == 0
        result = total / np.maximum(count, 1).astype(block.dtype)
    result[empty] = 0
    return result, empty


def reduce_cube(cube: xr.DataArray, how: str = "mean") -> xr.DataArray:
    """Collapse the latitude axis of a cube into a PV image, ignoring NaN.

    Parameters
    ----------
    cube:
        Cube ``(extra?, lon, lat, velocity)`` in any dim order (standardised first); data in
        any unit (kept).
    how:
        ``"mean"`` (average over the valid latitude pixels, NaN-aware) or ``"max"`` (largest
        value, NaN ignored).

    Returns
    -------
    DataArray ``(extra?, lon, velocity)`` in the cube's unit, same float dtype.  A
    ``(lon, velocity)`` pixel whose latitudes are all NaN becomes 0; the fraction of such
    pixels is stored in ``attrs["all_nan_fraction"]`` and the reduction in
    ``attrs["reduction"]``.
    """
    if how not in REDUCTIONS:
        raise ValueError(f"reduction how={how!r} is not known; use 'mean' or 'max'")
    std = standardize_cube(cube, to_kelvin=False)
    extra = std.ndim == 4
    data = np.asarray(std.data)
    stack = data if extra else data[None]
    n_lon = stack.shape[1]
    per_block = max(1, _BLOCK_BYTES // max(1, stack[0, 0].nbytes))
    result = np.empty(stack.shape[:2] + stack.shape[3:], dtype=stack.dtype)
    n_empty = 0
    for index in range(stack.shape[0]):
        for start in range(0, n_lon, per_block):
            block = stack[index, start:start + per_block]
            values, empty = _reduce_block(block, how, axis=1)
            result[index, start:start + per_block] = values
            n_empty += int(np.count_nonzero(empty))
    if not extra:
        result = result[0]
    dims = tuple(d for d in std.dims if d != "lat")
    coords = {name: std.coords[name] for name in dims if name in std.coords}
    attrs = dict(std.attrs)
    attrs["reduction"] = how
    attrs["all_nan_fraction"] = n_empty / result.size
    return xr.DataArray(result, dims=dims, coords=coords, attrs=attrs, name=std.name)
