"""The `.iris` accessor: registration, delegation and argument checks."""

import numpy as np
import pytest
import torch
import xarray as xr

import iris_nb
import iris_nb.accessor  # noqa: F401  (registers .iris)
from iris_nb.cube import reduce_cube, standardize_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.model import Reverter
from iris_nb.regrid import regrid_cube
from iris_nb.reversion import revert

GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8), velocity=Axis(-200.0, 200.0, 64),
                     distance=SMALL.distance.with_steps(64), name="grid64")


def make_cube(n_lon=80, n_lat=10, n_v=90, seed=0):
    rng = np.random.default_rng(seed)
    lon = np.linspace(1.55, -1.55, n_lon)  # FITS-like descending longitudes
    lat = np.linspace(-0.38, 0.38, n_lat)
    velocity = np.linspace(-201e3, 201e3, n_v)  # m/s
    return xr.DataArray(
        rng.random((n_v, n_lat, n_lon)).astype(np.float32),
        dims=("velocity", "lat", "lon"),
        coords={
            "lon": ("lon", lon, {"units": "deg"}),
            "lat": ("lat", lat, {"units": "deg"}),
            "velocity": ("velocity", velocity, {"units": "m/s"}),
        },
        attrs={"units": "mK"},
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Reverter(grid=GRID)


def test_accessor_is_registered():
    assert isinstance(xr.DataArray(np.zeros(3)).iris, iris_nb.accessor.IrisAccessor)


def test_standardize_delegates():
    cube = make_cube()
    std = cube.iris.standardize()
    expected = standardize_cube(cube)
    xr.testing.assert_identical(std, expected)
    assert std.dims == ("lon", "lat", "velocity") and std.attrs["units"] == "K"


def test_reduce_delegates():
    cube = make_cube()
    for how in ("mean", "max"):
        xr.testing.assert_identical(cube.iris.reduce(how), reduce_cube(cube, how))
    assert cube.iris.reduce().attrs["units"] == "mK"
    with pytest.raises(TypeError, match="'mean' or 'max'"):
        cube.iris.reduce(np.mean)
    with pytest.raises(ValueError, match="'mean' or 'max'"):
        cube.iris.reduce("sum")


def test_regrid_accepts_grids_names_and_models(model):
    cube = make_cube()
    by_grid = cube.iris.regrid(GRID)
    xr.testing.assert_identical(by_grid, regrid_cube(cube, GRID))
    xr.testing.assert_identical(cube.iris.regrid(model), by_grid)
    assert cube.iris.regrid("small").shape == SMALL.ppv_shape
    with pytest.raises(TypeError, match="Grid, a preset name or a model"):
        cube.iris.regrid(3.0)


def test_revert_delegates(model):
    cube = make_cube()
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
