"""The 2-D forward model: top-down maps -> PV, exact for vrho when velocity does not vary with latitude."""

import numpy as np
import pytest
import torch

from iris_nb.grids import SMALL
from iris_nb.sim import make_cmz
from iris_nb.sim.columnize import columnize_tensors, columnize_velocity, columnize_velocity_tensors
from iris_nb.sim.fields import field_tensors, h2_density
from iris_nb.sim.observers import SimpleObserver
from iris_nb.sim.topdown import TopDownObserver

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")


def fields(seed=3, same_velocity=True):
    tensors = field_tensors(make_cmz(GRID, seed=seed), dtype=torch.float64)
    if same_velocity:  # one velocity per (distance, lon) at every latitude
        tensors["velocity_los"] = tensors["velocity_los"][..., :1].expand_as(tensors["velocity_los"]).clone()
    return tensors


def test_reproduces_simple_observer_pv_from_the_top_down_maps():
    f = fields()
    pv = SimpleObserver(GRID)(f).mean(dim=2)  # (B, lon, v)
    density, velocity = columnize_tensors(f), columnize_velocity_tensors(f)
    assert torch.allclose(velocity, f["velocity_los"][..., 0])
    again = TopDownObserver(GRID).double()(density.unsqueeze(1), velocity.unsqueeze(1))[:, 0]
    scale = pv.abs().max()
    assert (again - pv).abs().max() <= 1e-12 * scale
    # real fields: velocities differ across latitude, the forward model is then an approximation
    g = fields(same_velocity=False)
    blurred = TopDownObserver(GRID).double()(columnize_tensors(g).unsqueeze(1),
                                             columnize_velocity_tensors(g).unsqueeze(1))[:, 0]
    real = SimpleObserver(GRID)(g).mean(dim=2)
    assert torch.allclose(blurred.sum(), real.sum(), rtol=1e-3)  # mass is kept
    assert (blurred - real).abs().max() > 1e-3 * real.abs().max()


def test_velocity_map_is_the_h2_weighted_mean():
    field = make_cmz(GRID, seed=5)
    top = columnize_velocity(field)
    rho = h2_density(field["density"].values, field["x_h2"].values)
    expected = (rho * field["velocity_los"].values).sum(-1) / rho.sum(-1)
    np.testing.assert_allclose(top.values, expected, rtol=2e-3, atol=0.05)
    assert top.attrs["units"] == "km / s" and top.dims == ("distance", "lon")


def test_gradient_of_the_data_misfit_lowers_it():
    f = fields(seed=8)
    target = TopDownObserver(GRID).double()(columnize_tensors(f).unsqueeze(1), columnize_velocity_tensors(f).unsqueeze(1))
    forward = TopDownObserver(GRID).double()
    density = (columnize_tensors(f).unsqueeze(1) * 0.5).requires_grad_(True)
    velocity = (columnize_velocity_tensors(f).unsqueeze(1) + 3.0).requires_grad_(True)
    misfit = 0.5 * (forward(density, velocity) - target).square().sum()
    gd, gv = torch.autograd.grad(misfit, (density, velocity))
    assert gv.abs().sum() > 0  # the velocity is learnable through the tent weights
    step = 1e-3 / gd.abs().max()
    lower = 0.5 * (forward(density - step * gd, velocity) - target).square().sum()
    assert lower < misfit


def test_brightness_surrogate_and_bad_input():
    model = TopDownObserver(GRID, input_space="temperature", scale=0.5)
    d = torch.rand(2, 1, 64, 64)
    v = torch.zeros(2, 1, 64, 64)
    assert torch.allclose(model(d, v), 0.5 * TopDownObserver(GRID)(d, v), rtol=1e-6)
    assert not model.log_scale.requires_grad and TopDownObserver(GRID, "temperature").log_scale.requires_grad
    with pytest.raises(ValueError, match="distance, lon"):
        model(d[:, :, :10], v)
    with pytest.raises(ValueError, match="v_density"):
        TopDownObserver(GRID, input_space="intensity")
    with pytest.raises(ValueError, match="positive"):
        TopDownObserver(GRID, input_space="temperature", scale=-1.0)
