"""Tests for iris_nb.sim.fields: building, validating and batching physical fields."""

import json

import astropy.units as u
import numpy as np
import pytest
import torch
import xarray as xr

from iris_nb.grids import SMALL, Axis
from iris_nb.sim.fields import (
    FIELD_DIMS,
    HYDROGEN_MASS_FRACTION,
    REQUIRED_VARIABLES,
    empty_field,
    field_from_arrays,
    field_tensors,
    h2_density,
    validate_field,
)
from iris_nb.sim.kinematics import SUN_CIRCULAR_VELOCITY, line_of_sight_velocity

GRID = SMALL.replace(distance=Axis(8052.0, 8502.0, 16), lon=Axis(-1.5, 1.5, 12),
                     lat=Axis(-0.375, 0.375, 8))
SHAPE = (16, 12, 8)


def random_field(seed=0, **extra):
    rng = np.random.default_rng(seed)
    return field_from_arrays(
        GRID,
        density=rng.uniform(0, 100, SHAPE),
        velocity_los=rng.normal(0, 50, SHAPE),
        temperature=rng.uniform(20, 200, SHAPE),
        x_h2=rng.uniform(0, 0.5, SHAPE),
        x_tracer=rng.uniform(1e-6, 1e-5, SHAPE),
        seed=seed, parameters={"a": 1.5}, model="test", **extra,
    )


def test_field_from_arrays_layout_units_and_attrs():
    field = random_field(3)
    for name in REQUIRED_VARIABLES:
        assert field[name].dims == FIELD_DIMS
        assert field[name].dtype == np.float32
        assert field[name].shape == SHAPE
    assert field["density"].attrs["units"] == "solMass / pc3"
    assert field["velocity_los"].attrs["units"] == "km / s"
    assert field["temperature"].attrs["units"] == "K"
    assert field["distance"].attrs["units"] == "pc"
    np.testing.assert_allclose(field["lon"].values, GRID.lon.centers())
    assert json.loads(field.attrs["parameters"]) == {"a": 1.5}
    assert field.attrs["seed"] == 3 and field.attrs["model"] == "test"
    assert validate_field(field) == GRID


def test_empty_field_and_scalar_broadcast():
    field = empty_field(GRID)
    assert float(field["density"].sum()) == 0.0
    assert float(field["temperature"].min()) > 0
    assert field.attrs["seed"] == -1
    field = field_from_arrays(GRID, density=np.arange(16.0)[:, None, None], temperature_dust=20.0)
    assert field["density"].shape == SHAPE
    assert float(field["density"][5, 3, 2]) == 5.0
    assert "temperature_dust" in field


def test_h2_density_numpy_torch_xarray_agree():
    rho = np.array([1.0, 10.0, 100.0])
    x = np.array([0.5, 0.25, 0.0])
    expected = 2 * HYDROGEN_MASS_FRACTION * x * rho
    np.testing.assert_allclose(h2_density(rho, x), expected)
    np.testing.assert_allclose(h2_density(torch.tensor(rho), torch.tensor(x)).numpy(), expected)
    np.testing.assert_allclose(h2_density(xr.DataArray(rho), xr.DataArray(x)).values, expected)
    # fully molecular gas: H2 carries the hydrogen mass fraction
    assert h2_density(1.0, 0.5) == pytest.approx(HYDROGEN_MASS_FRACTION)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("density", -1.0, "negative"),
        ("temperature", 0.0, "> 0 K"),
        ("x_h2", 0.6, "[0, 0.5]"),
        ("velocity_los", np.nan, "NaN"),
        ("x_tracer", -1e-6, ">= 0"),
    ],
)
def test_validate_rejects_bad_values(name, value, message):
    field = random_field()
    field[name].values[2, 3, 4] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_field(field)


def test_validate_rejects_missing_variables_wrong_dims_and_types():
    field = random_field()
    with pytest.raises(ValueError, match="x_tracer"):
        validate_field(field.drop_vars("x_tracer"))
    bad = field.copy()
    bad["temperature"] = bad["temperature"].rename(lat="b")
    with pytest.raises(ValueError, match="dims"):
        validate_field(bad)
    with pytest.raises(TypeError, match="xarray.Dataset"):
        validate_field(field["density"])
    bad = field.copy()
    bad["density"].attrs["units"] = "km/s"
    with pytest.raises(ValueError, match="units"):
        validate_field(bad)


def test_validate_rejects_grid_mismatch():
    field = random_field()
    other = GRID.replace(lon=Axis(-1.0, 1.0, 12))
    with pytest.raises(ValueError, match="lon coordinates"):
        validate_field(field, other)
    with pytest.raises(ValueError, match="distance"):
        validate_field(field, GRID.replace(distance=Axis(8052.0, 8502.0, 32)))
    with pytest.raises(ValueError, match="R0"):
        validate_field(field, GRID.replace(observer_distance=8178.0))
    with pytest.raises(ValueError, match="does not broadcast"):
        field_from_arrays(GRID, density=np.ones((3, 3, 3)))


def test_validate_infers_grid_from_coords():
    field = random_field()
    del field.attrs["grid"]
    grid = validate_field(field)
    for name in FIELD_DIMS:
        assert getattr(grid, name).steps == getattr(GRID, name).steps
        assert getattr(grid, name).start == pytest.approx(getattr(GRID, name).start)
        assert getattr(grid, name).stop == pytest.approx(getattr(GRID, name).stop)
    assert validate_field(field, GRID) is GRID


def test_field_tensors_shapes_order_and_unit_conversion():
    a, b = random_field(1), random_field(2)
    tensors = field_tensors([a, b])
    assert set(tensors) == set(REQUIRED_VARIABLES)
    for name, t in tensors.items():
        assert t.shape == (2,) + SHAPE and t.dtype == torch.float32
        np.testing.assert_array_equal(t[1].numpy(), b[name].values)
    # a transposed field and a density in g/cm3 give the same tensors
    c = b.transpose("lat", "distance", "lon")
    c["density"] = c["density"] * (1 * u.solMass / u.pc**3).to_value(u.g / u.cm**3)
    c["density"].attrs["units"] = "g / cm3"
    single = field_tensors(c)
    assert single["density"].shape == (1,) + SHAPE
    np.testing.assert_allclose(single["density"][0].numpy(), b["density"].values, rtol=1e-6)
    np.testing.assert_array_equal(single["temperature"][0].numpy(), b["temperature"].values)
    with pytest.raises(ValueError, match="temperature_dust"):
        field_tensors([a, random_field(5, temperature_dust=np.float32(20.0) * np.ones(SHAPE))])
    with pytest.raises(ValueError, match="empty"):
        field_tensors([])


def test_line_of_sight_velocity_sign_convention():
    r0 = 8277.0
    # gas at positive longitude on a prograde (counter-clockwise in this frame) orbit recedes
    v = line_of_sight_velocity(100.0, 0.0, 0.0, 0.0, 150.0, 0.0, r0)
    assert v > 100
    # gas at rest at the Galactic Centre: only the observer's motion, which is perpendicular
    assert line_of_sight_velocity(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, r0) == pytest.approx(0.0)
    # gas at rest at l ~ +90 deg: the observer approaches it
    v = line_of_sight_velocity(1000.0, -r0, 0.0, 0.0, 0.0, 0.0, r0)
    assert v == pytest.approx(-SUN_CIRCULAR_VELOCITY)
