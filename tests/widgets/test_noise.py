"""NoisePicker with real ipywidgets, real Noise draws and real run config files."""

import math

import ipywidgets as ipw
import numpy as np
import pytest
import torch
import yaml
from scipy import integrate, stats

from iris_nb.cube import reduce_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.quickstart import toy_cmz_cube
from iris_nb.sim.noise import Noise, NoiseConfig
from iris_nb.train.run import RunConfig
from iris_nb.widgets.noise import NoisePicker, check_noise, noise_levels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8), velocity=Axis(-200, 200, 64),
                     name="test-64")
SIZE = {"figsize": (3.0, 2.2), "dpi": 50}


@pytest.fixture(scope="module")
def cube():
    data, _ = toy_cmz_cube(GRID, seed=3, n_clouds=12)
    return data


def png(picker) -> bytes:
    data = bytes(picker.preview.value)
    assert data.startswith(PNG_MAGIC)
    return data


def expected_max_mean(n: int) -> float:
    """Mean of the maximum of ``n`` standard normal draws (numerical integral)."""
    density = lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)  # noqa: E731
    return integrate.quad(density, -10, 10)[0]


def per_pixel(sigma, **kwargs):
    """A NoiseConfig whose sigma is the rms per grid pixel (white unless told otherwise)."""
    return NoiseConfig(sigma=sigma, channel_width="grid", **{"correlated_beam": False, **kwargs})


def test_each_control_updates_value_observers_and_preview(cube):
    wide_beam = cube.assign_attrs(beam_fwhm=500.0)  # a beam wider than the pixels: correlation shows
    picker = NoisePicker(wide_beam, value={"sigma": 1.0, "fade": False}, **SIZE)  # an old dict: per pixel
    assert picker.value == per_pixel(1.0, fade=False) and picker.channel_input.value == "grid"
    seen = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")
    images = [png(picker)]
    steps = [(picker.sigma_input, 2.0, per_pixel(2.0, fade=False)),
             (picker.channel_input, "0.25", NoiseConfig(sigma=2.0, channel_width=0.25, fade=False,
                                                        correlated_beam=False)),
             (picker.mean_input, 0.5, NoiseConfig(sigma=2.0, channel_width=0.25, mean=0.5, fade=False,
                                                  correlated_beam=False)),
             (picker.fade_input, True, NoiseConfig(sigma=2.0, channel_width=0.25, mean=0.5, correlated_beam=False)),
             (picker.beam_input, True, NoiseConfig(sigma=2.0, channel_width=0.25, mean=0.5)),
             (picker.enabled, False, None)]
    for control, new, expected in steps:
        control.value = new  # what the browser does
        assert picker.value == expected and seen[-1] == expected
        images.append(png(picker))
        assert images[-1] != images[-2], f"preview did not change with {control.description}"
    assert len(seen) == len(steps)
    assert all(c.disabled for c in (picker.sigma_input, picker.channel_input, picker.mean_input, picker.fade_input,
                                    picker.beam_input))
    assert "No noise" in picker.levels_text.value
    np.testing.assert_allclose(picker.pv.values, reduce_cube(cube, "mean").values, rtol=1e-6)

    picker.enabled.value = True  # the last settings come back
    assert picker.value == NoiseConfig(sigma=2.0, channel_width=0.25, mean=0.5, fade=True, correlated_beam=True)
    before = png(picker)
    picker.reduction_toggle.value = "max"  # not part of value, but the preview follows it
    assert picker.reduction == "max" and png(picker) != before and len(seen) == 7


def test_preview_adds_a_seeded_draw_with_the_pv_noise_level(cube):
    sigma, n_lat = 1.5, GRID.lat.steps
    picker = NoisePicker(cube, value={"sigma": sigma, "fade": False}, seed=4, **SIZE)
    clean = reduce_cube(cube, "mean").values.astype(np.float64)
    residual = picker.pv.values - clean
    assert picker.pv.attrs["units"] == "K" and picker.pv.dims == ("lon", "velocity")
    assert residual.std() == pytest.approx(sigma / math.sqrt(n_lat), rel=0.05)
    assert picker.levels["pv_std"] == pytest.approx(sigma / math.sqrt(n_lat))
    assert f"{sigma / math.sqrt(n_lat):.3g} K" in picker.levels_text.value
    again = NoisePicker(cube, value={"sigma": sigma, "fade": False}, seed=4, **SIZE)
    assert png(again) == png(picker)  # deterministic
    np.testing.assert_array_equal(again.pv.values, picker.pv.values)
    other = NoisePicker(cube, value={"sigma": sigma, "fade": False}, seed=5, **SIZE)
    assert png(other) != png(picker)

    faded = NoisePicker(cube, value={"sigma": sigma, "fade": True}, seed=4, **SIZE)
    ratio = (faded.pv.values - clean).std() / residual.std()
    assert 0 < ratio < 1 and "U(0, 1)" in faded.levels_text.value


def test_channel_width_sets_the_rms_per_pixel_of_the_preview(cube):
    """0.9 K per 0.25 km/s on the cube's 6.25 km/s channels: 0.18 K per pixel, measured on the draw."""
    config = NoiseConfig(sigma=0.9, channel_width=0.25, fade=False, correlated_beam=False)
    picker = NoisePicker(cube, value=config, seed=2, **SIZE)
    dv = GRID.velocity.step
    sigma_pixel = 0.9 * math.sqrt(0.25 / dv)
    assert dv == 6.25 and sigma_pixel == pytest.approx(0.18)
    assert picker.levels["sigma_pixel"] == pytest.approx(sigma_pixel)
    assert picker.levels["pv_std"] == pytest.approx(sigma_pixel / math.sqrt(GRID.lat.steps))
    residual = picker.pv.values - reduce_cube(cube, "mean").values
    assert residual.std() == pytest.approx(sigma_pixel / math.sqrt(GRID.lat.steps), rel=0.05)
    assert "0.18 K</b> in the grid's 6.25 km/s channels" in picker.levels_text.value
    picker.channel_input.value = "1"  # the same rms quoted per 1 km/s: twice the pixel rms
    assert picker.value.channel_width == 1.0 and picker.levels["sigma_pixel"] == pytest.approx(2 * sigma_pixel)
    picker.channel_input.value = "grid"
    assert picker.levels["sigma_pixel"] == pytest.approx(0.9) and "per grid pixel" in picker.levels_text.value
    # The model grid, when given, sets the channels; a PV image's own velocity axis otherwise.
    assert NoisePicker(value=config, grid="SEDIGISM").levels["sigma_pixel"] == pytest.approx(0.9 * math.sqrt(0.32))
    pv = reduce_cube(cube, "mean")
    pv_ms = pv.assign_coords(velocity=("velocity", pv["velocity"].values * 1000.0, {"units": "m/s"}))
    assert NoisePicker(pv_ms, value=config, n_lat=8, **SIZE).levels["sigma_pixel"] == pytest.approx(sigma_pixel)


def test_max_reduction_level_matches_the_law_of_the_maximum(cube):
    picker = NoisePicker(cube, value={"sigma": 2.0, "fade": False}, reduction="max", **SIZE)
    levels = picker.levels
    assert levels["measured"]
    assert levels["pv_mean"] == pytest.approx(2.0 * expected_max_mean(GRID.lat.steps), rel=0.05)
    assert levels["pv_std"] < 2.0  # the max of 8 draws is narrower than one draw
    residual = picker.pv.values - reduce_cube(cube, "max").values
    assert residual.mean() == pytest.approx(levels["pv_mean"], rel=0.1)
    assert "max over 8 pixels" in picker.levels_text.value


def test_beam_correlation_uses_the_cube_beam_and_raises_the_pv_noise(cube):
    wide_beam = cube.assign_attrs(beam_fwhm=500.0)  # beam wider than the 337.5" latitude pixels
    picker = NoisePicker(wide_beam, value={"sigma": 1.0, "correlated_beam": True, "fade": False}, **SIZE)
    noise = Noise(sigma=1.0, channel_width="grid", fade=False, grid=GRID.replace(beam_fwhm=500.0))
    assert picker.levels["pv_std"] == pytest.approx(noise.pv_std(8))
    assert picker.levels["pv_std"] > 1.0 / math.sqrt(8) * 1.2
    residual = picker.pv.values - reduce_cube(cube, "mean").values
    assert residual.std() == pytest.approx(noise.pv_std(8), rel=0.1)
    assert "beam-correlated" in picker.levels_text.value


def test_bad_values_show_a_message_and_keep_the_value(cube):
    picker = NoisePicker(cube, value=True, **SIZE)
    before_png, before = png(picker), picker.value
    seen = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")

    picker.sigma_input.value = -1.0  # typed in the browser
    assert "sigma" in picker.error.text and "-1" in picker.error.text
    assert picker.error.widget.layout.display != "none" and picker.error.widget in picker.widget.children
    assert picker.value == before and seen == [] and png(picker) == before_png
    picker.mean_input.value = 0.3  # still refused while sigma is negative
    assert picker.value == before and picker.error.text
    picker.sigma_input.value = 0.5  # fixed: message gone, value updated
    assert picker.error.text == "" and picker.value == NoiseConfig(sigma=0.5, channel_width=0.25, mean=0.3)
    for text in ("wide", "0", "-0.25", "nan"):
        picker.channel_input.value = text
        assert repr(text) in picker.error.text or "channel_width must be > 0" in picker.error.text
        assert picker.value.channel_width == 0.25
    picker.channel_input.value = "0.25"
    assert picker.error.text == "" and len(seen) == 1

    picker.value = {"sigma": -2}
    assert "sigma" in picker.error.text and picker.value.sigma == 0.5
    picker.value = "loud"
    assert "str" in picker.error.text and picker.value.sigma == 0.5
    picker.value = {"sigma": 1.0, "colour": "pink"}
    assert "colour" in picker.error.text
    picker.value = {"sigma": 1.0, "channel_width": -1}
    assert "channel_width must be > 0" in picker.error.text and picker.value.channel_width == 0.25
    picker.reduction = "median"
    assert "median" in picker.error.text and picker.reduction == "mean"
    assert len(seen) == 1


def test_without_a_cube_only_the_numbers():
    picker = NoisePicker(value={"sigma": 1.0})
    assert picker.preview is None and picker.pv is None and picker.n_lat == SMALL.lat.steps
    assert "sqrt(32)" in picker.levels_text.value
    before = picker.levels_text.value
    picker.sigma_input.value = 4.0
    assert picker.levels["pv_std"] == pytest.approx(4.0 / math.sqrt(32)) and picker.levels_text.value != before
    default = NoisePicker(value=True, n_lat=250)  # 0.9 K per 0.25 km/s on SMALL's 3.125 km/s channels
    assert default.levels["sigma_pixel"] == pytest.approx(0.9 * math.sqrt(0.25 / 3.125))
    assert default.levels["pv_std"] == pytest.approx(default.levels["sigma_pixel"] / math.sqrt(250), rel=1e-6)
    assert "0.255 K</b> in the grid's 3.12 km/s channels" in default.levels_text.value
    assert NoisePicker(value=True, grid=GRID).n_lat == 8


def test_pv_image_input_in_millikelvin(cube):
    pv = reduce_cube(cube, "mean") * 1000.0
    pv.attrs["units"] = "mK"
    picker = NoisePicker(pv, value={"sigma": 1.0, "fade": False}, n_lat=8, **SIZE)
    residual = picker.pv.values - pv.values / 1000.0  # shown in K
    assert residual.std() == pytest.approx(1 / math.sqrt(8), rel=0.05)
    with pytest.raises(ValueError, match="n_lat=4"):
        NoisePicker(cube, n_lat=4)


def test_config_round_trip_and_run_config_yaml(tmp_path, cube):
    picker = NoisePicker(value={"sigma": 0.7, "channel_width": 0.5, "mean": 0.1, "fade": False})
    data = picker.to_dict()
    assert data == {"noise": {"sigma": 0.7, "channel_width": 0.5, "mean": 0.1, "fade": False, "correlated_beam": True}}
    assert NoisePicker.from_dict(data).value == picker.value
    assert NoisePicker.from_dict(data["noise"]).value == picker.value  # a bare NoiseConfig dict
    assert NoisePicker.from_dict(yaml.safe_load(yaml.safe_dump(data))).value == picker.value

    path = tmp_path / "run.yaml"
    run = RunConfig(dataset="cmz.zarr", grid="SMALL", noise=picker.value, reduction="max")
    run.to_yaml(path)
    loaded = RunConfig.from_yaml(path)
    assert loaded.noise == picker.value
    assert NoisePicker.from_dict(loaded).value == picker.value
    assert NoisePicker.from_dict(yaml.safe_load(path.read_text())).value == picker.value
    from_run = NoisePicker.from_run(path)
    assert from_run.value == picker.value and from_run.reduction == "max" and from_run.n_lat == 32
    assert RunConfig.from_dict({"dataset": "cmz.zarr", **from_run.to_dict()}).noise == picker.value

    off = NoisePicker()
    assert off.value is None and off.to_dict() == {"noise": None}
    RunConfig(dataset="cmz.zarr", noise=off.value).to_yaml(path)
    assert NoisePicker.from_run(path).value is None
    assert NoisePicker.from_dict({"dataset": "cmz.zarr"}).value is None  # the run-config default
    assert NoisePicker.from_dict({"noise": True}).value == NoiseConfig()

    old = tmp_path / "old_run.yaml"  # written before channel widths: sigma per pixel, white noise
    old.write_text("dataset: cmz.zarr\ngrid: SMALL\nnoise: {sigma: 1.0, fade: true}\n")
    from_old = NoisePicker.from_run(old)
    assert from_old.value == per_pixel(1.0) and from_old.channel_input.value == "grid"
    assert from_old.levels["sigma_pixel"] == 1.0
    assert NoisePicker.from_dict(from_old.to_dict()).value == from_old.value  # round trip says "grid"


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="sigma"):
        NoisePicker(value={"sigma": -1})
    with pytest.raises(ValueError, match="sigma"):
        NoisePicker.from_dict({"noise": {"sigma": -1}})
    with pytest.raises(ValueError, match="needs the channel width"):
        NoisePicker(value={"sigma": 1.0, "channel_width": None})
    with pytest.raises(ValueError, match="channel_width must be > 0"):
        NoisePicker(value={"sigma": 1.0, "channel_width": 0})
    with pytest.raises(TypeError, match="from_dict expects"):
        NoisePicker.from_dict([1.0])
    with pytest.raises(TypeError, match="noise must be"):
        check_noise(1.0)
    with pytest.raises(TypeError, match="seed"):
        NoisePicker(seed=-1)
    with pytest.raises(ValueError, match="n_lat"):
        NoisePicker(n_lat=0)
    with pytest.raises(ValueError, match="median"):
        NoisePicker(reduction="median")
    with pytest.raises(TypeError, match="DataArray"):
        NoisePicker(np.zeros((4, 4, 4)))


def test_noise_levels_function_and_display(cube):
    assert noise_levels(None, "mean", 8)["pv_std"] == 0.0
    levels = noise_levels(per_pixel(3.0), "mean", 9)
    assert levels["pv_std"] == pytest.approx(1.0) and levels["sigma_pixel"] == 3.0 and not levels["measured"]
    assert noise_levels(NoiseConfig(), "mean", 32, SMALL)["sigma_pixel"] == pytest.approx(0.2546, abs=1e-4)
    with pytest.raises(ValueError, match="Noise needs grid="):
        noise_levels(NoiseConfig(), "mean", 9)
    picker = NoisePicker(cube, value=True, **SIZE)
    bundle = picker._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == picker.widget.model_id
    assert bundle["text/plain"].startswith("NoisePicker(value=NoiseConfig(sigma=0.9, channel_width=0.25")
    assert isinstance(picker.widget, ipw.VBox) and picker.preview in picker.widget.children
    torch_state = torch.random.get_rng_state()
    NoisePicker(cube, value=True, seed=9, **SIZE)
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # previews leave the global RNG alone
    picker.close()
    assert picker.widget.comm is None and picker.sigma_input.comm is None and picker.channel_input.comm is None
