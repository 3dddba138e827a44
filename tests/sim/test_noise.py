"""Noise: the survey defaults and the channel-width scaling of the rms, the PV-space laws (mean
and max over latitude), per-sample fade, beam-correlated noise, reproducibility, configuration
round trips (old files included) and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from iris_nb.grids import SEDIGISM, SMALL, Axis
from iris_nb.sim.noise import Noise, NoiseConfig, as_noise_config, beam_kernel

# A grid whose 300" beam covers ~1.5 pixels rms (84.4" pixels): correlations well resolved.
WIDE_BEAM = SMALL.replace(beam_fwhm=300.0)


def white(sigma=1.0, **kwargs):
    """White noise whose ``sigma`` is the rms per pixel of whatever it is drawn on."""
    return Noise(sigma=sigma, channel_width="grid", correlated_beam=False, **kwargs)


def per_pixel(sigma=1.0, **kwargs):
    """Beam-correlated noise (the default) with ``sigma`` the rms per grid pixel."""
    return Noise(sigma=sigma, channel_width="grid", **kwargs)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def quantiles(values, qs=(0.05, 0.25, 0.5, 0.75, 0.95)):
    return np.quantile(np.asarray(values, dtype=np.float64).ravel(), qs)


# ------------------------------------------------------- survey defaults, channel widths
def test_default_is_the_sedigism_survey_noise():
    config = NoiseConfig()
    assert config == NoiseConfig(sigma=0.9, channel_width=0.25, mean=0.0, fade=True, correlated_beam=True)
    assert as_noise_config(True) == config
    # 0.9 K per 0.25 km/s channel: 0.255 K per 3.125 km/s SMALL pixel, 0.509 K per 0.781 km/s SEDIGISM pixel.
    assert SMALL.velocity.step == 3.125 and SEDIGISM.velocity.step == 0.78125
    assert Noise(grid=SMALL).sigma_pixel == pytest.approx(0.2546, abs=1e-4)
    assert Noise(grid="sedigism").sigma_pixel == pytest.approx(0.5091, abs=1e-4)
    noise = Noise(fade=False, grid=SEDIGISM)
    assert noise.config == NoiseConfig(fade=False) and noise.beam_correlation(1, 0) > 0.2  # beam-correlated
    # The default (correlated, mean reduction) is drawn directly in PV space, exactly.
    pv = noise(torch.zeros(2, 1, *SEDIGISM.pv_shape), generator=gen(40)).double()
    assert pv.std().item() == pytest.approx(noise.pv_std(), rel=0.03)
    assert noise.pv_std() > noise.sigma_pixel / math.sqrt(SEDIGISM.lat.steps)  # correlated latitude mean


def test_rms_scales_with_the_channel_width():
    """rms per pixel = sigma * sqrt(channel_width / dv), measured on drawn noise."""
    fine = SMALL.replace(velocity=Axis(-200.0, 200.0, 128))    # 3.125 km/s channels
    coarse = SMALL.replace(velocity=Axis(-200.0, 200.0, 32))   # 12.5 km/s channels
    measured = {}
    for grid in (fine, coarse):
        noise = Noise(sigma=0.9, channel_width=0.25, fade=False, grid=grid)
        expected = 0.9 * math.sqrt(0.25 / grid.velocity.step)
        assert noise.sigma_pixel == pytest.approx(expected)
        cube = noise(torch.zeros(2, 1, 64, 32, grid.velocity.steps, dtype=torch.float64), mode="cube",
                     generator=gen(30))
        measured[grid.velocity.steps] = cube.std().item()
        assert measured[grid.velocity.steps] == pytest.approx(expected, rel=0.02)
        pv = noise(torch.zeros(16, 1, 64, grid.velocity.steps, dtype=torch.float64), generator=gen(31))
        assert pv.std().item() == pytest.approx(expected / math.sqrt(grid.lat.steps), rel=0.03)
    # Channels 4x wider: the rms halves, as averaging 4 independent channels does.
    assert measured[128] / measured[32] == pytest.approx(2.0, rel=0.03)
    white_fine = Noise(sigma=0.9, channel_width=0.25, fade=False, correlated_beam=False, grid=fine)
    cube = white_fine(torch.zeros(4, 1, 32, 8, 128, dtype=torch.float64), mode="cube", generator=gen(32))
    binned = cube.reshape(4, 1, 32, 8, 32, 4).mean(dim=-1)
    assert binned.std().item() == pytest.approx(measured[32], rel=0.03)
    # The same survey quoted at another channel width gives the same pixel rms.
    at_half = NoiseConfig(sigma=0.9 / math.sqrt(2.0), channel_width=0.5)
    assert at_half.sigma_for(fine) == pytest.approx(NoiseConfig().sigma_for(fine))
    assert NoiseConfig().sigma_for(3.125) == NoiseConfig().sigma_for("SMALL") == NoiseConfig().sigma_for(SMALL)


def test_channel_width_grid_keeps_sigma_per_pixel():
    for grid in (SMALL, SEDIGISM, None):
        noise = white(1.5, grid=grid)
        assert noise.sigma_pixel == 1.5 and noise.config.per_pixel
    assert NoiseConfig(sigma=1.5, channel_width=" Grid ").channel_width == "grid"
    assert "1.5 K per grid pixel" in repr(white(1.5))


def test_old_noise_dicts_and_files_keep_their_per_pixel_meaning(tmp_path):
    """Dicts written before channel widths (no channel_width key) load as they meant then."""
    old = {"sigma": 1.0, "mean": 0.0, "fade": True, "correlated_beam": False}  # a to_dict() of then
    config = NoiseConfig.from_dict(old)
    assert config == NoiseConfig(sigma=1.0, channel_width="grid", correlated_beam=False)
    assert Noise.from_config(old, grid=SEDIGISM).sigma_pixel == 1.0
    assert NoiseConfig.from_json(json.dumps(old)) == config
    path = tmp_path / "old_noise.yaml"
    path.write_text("sigma: 0.5\nfade: false\n")  # hand-written, old defaults for the rest
    assert NoiseConfig.from_yaml(path) == NoiseConfig(sigma=0.5, channel_width="grid", fade=False,
                                                      correlated_beam=False)
    assert as_noise_config({"sigma": 2.0}) == NoiseConfig(sigma=2.0, channel_width="grid", correlated_beam=False)
    assert NoiseConfig.from_dict({"sigma": 2.0, "correlated_beam": True}).correlated_beam
    # New files say their channel width, and new-style dicts take the new defaults.
    assert NoiseConfig().to_dict()["channel_width"] == 0.25
    assert NoiseConfig.from_dict({"sigma": 0.9, "channel_width": 0.25}) == NoiseConfig()


def test_sigma_without_its_channel_width_is_refused():
    for make in (NoiseConfig, lambda **kw: Noise(grid=SMALL, **kw)):
        with pytest.raises(ValueError, match="sigma=1.0 needs the channel width it was measured in") as err:
            make(sigma=1.0)
        assert "channel_width=0.25" in str(err.value) and "channel_width='grid'" in str(err.value)
    with pytest.raises(ValueError, match="needs the channel width"):
        NoiseConfig.from_dict({"sigma": 1.0, "channel_width": None})
    with pytest.raises(ValueError, match="channel_width must be > 0"):
        NoiseConfig.from_dict({"sigma": 1.0, "channel_width": 0.0})


# ------------------------------------------------------------------ PV laws, white noise
def test_pv_mean_noise_has_latitude_law():
    sigma, mean, n_lat = 2.0, 0.5, 16
    noise = white(sigma, mean=mean, fade=False)
    out = noise(torch.zeros(4, 1, 64, 64), n_lat=n_lat, generator=gen(1)).numpy()
    assert out.std() == pytest.approx(sigma / math.sqrt(n_lat), rel=0.03)
    assert out.mean() == pytest.approx(mean, abs=0.02)
    assert noise.pv_std(n_lat) == pytest.approx(sigma / math.sqrt(n_lat))


def test_pv_mean_noise_matches_explicit_cube_average():
    n_lat = 8
    noise = white(fade=False)
    pv = noise(torch.zeros(8, 1, 64, 64), n_lat=n_lat, generator=gen(2))
    cube = noise(torch.zeros(8, 1, 64, n_lat, 64), mode="cube", generator=gen(3))
    explicit = cube.mean(dim=3)
    assert np.allclose(quantiles(pv), quantiles(explicit), atol=0.03)
    assert stats.ks_2samp(pv.ravel().numpy(), explicit.ravel().numpy()).pvalue > 1e-3


def test_sedigism_pv_noise_uses_latitude_not_longitude_count():
    noise = white(grid=SEDIGISM)
    assert noise.pv_std() == pytest.approx(1.0 / math.sqrt(SEDIGISM.lat.steps))
    assert not math.isclose(noise.pv_std(), 1.0 / math.sqrt(SEDIGISM.lon.steps))


@pytest.mark.parametrize("n_lat", [1, 5, 32])
def test_pv_max_noise_matches_explicit_max_over_latitude(n_lat):
    sigma, mean = 1.5, 0.3
    noise = white(sigma, mean=mean, fade=False, grid=SMALL)
    pv = noise(torch.zeros(8, 1, 64, 64), reduction="max", n_lat=n_lat, generator=gen(4)).numpy()
    draws = mean + sigma * torch.randn(8, 64, n_lat, 64, generator=gen(5))
    explicit = draws.amax(dim=2).numpy()
    spread = float(explicit.std())  # tolerances ~5 standard errors for 32768 draws each
    assert pv.mean() == pytest.approx(explicit.mean(), abs=0.04 * spread)
    assert pv.std() == pytest.approx(spread, rel=0.03)
    assert np.allclose(quantiles(pv), quantiles(explicit), atol=0.08 * spread)
    assert stats.ks_2samp(pv.ravel(), explicit.ravel()).pvalue > 1e-3


def test_pv_max_noise_upper_tail_stays_finite_for_many_pixels():
    noise = white(fade=False)
    pv = noise(torch.zeros(2, 1, 128, 128), reduction="max", n_lat=4096, generator=gen(6))
    assert torch.isfinite(pv).all()
    # Mean of the max of n standard normals: integral of m * d/dm Phi(m)^n.
    n = 4096
    expected, _ = integrate.quad(lambda m: m * n * stats.norm.pdf(m) * stats.norm.cdf(m) ** (n - 1), -2, 8)
    assert pv.mean().item() == pytest.approx(expected, abs=0.01)


def test_n_lat_defaults_to_the_grid():
    noise = Noise(fade=False, grid=SMALL)
    a = noise(torch.zeros(1, 1, 32, 32), generator=gen(7))
    b = noise(torch.zeros(1, 1, 32, 32), n_lat=SMALL.lat.steps, generator=gen(7))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------ fade
def test_fade_is_drawn_per_sample_and_uniform():
    sigma, n_lat, batch = 1.0, 16, 256
    noise = white(sigma, fade=True)
    out = noise(torch.zeros(batch, 1, 32, 32), n_lat=n_lat, generator=gen(8))
    per_sample = out.flatten(1).std(dim=1).numpy() / (sigma / math.sqrt(n_lat))
    # One fade per batch (the reference's defect) would make these all equal within ~2 %.
    assert per_sample.max() - per_sample.min() > 0.8
    assert per_sample.std() == pytest.approx(1 / math.sqrt(12), abs=0.04)
    assert stats.kstest(np.clip(per_sample, 0, 1), "uniform").pvalue > 1e-3
    assert per_sample.mean() == pytest.approx(0.5, abs=0.05)


def test_fade_scales_the_mean_offset_too():
    noise = white(0.0, mean=1.0, fade=True)
    out = noise(torch.zeros(64, 1, 4, 4), n_lat=4, generator=gen(9))
    offsets = out.flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets))
    assert 0.0 <= offsets.min().item() and offsets.max().item() <= 1.0
    assert offsets[:, 0].std().item() > 0.2


def test_no_fade_gives_every_sample_the_same_law():
    out = white(fade=False)(torch.zeros(64, 1, 32, 32), n_lat=4, generator=gen(10))
    per_sample = out.flatten(1).std(dim=1).numpy()
    assert np.allclose(per_sample, 0.5, rtol=0.1)


# ------------------------------------------------------------------ beam-correlated noise
def test_beam_kernel_keeps_unit_variance():
    kernel = beam_kernel(30.0, 21.09)
    assert np.sum(kernel**2) == pytest.approx(1.0)
    assert np.allclose(kernel, kernel[::-1])
    assert np.array_equal(beam_kernel(0.0, 10.0), np.ones(1))


def test_correlated_cube_noise_rms_and_neighbour_correlation():
    sigma = 2.0
    noise = per_pixel(sigma, fade=False, grid=WIDE_BEAM)
    cube = noise(torch.zeros(2, 1, 64, 32, 48), mode="cube", generator=gen(11))[:, 0].double()
    assert cube.std().item() == pytest.approx(sigma, rel=0.05)
    # Same rms at the edges as in the middle (no edge darkening).
    assert cube[:, 0].std().item() == pytest.approx(sigma, rel=0.08)
    assert cube[:, :, -1].std().item() == pytest.approx(sigma, rel=0.08)
    # White noise smoothed by a Gaussian of rms s has correlation exp(-lag^2 / (4 s^2)).
    s_pix = WIDE_BEAM.beam_fwhm / math.sqrt(8 * math.log(2)) / (WIDE_BEAM.lon.step * 3600)
    for lag in (1, 2):
        r_lon = (cube[:, lag:] * cube[:, :-lag]).mean().item() / sigma**2
        r_lat = (cube[:, :, lag:] * cube[:, :, :-lag]).mean().item() / sigma**2
        gaussian = math.exp(-lag**2 / (4 * s_pix**2))
        assert r_lon == pytest.approx(gaussian, abs=0.04)
        assert r_lat == pytest.approx(gaussian, abs=0.04)
        assert r_lon == pytest.approx(noise.beam_correlation(lag, 0), abs=0.03)
    # Velocity channels stay independent.
    r_v = (cube[..., 1:] * cube[..., :-1]).mean().item() / sigma**2
    assert abs(r_v) < 0.03


def test_correlated_pv_mean_noise_matches_cube_average():
    n_lat = WIDE_BEAM.lat.steps
    noise = per_pixel(fade=False, grid=WIDE_BEAM)
    pv = noise(torch.zeros(4, 1, 64, 64), generator=gen(12)).double()
    cube = noise(torch.zeros(4, 1, 64, n_lat, 64), mode="cube", generator=gen(13))
    explicit = cube.mean(dim=3).double()
    white = 1.0 / math.sqrt(n_lat)
    assert noise.pv_std() > 1.5 * white  # correlation inflates the latitude mean
    assert pv.std().item() == pytest.approx(noise.pv_std(), rel=0.05)
    assert explicit.std().item() == pytest.approx(noise.pv_std(), rel=0.05)
    # Longitude correlation survives the latitude average.
    r_pv = (pv[..., 1:, :] * pv[..., :-1, :]).mean().item() / pv.var().item()
    r_cube = (explicit[..., 1:, :] * explicit[..., :-1, :]).mean().item() / explicit.var().item()
    assert r_pv == pytest.approx(noise.beam_correlation(1, 0), abs=0.05)
    assert r_pv == pytest.approx(r_cube, abs=0.06)


def test_correlated_pv_max_noise_matches_cube_max():
    n_lat = 8
    noise = per_pixel(fade=False, grid=WIDE_BEAM)
    pv = noise(torch.zeros(8, 1, 96, 96), reduction="max", n_lat=n_lat, generator=gen(14)).numpy()
    cube = noise(torch.zeros(8, 1, 96, n_lat, 96), mode="cube", generator=gen(15))
    explicit = cube.amax(dim=3).numpy()
    uncorrelated = white(fade=False)(torch.zeros(8, 1, 96, 96), reduction="max", n_lat=n_lat,
                                     generator=gen(16)).numpy()
    assert np.allclose(quantiles(pv), quantiles(explicit), atol=0.08)
    # Correlated pixels are fewer independent tries: a smaller max than white noise.
    assert pv.mean() < uncorrelated.mean() - 0.2


def test_sedigism_beam_is_barely_resolved():
    noise = per_pixel(grid=SEDIGISM)
    assert 0.2 < noise.beam_correlation(1, 0) < 0.6
    assert noise.beam_correlation(0, 0) == pytest.approx(1.0)
    assert noise.pv_std() > 1.0 / math.sqrt(SEDIGISM.lat.steps)


# ------------------------------------------------------------- shapes, dtypes, generators
def test_a_beam_narrower_than_a_pixel_leaves_white_noise_and_its_fast_laws():
    """SMALL's 30" beam on 84" pixels: neighbour correlation exp(-22), so the default
    (beam-correlated) noise is drawn exactly as white noise, max reduction included."""
    correlated, uncorrelated = Noise(fade=False, grid=SMALL), Noise(fade=False, correlated_beam=False, grid=SMALL)
    assert correlated.beam_correlation(1, 0) == 0.0 and correlated.latitude_mean_gain(32) == 1.0
    x = torch.zeros(4, 1, *SMALL.pv_shape)
    for reduction in ("mean", "max"):
        assert torch.equal(correlated(x, reduction=reduction, generator=gen(50)),
                           uncorrelated(x, reduction=reduction, generator=gen(50)))
    assert correlated.kernel_lat.size == 1 and Noise(grid=SEDIGISM).kernel_lat.size == 7  # SEDIGISM keeps its beam


def test_same_generator_seed_gives_same_noise():
    noise = per_pixel(grid=WIDE_BEAM)
    x = torch.zeros(3, 1, 16, 16)
    for reduction in ("mean", "max"):
        a = noise(x, reduction=reduction, n_lat=4, generator=gen(17))
        b = noise(x, reduction=reduction, n_lat=4, generator=gen(17))
        c = noise(x, reduction=reduction, n_lat=4, generator=gen(18))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("shape, mode", [((2, 8, 6), "pv"), ((2, 1, 8, 6), "pv"),
                                         ((2, 8, 4, 6), "cube"), ((2, 1, 8, 4, 6), "cube")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_output_keeps_shape_and_dtype_and_adds_to_input(shape, mode, dtype):
    x = torch.full(shape, 5.0, dtype=dtype)
    out = white(fade=False)(x, mode=mode, n_lat=4, generator=gen(19))
    assert out.shape == x.shape and out.dtype == dtype
    assert abs(out.double().mean().item() - 5.0) < 0.5
    assert not torch.equal(out, x)


def test_zero_sigma_leaves_input_unchanged():
    x = torch.randn(2, 1, 8, 8, generator=gen(20))
    assert torch.equal(white(0.0)(x, n_lat=4), x)
    assert torch.equal(Noise(sigma=0.0, channel_width=0.25, grid=SMALL)(x, n_lat=4), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noise_on_gpu():
    noise = per_pixel(fade=False, grid=WIDE_BEAM)
    x = torch.zeros(4, 1, 64, 64, device="cuda")
    for reduction in ("mean", "max"):
        out = noise(x, reduction=reduction, generator=torch.Generator("cuda").manual_seed(0))
        assert out.device.type == "cuda"
    cpu_gen_out = noise(x, generator=gen(21))
    assert cpu_gen_out.device.type == "cuda"
    assert cpu_gen_out.std().item() == pytest.approx(noise.pv_std(), rel=0.05)


# ------------------------------------------------------------------------- config
def test_config_round_trips_through_json_and_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    config = NoiseConfig(sigma=0.5, channel_width=0.5, mean=0.1, fade=False, correlated_beam=False)
    assert NoiseConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert NoiseConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    path = tmp_path / "noise.json"
    config.to_json(path)
    assert NoiseConfig.from_json(path) == config
    assert NoiseConfig.from_json(config.to_json()) == config
    noise = Noise.from_config(config, grid=SMALL)
    assert noise.config == config
    assert Noise.from_config(config.to_dict(), grid="small").config == config
    assert "sigma=0.5 K per 0.5 km/s channel = 0.2 K per 3.12 km/s pixel" in repr(noise)
    per_grid = NoiseConfig(sigma=0.5, channel_width="grid")
    assert NoiseConfig.from_yaml(per_grid.to_yaml()) == per_grid and per_grid.to_dict()["channel_width"] == "grid"


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma": -1, "channel_width": 0.25}, "sigma must be >= 0 K.*got -1"),
    ({"sigma": float("nan"), "channel_width": 0.25}, "sigma must be >= 0 K"),
    ({"sigma": float("inf"), "channel_width": "grid"}, "sigma must be >= 0 K"),
    ({"mean": float("nan")}, "mean must be a finite"),
    ({"sigma": 1.0, "channel_width": 0}, "channel_width must be > 0 km/s.*got 0"),
    ({"sigma": 1.0, "channel_width": -0.25}, "channel_width must be > 0 km/s"),
    ({"sigma": 1.0, "channel_width": float("nan")}, "channel_width must be > 0 km/s"),
    ({"sigma": 1.0, "channel_width": float("inf")}, "channel_width must be > 0 km/s"),
    ({"sigma": 1.0, "channel_width": "pixel"}, "channel_width must be a width in km/s or 'grid', got 'pixel'"),
    ({"channel_width": 0.25}, "without sigma="),
])
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        Noise(**kwargs)


def test_bad_types_and_keys():
    with pytest.raises(TypeError, match="sigma must be a number"):
        NoiseConfig(sigma="1", channel_width=0.25)
    with pytest.raises(TypeError, match="channel_width must be a number of km/s or 'grid'"):
        NoiseConfig(sigma=1.0, channel_width=True)
    with pytest.raises(TypeError, match="channel_width must be a number"):
        NoiseConfig(sigma=1.0, channel_width=[0.25])
    with pytest.raises(TypeError):  # everything after sigma is keyword-only: no silent (sigma, mean) mix-up
        NoiseConfig(1.0, 0.25)
    with pytest.raises(TypeError, match="fade must be True or False"):
        NoiseConfig(fade="yes")
    with pytest.raises(ValueError, match="unknown NoiseConfig fields \\['rms'\\]"):
        NoiseConfig.from_dict({"rms": 1.0})
    with pytest.raises(TypeError, match="torch.Tensor"):
        white()(np.zeros((1, 1, 4, 4)), n_lat=2)
    with pytest.raises(TypeError, match="floating-point"):
        white()(torch.zeros(1, 1, 4, 4, dtype=torch.int64), n_lat=2)


def test_bad_calls_say_what_to_do():
    noise = white()
    with pytest.raises(ValueError, match="pass n_lat= to forward or build Noise\\(grid=...\\)"):
        noise(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="n_lat must be a positive integer"):
        noise(torch.zeros(1, 1, 4, 4), n_lat=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        noise(torch.zeros(1, 1, 4, 4), mode="ppv", n_lat=2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        noise(torch.zeros(1, 1, 4, 4), reduction="median", n_lat=2)
    with pytest.raises(ValueError, match="expects input of shape .*got \\(1, 4, 4\\)"):
        noise(torch.zeros(1, 4, 4), mode="cube")
    with pytest.raises(ValueError, match="expects input of shape"):
        noise(torch.zeros(1, 2, 4, 4, 3), n_lat=2)
    with pytest.raises(ValueError, match="Noise needs grid=: correlated_beam=True needs its beam_fwhm"):
        per_pixel()
    with pytest.raises(ValueError, match="Noise needs grid=: its channel width scales sigma .*channel_width='grid'"):
        Noise(sigma=0.9, channel_width=0.25, correlated_beam=False)
    with pytest.raises(ValueError, match="Noise needs grid="):
        Noise()  # the survey defaults need a grid for both reasons
    with pytest.raises(ValueError, match="pass a grid"):
        NoiseConfig().sigma_for(None)
    with pytest.raises(ValueError, match="channel width must be > 0"):
        NoiseConfig().sigma_for(0.0)
