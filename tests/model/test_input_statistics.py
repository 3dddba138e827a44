"""pv_statistics on images with known answers; InputStatistics ranges, checks and JSON; the model attribute."""

import json
import math

import numpy as np
import pytest
import torch

from iris_nb.grids import SMALL
from iris_nb.model import InputStatistics, Reverter, pv_statistics
from iris_nb.model.input_statistics import STATISTICS, InputStatisticsRecorder

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     lat=SMALL.lat.with_steps(8), velocity=SMALL.velocity.with_steps(64), name="G64")
LON, V = GRID.lon.centers(), GRID.velocity.centers()


def ridge(slope=40.0, width=10.0, peak=5.0, lon_halfwidth=1.0):
    """A PV ridge v = slope * l with Gaussian line profiles of dispersion ``width`` km/s (K)."""
    centre = slope * LON[:, None]
    image = peak * np.exp(-0.5 * ((V[None, :] - centre) / width) ** 2) * (np.abs(LON)[:, None] < lon_halfwidth)
    return image.astype(np.float32)


def test_a_ridge_gives_its_own_geometry():
    stats = pv_statistics(ridge(), GRID)
    assert set(stats) == set(STATISTICS) and all(v.shape == (1,) for v in stats.values())
    assert stats["lv_correlation"][0] > 0.9  # 40 km/s per deg against 10 km/s line widths
    assert stats["line_width"][0] == pytest.approx(10.0, rel=0.15)  # truncated at 5% of the peak: a bit narrower
    # emission where the profile is above 5% of the peak: |v - v0| < 2.45 sigma, i.e. about 49 km/s
    assert 40.0 <= stats["velocity_extent"][0] <= 60.0
    lit = np.mean(np.abs(LON) < 1.0)
    assert stats["emission_fraction"][0] == pytest.approx(lit * 49.0 / 400.0, rel=0.2)
    assert stats["intensity_p99_9"][0] == pytest.approx(5.0, rel=0.05)


def test_mirroring_the_velocity_axis_flips_only_the_correlation():
    image = ridge()
    stats, mirrored = pv_statistics(image, GRID), pv_statistics(image[:, ::-1].copy(), GRID)
    assert mirrored["lv_correlation"][0] == pytest.approx(-stats["lv_correlation"][0], abs=1e-6)
    for name in ("intensity_p99", "emission_fraction", "velocity_extent", "line_width"):
        assert mirrored[name][0] == pytest.approx(stats[name][0], rel=1e-5)


def test_pure_noise_has_no_emission_and_scaling_changes_only_intensities():
    noise = np.random.default_rng(0).normal(0.0, 0.3, (4, 64, 64)).astype(np.float32)
    stats = pv_statistics(torch.from_numpy(noise), GRID)
    assert np.all(stats["emission_fraction"] == 0)
    for name in ("velocity_extent", "line_width", "lv_correlation"):
        assert np.all(np.isnan(stats[name]))
    # noise does not hide a ridge: its threshold is 5 sigma measured on the negative pixels only
    noisy = pv_statistics(ridge()[None] + noise[:1], GRID)
    assert noisy["lv_correlation"][0] > 0.9 and noisy["emission_fraction"][0] > 0.01
    bright = pv_statistics(20 * (ridge()[None] + noise[:1]), GRID)
    assert bright["intensity_p99"][0] == pytest.approx(20 * noisy["intensity_p99"][0], rel=1e-5)
    assert bright["emission_fraction"][0] == noisy["emission_fraction"][0]


def test_shapes_are_checked_and_batches_agree_with_single_images():
    batch = np.stack([ridge(), ridge(slope=-30.0), ridge(width=20.0)])
    together = pv_statistics(batch[:, None], GRID)  # (B, 1, lon, v) as the network sees it
    for i in range(3):
        alone = pv_statistics(batch[i], GRID)
        for name in STATISTICS:
            assert together[name][i] == pytest.approx(alone[name][0], rel=1e-6)
    with pytest.raises(ValueError, match=r"\(B, lon, v\).*regrid"):
        pv_statistics(np.zeros((3, 32, 64)), GRID)


def family(n=40, seed=0):
    """Ridges of random slope, width and brightness, with noise (a stand-in family, K)."""
    rng = np.random.default_rng(seed)
    images = [ridge(rng.uniform(30, 60), rng.uniform(5, 20), rng.uniform(2, 10)) + rng.normal(0, 0.1, (64, 64))
              for _ in range(n)]
    return torch.as_tensor(np.stack(images), dtype=torch.float32)


def test_ranges_widen_the_training_spread_and_flag_what_lies_outside():
    images = family()
    stats = InputStatistics.from_inputs(images, GRID, input_unit="K", source="ridges")
    values = pv_statistics(images, GRID)
    assert stats.n_samples == 40 and stats.input_unit == "K" and "ridges" in repr(stats)
    for name, (low, high) in stats.ranges.items():
        assert low < values[name].min() and values[name].max() <= high
        assert all(stats.inside(name, float(v)) for v in values[name])
        assert stats.percentile(name, float(np.median(values[name]))) == pytest.approx(50, abs=10)
    low, high = stats.ranges["intensity_p99"]
    assert low == pytest.approx(np.quantile(values["intensity_p99"], 0.005) / 2, rel=1e-6)
    assert high == pytest.approx(np.quantile(values["intensity_p99"], 0.995) * 2, rel=1e-6)
    assert not stats.inside("intensity_p99", 3 * high) and not stats.inside("lv_correlation", -0.9)
    assert not stats.inside("line_width", math.nan)  # every training sample had emission
    assert stats.unit_of("intensity_p99") == "K" and stats.unit_of("line_width") == "km/s"


def test_json_round_trip_and_union():
    stats = InputStatistics.from_inputs(family(), GRID)
    again = InputStatistics.from_json(stats.to_json())
    assert again == stats and json.loads(again.to_json()) == stats.to_dict()
    other = InputStatistics.from_inputs(family(seed=1) * 3, GRID)
    both = InputStatistics.union([stats, other])
    for name in STATISTICS:
        assert both.ranges[name][0] == min(stats.ranges[name][0], other.ranges[name][0])
        assert both.ranges[name][1] == max(stats.ranges[name][1], other.ranges[name][1])
    with pytest.raises(ValueError, match="unknown InputStatistics keys"):
        InputStatistics.from_dict({**stats.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="at least one sample"):
        InputStatistics.from_dict({**stats.to_dict(), "n_samples": 0})


def test_recorder_stops_at_its_limit_and_survives_a_checkpoint():
    recorder = InputStatisticsRecorder(GRID, limit=10)
    assert recorder.statistics("K") is None
    images = family(16)
    recorder.add(images[:6, None])
    resumed = InputStatisticsRecorder(GRID, limit=10)
    resumed.load_state_dict(recorder.state_dict())
    resumed.add(images[6:, None])
    assert resumed.full and resumed.count == 10
    assert resumed.statistics("K") == InputStatistics.from_inputs(images[:10], GRID)


def test_the_model_carries_statistics_and_checks_their_type():
    torch.manual_seed(0)
    model = Reverter(GRID, width=0.25)
    assert model.input_statistics is None and "input_statistics=None" in repr(model).splitlines()[1]
    stats = InputStatistics.from_inputs(family(8), GRID)
    model.input_statistics = stats.to_dict()
    assert model.input_statistics == stats and "8 training samples" in model.extra_repr()
    with pytest.raises(TypeError, match="InputStatistics"):
        model.input_statistics = [1, 2]
