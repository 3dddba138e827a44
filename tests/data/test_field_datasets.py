"""GasModelDataset: deterministic fields drawn on demand, batched by the default collate."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from iris_nb.data.field_datasets import GasModelDataset
from iris_nb.data.store import sample_seed
from iris_nb.grids import SMALL
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.fields import field_from_arrays, field_tensors

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")


def uniform_model(grid, seed=0, level=1.0):
    """A tiny gas model: uniform density ``level * (1 + seed % 7)`` solMass/pc3 at rest."""
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    return field_from_arrays(grid, density=np.full(shape, level * (1 + seed % 7)), velocity_los=0.0, seed=seed % 2**31,
                             model="uniform_model")


def test_items_are_the_gas_model_fields_for_the_store_seeds():
    data = GasModelDataset(GRID, n=3, seed=5)
    assert len(data) == 3 and data.grid == GRID and "make_cmz" in repr(data)
    item = data[1]
    expected = field_tensors(make_cmz(GRID, seed=sample_seed(5, 1)))
    assert set(item) == set(expected)
    for name, value in item.items():
        shape = (1, 1, 1) if name == "turbulent_b" else (64, 64, 8)  # make_cmz's line width: one per field
        assert value.shape == shape and value.dtype == torch.float32
        assert torch.equal(value, expected[name][0])
    assert data.sample_seed(1) == sample_seed(5, 1)
    assert torch.equal(data[1]["density"], data[-2]["density"])  # deterministic, negative index
    assert not torch.equal(data[0]["density"], data[1]["density"])


def test_custom_model_kwargs_and_collate():
    data = GasModelDataset(GRID, n=4, model=uniform_model, seed=2, model_kwargs={"level": 3.0})
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["density"].shape == (4, 64, 64, 8)
    for i in range(4):
        level = 3.0 * (1 + data.sample_seed(i) % 7)
        assert torch.allclose(batch["density"][i], torch.full((64, 64, 8), level))
    assert data.field(0).attrs["model"] == "uniform_model"


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        GasModelDataset(GRID, n=0)
    with pytest.raises(ValueError, match="seed"):
        GasModelDataset(GRID, n=2, seed=-1)
    with pytest.raises(TypeError, match="gas model"):
        GasModelDataset(GRID, n=2, model="make_cmz")
    with pytest.raises(ValueError, match="unknown grid preset"):
        GasModelDataset("TINY", n=2)
    data = GasModelDataset(GRID, n=2, model=uniform_model)
    with pytest.raises(IndexError, match="out of range"):
        data[2]
    with pytest.raises(TypeError, match="integer"):
        data[0.5]
    broken = GasModelDataset(GRID, n=1, model=lambda grid, seed: np.zeros(3))
    with pytest.raises(TypeError, match="xarray.Dataset"):
        broken[0]
