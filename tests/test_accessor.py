"""The `.iris` accessor: registration, delegation, argument checks and property-based fuzzing."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import iris_nb
import iris_nb.accessor  # noqa: F401  (registers .iris)
from cubes import make_cube
from iris_nb.cube import reduce_cube, standardize_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.model import Reverter
from iris_nb.regrid import regrid_cube
from iris_nb.reversion import revert

GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8), velocity=Axis(-200.0, 200.0, 64),
                     distance=SMALL.distance.with_steps(64), name="grid64")


def fits_like_cube(seed=0):
    """A (velocity, lat, lon) cube in mK with velocities in m/s and descending longitudes, as FITS has it."""
    return make_cube(lon=np.linspace(1.55, -1.55, 80), lat=np.linspace(-0.38, 0.38, 10),
                     velocity=np.linspace(-201.0, 201.0, 90), velocity_units="m/s", units="mK",
                     dims=("velocity", "lat", "lon"), seed=seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Reverter(grid=GRID)


def test_accessor_is_registered():
    assert isinstance(xr.DataArray(np.zeros(3)).iris, iris_nb.accessor.IrisAccessor)


def test_standardize_delegates():
    cube = fits_like_cube()
    std = cube.iris.standardize()
    expected = standardize_cube(cube)
    xr.testing.assert_identical(std, expected)
    assert std.dims == ("lon", "lat", "velocity") and std.attrs["units"] == "K"


def test_reduce_delegates():
    cube = fits_like_cube()
    for how in ("mean", "max"):
        xr.testing.assert_identical(cube.iris.reduce(how), reduce_cube(cube, how))
    assert cube.iris.reduce().attrs["units"] == "mK"
    with pytest.raises(TypeError, match="'mean' or 'max'"):
        cube.iris.reduce(np.mean)
    with pytest.raises(ValueError, match="'mean' or 'max'"):
        cube.iris.reduce("sum")


def test_regrid_accepts_grids_names_and_models(model):
    cube = fits_like_cube()
    by_grid = cube.iris.regrid(GRID)
    xr.testing.assert_identical(by_grid, regrid_cube(cube, GRID))
    xr.testing.assert_identical(cube.iris.regrid(model), by_grid)
    assert cube.iris.regrid("small").shape == SMALL.ppv_shape
    with pytest.raises(TypeError, match="Grid, a preset name or a model"):
        cube.iris.regrid(3.0)


def test_revert_delegates(model):
    cube = fits_like_cube()
    td = cube.iris.revert(model, units="g/cm3", batch_size=1)
    expected = revert(cube, model, units="g/cm3")
    np.testing.assert_allclose(td.values, expected.values, rtol=1e-5, atol=1e-6 * float(np.abs(expected).max()))
    assert td.dims == ("distance", "lon") and td.attrs["units"] == "g/cm3"
    ens = cube.iris.revert([model, model])
    assert set(ens.data_vars) == {"mean", "std", "members"}
    with pytest.raises(TypeError, match="needs a model"):
        cube.iris.revert(None)
    with pytest.raises(ValueError, match="no units"):
        cube.assign_attrs(units=None).iris.revert(model)
    assert cube.assign_attrs(units=None).iris.revert(model, in_units="mK").shape == GRID.top_down_shape


# --------------------------------------------------------------------- property-based fuzzing
FUZZ_GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 6), lat=Axis(-0.375, 0.375, 3), velocity=Axis(-200.0, 200.0, 8),
                          name="fuzz")
COORD_UNITS = {"lon": ["deg"] * 4 + ["arcmin", "rad", "km/s", "bananas", None],
               "lat": ["deg"] * 4 + ["arcsec", "m", None],
               "velocity": ["km/s"] * 3 + ["m/s", "Hz", "deg", "", None]}
TO_UNIT = {"deg": 1.0, "arcmin": 60.0, "arcsec": 3600.0, "rad": np.pi / 180, "km/s": 1.0, "m/s": 1e3}


@st.composite
def fuzz_cubes(draw):
    """Small DataArray cubes with random layout, coordinates, units, dtypes, attrs and NaN."""
    sizes = {name: draw(st.integers(1, 5)) for name in ("lon", "lat", "velocity")}
    spans = {"lon": (-1.6, 1.6), "lat": (-0.4, 0.4), "velocity": (-210.0, 210.0)}
    coords = {}
    for name, size in sizes.items():
        values = np.linspace(*spans[name], size)
        order = draw(st.sampled_from(["ascending"] * 3 + ["descending", "shuffled", "repeated", "nan", "360"]))
        if order == "descending":
            values = values[::-1]
        elif order == "shuffled":
            values = values[draw(st.permutations(range(size)))]
        elif order == "repeated":
            values[-1] = values[0]
        elif order == "nan":
            values[0] = np.nan
        elif order == "360" and name == "lon":
            values = np.mod(values, 360.0)
        unit = draw(st.sampled_from(COORD_UNITS[name]))
        attrs = {} if unit is None else {"units": unit}
        coords[name] = (name, values * TO_UNIT.get(unit, 1.0), attrs)
    dims = list(draw(st.permutations(["lon", "lat", "velocity"])))
    layout = draw(st.sampled_from(["cube"] * 5 + ["stack", "renamed", "flat", "no coords"]))
    dtype = draw(st.sampled_from(["float32"] * 3 + ["float64", "int16", "bool", "complex64", "float16"]))
    data = np.arange(1, np.prod([sizes[d] for d in dims]) + 1).reshape([sizes[d] for d in dims]).astype(dtype)
    nan = draw(st.sampled_from(["none", "none", "plane", "all"]))
    if data.dtype.kind in "fc" and nan == "plane":
        data[0] = np.nan
    elif data.dtype.kind in "fc" and nan == "all":
        data[...] = np.nan
    attrs = {"units": draw(st.sampled_from(["K"] * 4 + ["mK", "Jy/beam", "Jy/sr", "km/s", "bananas", "", None]))}
    attrs.update(draw(st.fixed_dictionaries({}, optional={
        "rest_frequency": st.sampled_from([220.3986842, 0.0, -1.0, 2.2e11, "220 GHz", "fast", float("nan")]),
        "beam_fwhm": st.sampled_from([30.0, 0.0, -5.0, (30.0, 20.0), "wide", float("nan")]),
        "line": st.sampled_from(["13CO(2-1)", "13CO21", "C18O 2-1", ""]),
    })))
    cube = xr.DataArray(data, dims=dims, coords={d: coords[d] for d in dims}, attrs=attrs)
    if layout == "stack":
        cube = xr.concat([cube, cube], dim="sample").assign_attrs(attrs)
    elif layout == "renamed":
        cube = cube.rename(velocity="v")
    elif layout == "flat":
        cube = cube.isel(lat=0)
    elif layout == "no coords":
        cube = cube.drop_vars(["lon"])
    return cube


def _raises_cleanly(call):
    """Run ``call``: its result, or ``None`` after a ValueError/TypeError that has a message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except (ValueError, TypeError) as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


def _is_standard(out, cube, dims):
    lead = tuple(d for d in cube.dims if d not in ("lon", "lat", "velocity"))
    assert out.dims == lead + dims
    for name in dims:
        values = out[name].values
        assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0), name


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(fuzz_cubes(), st.sampled_from(["standardize", "reduce mean", "reduce max", "regrid"]))
def test_accessor_methods_return_a_cube_or_say_why(cube, method):
    calls = {
        "standardize": lambda: cube.iris.standardize(),
        "reduce mean": lambda: cube.iris.reduce("mean"),
        "reduce max": lambda: cube.iris.reduce("max"),
        "regrid": lambda: cube.iris.regrid(FUZZ_GRID),
    }
    out = _raises_cleanly(calls[method])
    if out is None:
        return
    dims = ("lon", "velocity") if method.startswith("reduce") else ("lon", "lat", "velocity")
    _is_standard(out, cube, dims)
    if method == "regrid":
        assert out.shape[-3:] == FUZZ_GRID.ppv_shape
