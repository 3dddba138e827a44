"""Physical fields: the 3D gas that observers see and top-down targets are made from.

A *field* is an :class:`xarray.Dataset` on dims ``("distance", "lon", "lat")`` (this order
in memory) with the coordinates of a :class:`~iris_nb.grids.Grid` (pc, deg, deg) and the
float32 variables

================== ================ ==================================================
variable           units            meaning
================== ================ ==================================================
``density``        solMass / pc3    total gas mass density (all elements)
``velocity_los``   km/s             line-of-sight velocity, v_LSR radio convention,
                                    positive = receding, including the observer's own
                                    circular motion (see :mod:`iris_nb.sim.kinematics`)
``temperature``    K                gas kinetic temperature (> 0)
``x_h2``           (none)           H2 molecules per H nucleus, 0 .. 0.5
``x_tracer``       (none)           tracer molecules (13CO) per H2 molecule
``temperature_dust`` K              optional dust temperature (> 0)
``turbulent_b``    km/s             optional microturbulent Doppler parameter (>= 0) of
                                    motions below the grid scale, ``b = sqrt(2) sigma``:
                                    one value per field (a 0-d variable) or per cell
================== ================ ==================================================

and the dataset attrs ``grid`` (``Grid.to_json()`` text), ``parameters`` (JSON text of the
model parameters), ``seed`` (int, -1 when not random) and ``model`` (its name).

The H2 mass density is ``2 * x_h2 * X * density`` with ``X`` the hydrogen mass fraction
:data:`HYDROGEN_MASS_FRACTION` (an H2 molecule weighs two H nuclei).
"""

from __future__ import annotations

import json
import math

import astropy.units as u
import numpy as np
import torch
import xarray as xr

from ..grids import SEDIGISM, Axis, Grid
from .kinematics import SUN_CIRCULAR_VELOCITY, SUN_RADIAL_VELOCITY, SUN_VERTICAL_VELOCITY

__all__ = [
    "HYDROGEN_MASS_FRACTION",
    "FIELD_DIMS",
    "FIELD_UNITS",
    "REQUIRED_VARIABLES",
    "OPTIONAL_VARIABLES",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TRACER_ABUNDANCE",
    "SUN_CIRCULAR_VELOCITY",
    "SUN_RADIAL_VELOCITY",
    "SUN_VERTICAL_VELOCITY",
    "h2_density",
    "validate_field",
    "field_tensors",
    "empty_field",
    "field_from_arrays",
]

HYDROGEN_MASS_FRACTION = 0.71
"""X, the mass fraction of hydrogen (all forms) in the gas."""

DEFAULT_TEMPERATURE = 50.0
"""Kinetic temperature, K, given to cells that are not told otherwise."""

DEFAULT_TRACER_ABUNDANCE = 1e-4 / 25.0
"""13CO per H2: CO/H2 = 1e-4 and 12CO/13CO = 25 in the Galactic Centre."""

FIELD_DIMS = ("distance", "lon", "lat")
REQUIRED_VARIABLES = ("density", "velocity_los", "temperature", "x_h2", "x_tracer")
OPTIONAL_VARIABLES = ("temperature_dust", "turbulent_b")
FIELD_UNITS = {
    "density": "solMass / pc3",
    "velocity_los": "km / s",
    "temperature": "K",
    "x_h2": "",
    "x_tracer": "",
    "temperature_dust": "K",
    "turbulent_b": "km / s",
}


def h2_density(density, x_h2):
    """H2 mass density ``2 * x_h2 * X * density``.

    Works on numpy arrays, torch tensors, xarray objects and floats of any broadcastable
    shapes, e.g. ``(B, distance, lon, lat)``.  ``density`` is the total gas mass density in
    any unit (the result has the same unit, usually solMass / pc3); ``x_h2`` is H2 per H
    nucleus (dimensionless, 0 .. 0.5).
    """
    return (2.0 * HYDROGEN_MASS_FRACTION) * x_h2 * density


# --------------------------------------------------------------------------- validation
def unit_factor(name: str, units) -> float:
    """Factor turning values of variable ``name`` in ``units`` into :data:`FIELD_UNITS`."""
    target = FIELD_UNITS[name]
    if units is None:
        return 1.0
    text = str(units).strip().replace("Msun", "solMass")
    if target == "":
        if text in ("", "1", "dimensionless"):
            return 1.0
        raise ValueError(f"field variable {name!r} must be dimensionless, but has units {units!r}; "
                         "set attrs['units'] = '' (a ratio per molecule or nucleus)")
    try:
        return float((1.0 * u.Unit(text)).to_value(u.Unit(target)))
    except (ValueError, TypeError, u.UnitConversionError):
        raise ValueError(f"field variable {name!r} has units {units!r}; expected something convertible "
                         f"to {target!r} (fix attrs['units'] of that variable)") from None


def _axis_from_centers(name: str, centers: np.ndarray) -> Axis:
    """An :class:`Axis` whose pixel centres are ``centers`` (uniform, ascending)."""
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 1 or centers.size < 1:
        raise ValueError(f"field coordinate {name!r} must be 1-D and non-empty, got shape {centers.shape}")
    if centers.size == 1:
        raise ValueError(f"field coordinate {name!r} has a single pixel, so its width is unknown; "
                         "store the grid in attrs['grid'] (field_from_arrays does this)")
    steps = np.diff(centers)
    step = steps.mean()
    if step <= 0 or not np.allclose(steps, step, rtol=1e-4, atol=0):
        raise ValueError(f"field coordinate {name!r} must be equally spaced and ascending; "
                         "sort it (field.sortby(name)) or regrid the field")
    return Axis(centers[0] - step / 2, centers[-1] + step / 2, centers.size)


def _grid_from_field(field: xr.Dataset) -> Grid:
    text = field.attrs.get("grid")
    if text is not None:
        try:
            return Grid.from_json(text) if isinstance(text, str) else Grid.from_dict(dict(text))
        except (ValueError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"field attrs['grid'] is not a valid grid description ({err}); "
                             "set it to grid.to_json()") from None
    missing = [d for d in FIELD_DIMS if d not in field.coords]
    if missing:
        raise ValueError(f"field has no attrs['grid'] and no coordinates {missing}; "
                         "build fields with field_from_arrays(grid, ...)")
    axes = {d: _axis_from_centers(d, field[d].values) for d in FIELD_DIMS}
    return SEDIGISM.replace(**axes, name="from-coords")


def _check_axes_match(field: xr.Dataset, grid: Grid, what: str) -> None:
    for name in FIELD_DIMS:
        axis = getattr(grid, name)
        if name not in field.coords:
            if field.sizes.get(name) != axis.steps:
                raise ValueError(f"field has {field.sizes.get(name)} {name} pixels but {what} has "
                                 f"{axis.steps}; regrid the field or use the grid it was made on")
            continue
        values = np.asarray(field[name].values, dtype=np.float64)
        expected = axis.centers()
        if values.shape != expected.shape or not np.allclose(values, expected, rtol=0,
                                                              atol=1e-3 * axis.step):
            got = f"{values.size} pixels over [{values.min():g}, {values.max():g}]" if values.size else "none"
            raise ValueError(
                f"field {name} coordinates ({got}) do not match {what}'s {name} axis "
                f"({axis.steps} pixel centres over [{expected[0]:g}, {expected[-1]:g}]); "
                "make the field on that grid or regrid it"
            )


def validate_field(field: xr.Dataset, grid: Grid | None = None) -> Grid:
    """Check that ``field`` is a usable physical field and return its grid.

    Checks the type, the presence of the variables of the module table, their dims (the set
    ``{"distance", "lon", "lat"}``, any order), their units, finiteness (no NaN or inf),
    ``density >= 0``, ``temperature > 0`` (and ``temperature_dust > 0`` if present),
    ``0 <= x_h2 <= 0.5``, ``x_tracer >= 0``; and that the coordinates agree with the grid
    stored in ``attrs["grid"]`` and, if given, with ``grid`` (its distance, lon and lat windows
    and, when the field stores its grid, the observer distance).

    Returns
    -------
    Grid
        The field's grid: parsed from ``attrs["grid"]``; else ``grid`` when given; else inferred
        from the coordinates (velocity axis, R0 and line from the SEDIGISM preset).

    Raises
    ------
    TypeError
        ``field`` is not an :class:`xarray.Dataset`.
    ValueError
        Anything else, with a message naming the variable and the fix.
    """
    if not isinstance(field, xr.Dataset):
        raise TypeError(f"a physical field is an xarray.Dataset, got {type(field).__name__}; "
                        "build one with iris_nb.sim.fields.field_from_arrays(grid, ...)")
    missing = [name for name in REQUIRED_VARIABLES if name not in field.data_vars]
    if missing:
        raise ValueError(f"field is missing the variables {missing}; a field needs "
                         f"{list(REQUIRED_VARIABLES)} (optional {list(OPTIONAL_VARIABLES)})")
    names = list(REQUIRED_VARIABLES) + [n for n in OPTIONAL_VARIABLES if n in field.data_vars]
    for name in names:
        var = field[name]
        if name == "turbulent_b" and var.ndim == 0:
            unit_factor(name, var.attrs.get("units"))
            continue
        if set(var.dims) != set(FIELD_DIMS) or var.ndim != 3:
            raise ValueError(f"field variable {name!r} has dims {var.dims}; expected "
                             f"{FIELD_DIMS} (transpose or rename the dims)")
        unit_factor(name, var.attrs.get("units"))

    own = _grid_from_field(field)
    _check_axes_match(field, own, "the field's own grid (attrs['grid'])")
    if grid is not None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an iris_nb.grids.Grid, got {type(grid).__name__}")
        _check_axes_match(field, grid, "the requested grid")
        if "grid" in field.attrs and not math.isclose(own.observer_distance, grid.observer_distance,
                                                      rel_tol=1e-9):
            raise ValueError(f"field was made for an observer at R0 = {own.observer_distance:g} pc "
                             f"but the grid has R0 = {grid.observer_distance:g} pc; remake the field")

    for name in names:
        values = np.asarray(field[name].values)
        low, high = float(np.min(values)), float(np.max(values))
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise ValueError(f"field variable {name!r} has {bad} NaN or infinite values; "
                             "fill them (e.g. field[name].fillna(...)) before observing")
        if name == "density" and low < 0:
            raise ValueError(f"field density has negative values (min {low:g}); densities must be >= 0")
        if name in ("temperature", "temperature_dust") and low <= 0:
            raise ValueError(f"field {name} must be > 0 K everywhere, min is {low:g}; "
                             "give empty cells a positive temperature (e.g. 50 K)")
        if name == "x_h2" and (low < 0 or high > 0.5):
            raise ValueError(f"field x_h2 (H2 per H nucleus) must lie in [0, 0.5], got [{low:g}, {high:g}]; "
                             "a fully molecular gas has x_h2 = 0.5")
        if name == "x_tracer" and low < 0:
            raise ValueError(f"field x_tracer must be >= 0, min is {low:g}")
        if name == "turbulent_b" and low < 0:
            raise ValueError(f"field turbulent_b (km/s) must be >= 0, min is {low:g}")
    if "grid" in field.attrs or grid is None:
        return own
    return grid


# --------------------------------------------------------------------------- tensors
def field_tensors(field_or_list, device=None, dtype=torch.float32, validate: bool = True) -> dict:
    """Stack one field or a list of fields into batched tensors for the observers.

    Parameters
    ----------
    field_or_list:
        A field Dataset or a list/tuple of fields on the same grid.
    device, dtype:
        Where and how the tensors are made (default CPU, float32).
    validate:
        Run :func:`validate_field` on each field first (default True).

    Returns
    -------
    dict[str, Tensor]
        Each variable as a ``(B, distance, lon, lat)`` tensor (``B = 1`` for one Dataset) in
        the units of :data:`FIELD_UNITS` (solMass / pc3, km/s, K, dimensionless); attrs
        units that differ (e.g. density in g / cm3) are converted.  ``temperature_dust`` is
        included when every field has it; ``turbulent_b`` too, as ``(B, 1, 1, 1)`` when every
        field holds one value and ``(B, distance, lon, lat)`` otherwise.
    """
    fields = [field_or_list] if isinstance(field_or_list, xr.Dataset) else list(field_or_list)
    if not fields:
        raise ValueError("field_tensors got an empty list of fields; pass at least one field")
    for i, field in enumerate(fields):
        if not isinstance(field, xr.Dataset):
            raise TypeError(f"item {i} of the field list is a {type(field).__name__}, not an xarray.Dataset")
        if validate:
            validate_field(field)
    sizes = {tuple(f.sizes[d] for d in FIELD_DIMS) for f in fields}
    if len(sizes) > 1:
        raise ValueError(f"fields have different (distance, lon, lat) shapes {sorted(sizes)}; "
                         "batch only fields made on the same grid")
    has_dust = ["temperature_dust" in f.data_vars for f in fields]
    if any(has_dust) and not all(has_dust):
        raise ValueError("some fields have temperature_dust and some do not; add it to all or drop it "
                         "(field.drop_vars('temperature_dust'))")
    names = list(REQUIRED_VARIABLES) + (["temperature_dust"] if all(has_dust) else [])
    has_b = ["turbulent_b" in f.data_vars for f in fields]
    if any(has_b) and not all(has_b):
        raise ValueError("some fields have turbulent_b and some do not; add it to all or drop it "
                         "(field.drop_vars('turbulent_b'))")
    scalar_b = all(has_b) and all(f["turbulent_b"].ndim == 0 for f in fields)
    names += ["turbulent_b"] if all(has_b) else []
    out = {}
    for name in names:
        arrays = []
        for field in fields:
            var = field[name]
            if name == "turbulent_b" and scalar_b:
                arr = np.asarray(var.values, dtype=np.float64).reshape(1, 1, 1)
            elif var.ndim == 0:
                arr = np.broadcast_to(np.asarray(var.values), tuple(field.sizes[d] for d in FIELD_DIMS))
            else:
                arr = np.asarray(var.transpose(*FIELD_DIMS).values)
            factor = unit_factor(name, var.attrs.get("units"))
            if factor != 1.0:
                arr = arr * factor
            arrays.append(torch.as_tensor(np.ascontiguousarray(arr)))
        out[name] = torch.stack(arrays).to(device=device, dtype=dtype)
    return out


# --------------------------------------------------------------------------- builders
def _coords(grid: Grid) -> dict:
    return {name: grid.coord(name) for name in FIELD_DIMS}


def _field_attrs(grid: Grid, attrs: dict) -> dict:
    params = attrs.pop("parameters", {})
    if not isinstance(params, str):
        params = json.dumps(params, sort_keys=True, default=float)
    out = {"grid": grid.to_json(), "parameters": params, "seed": int(attrs.pop("seed", -1)),
           "model": str(attrs.pop("model", "arrays"))}
    out.update(attrs)
    return out


def field_from_arrays(grid: Grid, density=0.0, velocity_los=0.0, temperature=DEFAULT_TEMPERATURE,
                      x_h2=0.5, x_tracer=DEFAULT_TRACER_ABUNDANCE, temperature_dust=None,
                      turbulent_b=None, **attrs) -> xr.Dataset:
    """Build a validated field from arrays (or scalars) on ``grid``.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` whose distance, lon and lat axes the field lives on.
    density:
        Total gas mass density, solMass / pc3, shape ``(distance, lon, lat)`` or broadcastable.
    velocity_los:
        Line-of-sight velocity, km/s, v_LSR radio convention (positive = receding).
    temperature:
        Gas kinetic temperature, K (> 0); default :data:`DEFAULT_TEMPERATURE`.
    x_h2:
        H2 per H nucleus, 0 .. 0.5 (default 0.5, fully molecular).
    x_tracer:
        Tracer (13CO) per H2 (default :data:`DEFAULT_TRACER_ABUNDANCE`).
    temperature_dust:
        Optional dust temperature, K; left out when None.
    turbulent_b:
        Optional microturbulent Doppler parameter, km/s: a number (kept as one 0-d value) or
        an array of the grid's shape; left out when None.
    **attrs:
        Dataset attrs; ``parameters`` (dict or JSON text), ``seed`` (int, default -1) and
        ``model`` (default ``"arrays"``) are normalised, anything else is copied.

    Returns
    -------
    xarray.Dataset
        The field, float32 variables on ``(distance, lon, lat)``, validated.  A C-ordered
        float32 array of the full shape is used without a copy (the field shares its memory).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an iris_nb.grids.Grid, got {type(grid).__name__}")
    shape = tuple(grid.shape[d] for d in FIELD_DIMS)
    values = {"density": density, "velocity_los": velocity_los, "temperature": temperature,
              "x_h2": x_h2, "x_tracer": x_tracer}
    if temperature_dust is not None:
        values["temperature_dust"] = temperature_dust
    data_vars = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value, dtype=np.float32)
        if arr.shape == shape:
            arr = np.ascontiguousarray(arr)  # no copy for C-ordered float32 input
        else:
            try:
                arr = np.array(np.broadcast_to(arr, shape), dtype=np.float32)
            except ValueError:
                raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to the grid's "
                                 f"(distance, lon, lat) = {shape}; give an array of that shape or a "
                                 "scalar") from None
        data_vars[name] = (FIELD_DIMS, arr, {"units": FIELD_UNITS[name]})
    if turbulent_b is not None:
        b = np.asarray(turbulent_b.detach().cpu().numpy() if isinstance(turbulent_b, torch.Tensor) else turbulent_b,
                       dtype=np.float32)
        if b.ndim == 0:
            data_vars["turbulent_b"] = ((), b, {"units": FIELD_UNITS["turbulent_b"]})
        else:
            data_vars["turbulent_b"] = (FIELD_DIMS, np.array(np.broadcast_to(b, shape), dtype=np.float32),
                                        {"units": FIELD_UNITS["turbulent_b"]})
    field = xr.Dataset(data_vars, coords=_coords(grid), attrs=_field_attrs(grid, dict(attrs)))
    validate_field(field)
    return field


def empty_field(grid: Grid, **attrs) -> xr.Dataset:
    """A field with no gas on ``grid``: density 0, velocity 0 km/s, 50 K, x_h2 = 0.5,
    13CO/H2 = 4e-6; every variable float32 ``(distance, lon, lat)``.  ``attrs`` as in
    :func:`field_from_arrays`."""
    return field_from_arrays(grid, **attrs)
