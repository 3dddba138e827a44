"""Per-cell radiative physics and the beam, checked against float64 formulas written out here."""

import math

import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
import torch
from scipy import integrate, special

from iris_nb.grids import SMALL, Axis
from iris_nb.sim import beam as beam_mod
from iris_nb.sim import radiative as rad

LINE = rad.THIRTEEN_CO_21
H, K, C = const.h.value, const.k_B.value, const.c.value


def exact_partition(t, j_max=300):
    j = np.arange(j_max)
    return ((2 * j + 1) * np.exp(-LINE.rotational_temperature * j * (j + 1) / np.asarray(t)[..., None])).sum(-1)


def test_line_constants_are_consistent():
    # E_u / k of J=2 is 6 B0 (h/k) and T0 = h nu / k; nu ~ 4 B0 for J = 2-1
    assert LINE.t0 == pytest.approx(H * 220.3986842e9 / K)
    assert 6 * LINE.rotational_temperature == pytest.approx(LINE.upper_energy, rel=1e-3)
    assert LINE.lower_energy == pytest.approx(2 * LINE.rotational_temperature, rel=2e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partition_function_matches_full_sum(dtype):
    temps = np.geomspace(0.3, 3000, 400)
    q = rad.partition_function(torch.tensor(temps, dtype=dtype), LINE.rotational_temperature)
    rel = np.abs(q.double().numpy() / exact_partition(temps) - 1)
    assert rel.max() < (3e-7 if dtype == torch.float64 else 1e-6)


def test_upper_level_factor_matches_textbook_form():
    temps = np.array([3.0, 10.0, 20.0, 21.2, 50.0, 300.0])
    got = rad.upper_level_factor(torch.tensor(temps, dtype=torch.float64)).numpy()
    expected = LINE.g_upper * np.exp(-LINE.upper_energy / temps) * np.expm1(LINE.t0 / temps) / exact_partition(temps)
    np.testing.assert_allclose(got, expected, rtol=3e-7)
    # never overflows for very cold gas
    cold = rad.upper_level_factor(torch.tensor([0.05], dtype=torch.float32))
    assert torch.isfinite(cold).all() and float(cold) >= 0


def test_rj_temperature_limits_and_planck_inverse():
    t = torch.tensor([0.02, 1.0, 2.725, 10.0, 100.0, 1e4], dtype=torch.float64)
    j = rad.rj_temperature(t, LINE.t0)
    expected = LINE.t0 / np.expm1(LINE.t0 / t.numpy())
    np.testing.assert_allclose(j.numpy(), expected, rtol=1e-12)
    assert float(j[-1]) == pytest.approx(1e4 - LINE.t0 / 2, rel=1e-6)  # RJ limit
    back = rad.planck_brightness_temperature(j[1:], LINE.t0)
    np.testing.assert_allclose(back.numpy(), t[1:].numpy(), rtol=1e-10)
    tt = torch.tensor([0.01, 0.5], dtype=torch.float32, requires_grad=True)
    rad.rj_temperature(tt, LINE.t0).sum().backward()
    assert torch.isfinite(tt.grad).all()


def test_channel_profile_integrates_the_gaussian():
    edges = torch.linspace(-10.0, 10.0, 41, dtype=torch.float64)  # 0.5 km/s channels
    v0, b = 0.37, 1.3
    got = rad.channel_profile(edges[None], torch.tensor([[v0]], dtype=torch.float64),
                              torch.tensor([[b]], dtype=torch.float64))[0].numpy()
    phi = lambda v: np.exp(-((v - v0) / b) ** 2) / (math.sqrt(math.pi) * b)  # noqa: E731
    expected = [integrate.quad(phi, lo, hi)[0] for lo, hi in zip(edges[:-1].numpy(), edges[1:].numpy())]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("v0", [0.0, 1.5, 1.4999, 2.9, -3.3])
def test_channel_profile_conserves_flux_of_a_narrow_line(v0):
    # b = 0.05 km/s in 3 km/s channels: a point-sampled profile would be far off
    edges = torch.linspace(-30.0, 30.0, 21, dtype=torch.float32)
    prof = rad.channel_profile(edges[None], torch.tensor([[v0]]), torch.tensor([[0.05]]))[0]
    assert float(prof.sum()) == pytest.approx(1.0, abs=1e-6)
    inside = int(np.searchsorted(edges.numpy(), v0, side="right")) - 1
    assert float(prof[inside]) >= 0.5


def test_channel_profile_far_wing_keeps_relative_precision():
    edges = torch.tensor([[4.0, 4.5, 5.0]], dtype=torch.float32)
    got = rad.channel_profile(edges, torch.zeros(1, 1), torch.ones(1, 1))[0].double().numpy()
    expected = 0.5 * (special.erfc(edges[0, :-1].double().numpy()) - special.erfc(edges[0, 1:].double().numpy()))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_doppler_parameter():
    b = rad.doppler_parameter(torch.tensor([100.0], dtype=torch.float64), 0.0, 29.0)
    assert float(b) == pytest.approx(math.sqrt(2 * K * 100 / (29 * const.u.value)) / 1e3, rel=1e-10)
    b2 = rad.doppler_parameter(torch.tensor([100.0], dtype=torch.float64), 2.0, 29.0)
    assert float(b2) ** 2 == pytest.approx(float(b) ** 2 + 4.0, rel=1e-12)


def test_subthermal_excitation_limits():
    tk = torch.full((3,), 40.0, dtype=torch.float64)
    n = torch.tensor([1e9, 1e4, 1e-3], dtype=torch.float64)
    tex = rad.subthermal_excitation_temperature(tk, n, 1e4, LINE.t0)
    assert float(tex[0]) == pytest.approx(40.0, rel=1e-3)
    assert float(tex[2]) == pytest.approx(rad.T_CMB, rel=1e-3)
    assert rad.T_CMB < float(tex[1]) < 40.0


def test_opacity_scales_against_astropy_quantities():
    rho, dr, x = 10.0 * u.solMass / u.pc**3, 2.0 * u.pc, 1e-6
    n_u_per_factor = (x * rho * dr / (2.01588 * u.u)).to(u.m**-2)
    nu = LINE.rest_frequency * u.GHz
    tau_int = (const.c**3 * LINE.einstein_a / u.s / (8 * np.pi * nu**3) * n_u_per_factor).to(u.km / u.s)
    assert rad.line_opacity_scale() * x * 10.0 * 2.0 == pytest.approx(tau_int.value, rel=1e-6)
    n_h2 = (1 * u.solMass / u.pc**3 / (2.01588 * u.u)).to_value(u.cm**-3)
    assert rad.h2_number_density_scale() == pytest.approx(n_h2, rel=1e-6)
    kappa = 0.899 * (LINE.rest_frequency / 230.0) ** 1.8 / 100 * u.cm**2 / u.g
    assert rad.dust_opacity_scale(LINE.rest_frequency) == pytest.approx(
        (kappa * 1 * u.solMass / u.pc**2).to_value(u.one), rel=1e-6)


def test_transfer_step_with_dust_equals_direct_difference():
    rng = np.random.default_rng(3)
    ex, tl = rng.uniform(-1, 5, 50), np.concatenate([[0.0, 1e-9], rng.uniform(0, 5, 48)])
    jl, ic, td, jd = rng.uniform(0, 30, 50), rng.uniform(0.8, 3, 50), rng.uniform(0, 2, 50), rng.uniform(0, 20, 50)
    td[:3] = 0.0
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = rad.transfer_step(t(ex), t(tl), t(jl), t(ic), t(td), t(jd)).numpy()
    tau = tl + td
    with np.errstate(invalid="ignore", divide="ignore"):
        source = np.where(tau > 0, (jl * tl + jd * td) / tau, 0.0)
    i_new = (ex + ic) * np.exp(-tau) + source * -np.expm1(-tau)
    ic_new = ic * np.exp(-td) + jd * -np.expm1(-td)
    np.testing.assert_allclose(got, i_new - ic_new, rtol=1e-10, atol=1e-12)
    no_dust = rad.transfer_step(t(ex), t(tl), t(jl), t(ic)).numpy()
    np.testing.assert_allclose(no_dust, ex * np.exp(-tl) + (jl - ic) * -np.expm1(-tl), rtol=1e-12)


# ----------------------------------------------------------------------------- beam
@pytest.mark.parametrize("fwhm", [0.3, 1.42, 4.0])
def test_gaussian_kernel_moments(fwhm):
    k = beam_mod.gaussian_kernel(fwhm)
    offsets = np.arange(len(k)) - (len(k) - 1) // 2
    sigma = fwhm / math.sqrt(8 * math.log(2))
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    cdf = special.erf((offsets[:, None] + np.array([-0.5, 0.5])) / (math.sqrt(2) * sigma))
    np.testing.assert_allclose(k, 0.5 * (cdf[:, 1] - cdf[:, 0]), rtol=1e-6, atol=1e-15)  # up to the 5-sigma renormalisation
    if sigma > 1:  # the sampled kernel then has the variance of Gaussian * pixel
        assert (k * offsets**2).sum() == pytest.approx(sigma**2 + 1 / 12, rel=1e-5)


def test_apply_beam_point_source_fwhm_and_flux():
    grid = SMALL.replace(lon=Axis(-0.205, 0.205, 41), lat=Axis(-0.205, 0.205, 41), beam_fwhm=180.0)
    fwhm_lon, fwhm_lat = beam_mod.beam_fwhm_pixels(grid)
    assert fwhm_lon == pytest.approx(5.0) and fwhm_lat == pytest.approx(5.0)
    cube = torch.zeros(1, 41, 41, 2, dtype=torch.float64)
    cube[0, 20, 20, 0] = 7.0
    out = beam_mod.apply_beam(cube, grid)
    img = out[0, :, :, 0].numpy()
    assert img.sum() == pytest.approx(7.0, rel=1e-10)
    assert np.abs(out[0, :, :, 1].numpy()).max() == 0
    x = np.arange(41) - 20
    for profile in (img.sum(1), img.sum(0)):
        var = (profile * x**2).sum() / profile.sum() - 1 / 12
        assert math.sqrt(var) * math.sqrt(8 * math.log(2)) == pytest.approx(5.0, rel=1e-4)
    # half maximum of the (nearly Gaussian) central row lies 2.5 px from the peak
    row = img[:, 20] / img[20, 20]
    assert row[18] > 0.5 > row[17]


def test_apply_beam_skips_tiny_beams_and_rejects_bad_fwhm():
    grid = SMALL.replace(beam_fwhm=0.5)  # 0.006 px of SMALL's 84" pixels
    cube = torch.rand(1, 128, 32, 3)
    assert torch.equal(beam_mod.apply_beam(cube, grid), cube)
    with pytest.raises(ValueError, match="positive"):
        beam_mod.gaussian_kernel(0.0)
