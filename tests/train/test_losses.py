"""Physical losses: formulas, normalisation from the model's units, unit invariance."""

import math

import astropy.units as u
import numpy as np
import pytest
import torch

from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.train.losses import MSELoss, ScaledDensityLoss, make_loss, normalization_in_units

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8))


def maps(seed=0, shape=(3, 1, 16, 16)):
    gen = torch.Generator().manual_seed(seed)
    true = 5.0 * torch.rand(shape, generator=gen) ** 3
    pred = true + torch.randn(shape, generator=gen) * 2.0
    return pred, true


def test_normalisation_is_paper_value_in_msun_per_pc3():
    loss = ScaledDensityLoss("Msun/pc3")
    expected = (1e-19 * u.kg / u.m**3).to_value(u.solMass / u.pc**3)
    assert loss.n == pytest.approx(expected, rel=1e-9)
    assert loss.n == pytest.approx(1.478, rel=1e-3)


def test_scaled_density_matches_formula():
    pred, true = maps()
    loss = ScaledDensityLoss("solMass / pc3", density_normalization=2e-19)
    n = (2e-19 * u.kg / u.m**3).to_value(u.solMass / u.pc**3)
    expected = np.mean(np.arcsinh(((pred.numpy().astype(float) - true.numpy()) / n) ** 2))
    assert float(loss(pred, true)) == pytest.approx(expected, rel=1e-5)
    residual = loss.normed_residual(pred, true)
    assert torch.allclose(residual, (pred - true) / n)
    assert loss.per_sample(pred, true).shape == (3,)
    assert float(loss.per_sample(pred, true).mean()) == pytest.approx(expected, rel=1e-5)


def test_mse_matches_formula_and_grows_faster_than_scaled():
    pred, true = maps(1)
    mse, scaled = MSELoss(), ScaledDensityLoss()
    expected = np.mean(((pred.numpy().astype(float) - true.numpy()) / mse.n) ** 2)
    assert float(mse(pred, true)) == pytest.approx(expected, rel=1e-5)
    big = true + 100.0  # residual >> n: asinh is logarithmic, mse quadratic
    assert float(mse(big, true)) / float(scaled(big, true)) > 100
    small = true + 1e-3  # residual << n: both are r^2
    assert float(scaled(small, true)) == pytest.approx(float(mse(small, true)), rel=1e-3)


@pytest.mark.parametrize("cls", [ScaledDensityLoss, MSELoss])
def test_unit_invariance_with_models_in_other_units(cls):
    pred, true = maps(2, shape=(2, 1, 64, 64))
    model_msun = Reverter(GRID)
    model_cgs = Reverter(GRID, units={"density": "g / cm3"})
    factor = (1.0 * u.solMass / u.pc**3).to_value(u.g / u.cm**3)
    loss_msun = cls(model_msun)(pred, true)
    loss_cgs = cls(model_cgs)(pred.double() * factor, true.double() * factor)
    assert float(loss_cgs) == pytest.approx(float(loss_msun), rel=1e-5)
    assert cls(model_cgs).n == pytest.approx(cls("g/cm3").n, rel=1e-9)
    assert cls(model_msun).n == pytest.approx(cls("Msun/pc3").n, rel=1e-6)


def test_number_density_unit_is_converted_through_h2_mass():
    n_cm3 = normalization_in_units(1e-19, "cm-3")
    m_h2 = 2.01588 * 1.66053907e-27  # kg
    assert n_cm3 == pytest.approx(1e-19 / m_h2 / 1e6, rel=1e-4)


def test_huge_residuals_stay_finite_with_finite_gradients():
    true = torch.zeros(4)
    pred = torch.tensor([1e-3, 1.0, 1e10, 1e16], requires_grad=True)
    loss = ScaledDensityLoss(1.0)  # n = 1e-19 units: residuals up to 1e35, r^2 beyond float32
    values = loss.pointwise(loss.normed_residual(pred, true))
    r = pred.detach().double() / loss.n
    expected = torch.where(r < 1e100, torch.asinh(r * r), math.log(2) + 2 * torch.log(r))
    assert torch.allclose(values.double(), expected, rtol=1e-5)
    values.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_low_precision_inputs_give_float32_loss():
    pred, true = maps(3)
    value = ScaledDensityLoss()(pred.to(torch.bfloat16), true)
    assert value.dtype == torch.float32
    assert math.isfinite(float(value))


def test_bad_inputs_raise_clear_errors():
    pred, true = maps()
    with pytest.raises(ValueError, match="shape"):
        ScaledDensityLoss()(pred, true[:, :, :8])
    with pytest.raises(TypeError, match="tensors"):
        ScaledDensityLoss()(pred.numpy(), true)
    with pytest.raises(ValueError, match="density_normalization"):
        ScaledDensityLoss(density_normalization=-1.0)
    with pytest.raises(ValueError, match="cannot convert density"):
        ScaledDensityLoss("km/s")
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("huber")
    assert isinstance(make_loss("mse"), MSELoss)


def test_mass_consistent_loss_adds_the_log_mass_ratio():
    from iris_nb.train.losses import MassConsistentLoss

    torch.manual_seed(0)
    true = torch.rand(3, 1, 8, 8) * 10
    loss = make_loss("scaled_density_mass", "solMass / pc3")
    assert isinstance(loss, MassConsistentLoss) and loss.mass_weight == 1.0
    plain = ScaledDensityLoss("solMass / pc3")
    # a map with the right total mass costs only the per-pixel loss
    shuffled = true.flatten(1)[:, torch.randperm(64)].reshape(true.shape)
    assert float(loss(shuffled, true)) == pytest.approx(float(plain(shuffled, true)), rel=1e-5)
    # half the mass: + ln((M/2 + n) / (M + n))^2 per sample, whatever the pixels
    half = true / 2
    n = loss.n
    m = true.flatten(1).sum(1) / n
    expected = float(plain(half, true)) + float(torch.log((m / 2 + 1) / (m + 1)).square().mean())
    assert float(loss(half, true)) == pytest.approx(expected, rel=1e-5)
    # symmetric in log: twice the mass costs about as much as half
    assert float(loss.mass_term(true * 2, true).mean()) == pytest.approx(
        float(loss.mass_term(half, true).mean()), rel=0.05)
    per = loss.per_sample(half, true)
    assert per.shape == (3,) and float(per.mean()) == pytest.approx(expected, rel=1e-5)
    # the gradient pushes an under-predicted map up
    pred = half.clone().requires_grad_(True)
    MassConsistentLoss("solMass / pc3", mass_weight=5.0)(pred, true).backward()
    assert float(pred.grad.sum()) < 0
    with pytest.raises(ValueError, match="mass_weight"):
        MassConsistentLoss("solMass / pc3", mass_weight=-1.0)
