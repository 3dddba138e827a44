"""Tests for iris_nb.sim.columnize: latitude-averaged H2 density targets."""

import astropy.units as u
import numpy as np
import pytest
import torch

from iris_nb.grids import SMALL, Axis
from iris_nb.sim.columnize import columnize, columnize_tensors
from iris_nb.sim.fields import HYDROGEN_MASS_FRACTION, field_from_arrays, field_tensors

GRID = SMALL.replace(distance=Axis(8052.0, 8502.0, 20), lon=Axis(-1.5, 1.5, 24), lat=Axis(-0.375, 0.375, 10))
SHAPE = (20, 24, 10)


def test_single_dense_cell_lands_in_its_pixel():
    density = np.zeros(SHAPE)
    density[7, 15, 3] = 1000.0
    field = field_from_arrays(GRID, density=density, x_h2=0.5, seed=4, model="test")
    top = columnize(field)
    assert top.dims == ("distance", "lon") and top.shape == (20, 24)
    assert top.dtype == np.float32
    expected = 1000.0 * 2 * 0.5 * HYDROGEN_MASS_FRACTION / 10  # H2 density over N_lat = 10
    assert float(top[7, 15]) == pytest.approx(expected, rel=1e-6)
    assert float(top.sum()) == pytest.approx(expected, rel=1e-6)
    assert np.argwhere(top.values > 0).tolist() == [[7, 15]]
    assert top.attrs["units"] == "solMass / pc3"
    assert top["distance"].attrs["units"] == "pc" and top["lon"].attrs["units"] == "deg"
    np.testing.assert_allclose(top["distance"].values, GRID.distance.centers())
    np.testing.assert_allclose(top["lon"].values, GRID.lon.centers())
    assert top.attrs["seed"] == 4 and top.attrs["model"] == "test"


def test_atomic_gas_contributes_nothing_and_units_are_converted():
    density = np.full(SHAPE, 3.0)
    x_h2 = np.zeros(SHAPE)
    x_h2[:, :, :5] = 0.25
    field = field_from_arrays(GRID, density=density, x_h2=x_h2)
    top = columnize(field)
    np.testing.assert_allclose(top.values, 3.0 * 2 * 0.25 * HYDROGEN_MASS_FRACTION * 5 / 10, rtol=1e-6)
    # the same field with density in g/cm3 gives the same target in solMass/pc3
    cgs = field.copy()
    cgs["density"] = field["density"] * (1 * u.solMass / u.pc**3).to_value(u.g / u.cm**3)
    cgs["density"].attrs["units"] = "g / cm3"
    np.testing.assert_allclose(columnize(cgs).values, top.values, rtol=1e-6)


def test_tensor_version_equals_xarray_version():
    rng = np.random.default_rng(2)
    fields = [field_from_arrays(GRID, density=rng.lognormal(0, 1.5, SHAPE), x_h2=rng.uniform(0, 0.5, SHAPE))
              for _ in range(3)]
    tensors = field_tensors(fields)
    tensors["density"].requires_grad_(True)
    batch = columnize_tensors(tensors)
    assert batch.shape == (3, 20, 24) and batch.dtype == torch.float32
    for i, field in enumerate(fields):
        np.testing.assert_allclose(batch[i].detach().numpy(), columnize(field).values, rtol=1e-5)
    batch.sum().backward()  # differentiable
    assert tensors["density"].grad is not None
    with pytest.raises(ValueError, match="x_h2"):
        columnize_tensors({"density": tensors["density"]})
    with pytest.raises(ValueError, match="distance, lon, lat"):
        columnize_tensors({"density": torch.ones(2, 3), "x_h2": torch.ones(2, 3)})
