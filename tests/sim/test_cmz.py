"""Tests for iris_nb.sim.cmz.make_cmz and its turbulence generator."""

import json

import numpy as np
import pytest

from iris_nb.grids import SMALL, Axis
from iris_nb.sim.cmz import CMZ_PARAMETERS, make_cmz
from iris_nb.sim.fields import validate_field
from iris_nb.sim.kinematics import cell_positions
from iris_nb.sim.turbulence import gaussian_random_field

# SMALL window at half its resolution: fast, and cells stay ~7 pc
GRID = SMALL.replace(distance=Axis(8052.0, 8502.0, 64), lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 16))
VARIABLES = ("density", "velocity_los", "temperature", "x_h2", "x_tracer", "temperature_dust")


@pytest.fixture(scope="module")
def fields():
    return {seed: make_cmz(GRID, seed=seed) for seed in (0, 1, 2)}


def h2_mass_weights(field, grid=GRID):
    """H2 mass per cell (arbitrary units): rho_H2 times the cell volume ~ d^2."""
    d = grid.distance.centers()
    return (field["density"] * field["x_h2"]).values * (d**2)[:, None, None]


def test_same_seed_is_bit_identical_and_seeds_differ(fields):
    again = make_cmz(GRID, seed=1)
    for name in VARIABLES:
        np.testing.assert_array_equal(again[name].values, fields[1][name].values)
    assert again.attrs == fields[1].attrs
    assert not np.array_equal(fields[0]["density"].values, fields[1]["density"].values)
    assert fields[0].attrs["parameters"] != fields[1].attrs["parameters"]


def test_parameters_drawn_in_range_and_recorded(fields):
    for seed, field in fields.items():
        params = json.loads(field.attrs["parameters"])
        assert set(params) == set(CMZ_PARAMETERS) | {"ring_angle"}  # ring_angle is derived
        assert params["ring_angle"] == pytest.approx(params["bar_angle"] + params["ring_bar_angle"])
        for name, (low, high, description, unit) in CMZ_PARAMETERS.items():
            assert low <= params[name] <= high, (name, params[name])
            assert description and isinstance(unit, str)
        assert isinstance(params["cloud_count"], int)
        assert field.attrs["seed"] == seed and field.attrs["model"] == "make_cmz"


def test_explicit_parameters_override_without_changing_other_draws(fields):
    field = make_cmz(GRID, seed=1, ring_semi_major=95.0, cloud_count=0)
    params = json.loads(field.attrs["parameters"])
    base = json.loads(fields[1].attrs["parameters"])
    assert params["ring_semi_major"] == 95.0 and params["cloud_count"] == 0
    for name in CMZ_PARAMETERS:
        if name not in ("ring_semi_major", "cloud_count"):
            assert params[name] == base[name], name
    assert not np.array_equal(field["density"].values, fields[1]["density"].values)


def test_bad_parameters_and_seeds_raise():
    with pytest.raises(TypeError, match="ring_semi_major"):  # the message lists the valid names
        make_cmz(GRID, seed=0, ring_radius=100.0)
    with pytest.raises(ValueError, match="ring_axis_ratio"):
        make_cmz(GRID, seed=0, ring_axis_ratio=1.5)
    with pytest.raises(ValueError, match="scale_height"):
        make_cmz(GRID, seed=0, scale_height=-3.0)
    with pytest.raises(ValueError, match="lane_start"):
        make_cmz(GRID, seed=0, lane_start=90.0, ring_semi_major=110.0)
    with pytest.raises(TypeError, match="seed"):
        make_cmz(GRID, seed=-1)
    with pytest.raises(TypeError, match="Grid"):
        make_cmz("SMALL", seed=0)


def test_physical_sanity_and_validation(fields):
    for field in fields.values():
        assert validate_field(field, GRID) == GRID
        for name in VARIABLES:
            assert field[name].dtype == np.float32
            assert np.isfinite(field[name].values).all(), name
        assert float(field["density"].min()) >= 0
        assert float(field["temperature"].min()) > 0
        assert 0 <= float(field["x_h2"].min()) and float(field["x_h2"].max()) <= 0.5
        params = json.loads(field.attrs["parameters"])
        # dense gas is molecular and cold: temperatures between the two limits
        assert float(field["temperature"].min()) >= params["temperature_dense"] - 1e-3
        assert float(field["temperature"].max()) <= params["temperature_diffuse"] + 1e-3
        dense = field["density"].values > 20 * params["molecular_density"]
        assert dense.any() and field["x_h2"].values[dense].min() > 0.45
        # velocities stay in a CMZ-like range
        assert np.abs(field["velocity_los"].values).max() < 350


def test_most_h2_mass_lies_on_the_ring(fields):
    d, lon, lat = GRID.distance.centers(), GRID.lon.centers(), GRID.lat.centers()
    x, y, _ = cell_positions(d[:, None, None], lon[None, :, None], lat[None, None, :], GRID.observer_distance)
    radius = np.broadcast_to(np.hypot(x, y), (d.size, lon.size, lat.size))
    for field in fields.values():
        weights = h2_mass_weights(field)
        weights /= weights.sum()
        on_ring = weights[(radius > 50) & (radius < 150)].sum()
        assert on_ring > 0.6, on_ring
        order = np.argsort(radius, axis=None)
        median = radius.ravel()[order][np.searchsorted(np.cumsum(weights.ravel()[order]), 0.5)]
        assert 50 < median < 150


def test_ring_size_follows_its_parameter():
    d, lon = GRID.distance.centers(), GRID.lon.centers()
    x, y, _ = cell_positions(d[:, None, None], lon[None, :, None], 0.0, GRID.observer_distance)
    radius = np.hypot(x, y)
    medians = []
    for a in (80.0, 120.0):
        field = make_cmz(GRID, seed=4, ring_semi_major=a, ring_axis_ratio=0.8, lane_density=0.0,
                         cloud_count=0, diffuse_density=0.5)
        w = h2_mass_weights(field)
        medians.append(np.sum(w * radius) / w.sum())
    assert medians[1] - medians[0] == pytest.approx(40 * 0.9, abs=12)


def test_positive_longitude_gas_recedes(fields):
    lon = GRID.lon.centers()
    for field in fields.values():
        w = h2_mass_weights(field)
        v = field["velocity_los"].values
        east, west = lon > 0, lon < 0
        assert np.sum((w * v)[:, east]) / np.sum(w[:, east]) > 20
        assert np.sum((w * v)[:, west]) / np.sum(w[:, west]) < -20


def radial_spectrum(field, spacing, bins):
    """Shell-averaged power spectrum of a periodic field, physical wavenumbers (rad / pc)."""
    power = np.abs(np.fft.fftn(field)) ** 2
    k2 = sum(np.meshgrid(*[(2 * np.pi * np.fft.fftfreq(n, s)) ** 2 for n, s in zip(field.shape, spacing)],
                         indexing="ij"))
    k = np.sqrt(k2).ravel()
    which = np.digitize(k, bins)
    centres, values = [], []
    for i in range(1, len(bins)):
        sel = which == i
        if sel.sum() > 10:
            centres.append(np.sqrt(bins[i - 1] * bins[i]))
            values.append(power.ravel()[sel].mean())
    return np.log(centres), np.log(values)


@pytest.mark.parametrize("slope", [3.0, 3.7])
def test_gaussian_random_field_spectrum_and_moments(slope):
    rng = np.random.default_rng(11)
    g = gaussian_random_field((64, 64, 64), (2.0, 2.0, 2.0), slope, rng)
    assert g.dtype == np.float32 and g.shape == (64, 64, 64)
    assert abs(float(g.mean())) < 1e-4 and float(g.std()) == pytest.approx(1.0, rel=1e-4)
    logk, logp = radial_spectrum(g, (2.0,) * 3, np.geomspace(0.15, 1.2, 12))
    measured = np.polyfit(logk, logp, 1)[0]
    assert measured == pytest.approx(-slope, abs=0.15)
    # a thin slice follows k^-(slope - 1)
    slices = [radial_spectrum(g[:, :, i], (2.0, 2.0), np.geomspace(0.3, 1.2, 8)) for i in range(0, 64, 4)]
    logk2 = slices[0][0]
    logp2 = np.log(np.mean([np.exp(s[1]) for s in slices], axis=0))
    assert np.polyfit(logk2, logp2, 1)[0] == pytest.approx(-(slope - 1), abs=0.3)


def test_make_cmz_log_density_spectrum_has_requested_slope():
    # same seed, two turbulence amplitudes: ln(rho_1 / rho_2) isolates the turbulent field
    beta = 3.5
    one = make_cmz(GRID, seed=5, turbulence_slope=beta, turbulence_sigma=1.0)
    two = make_cmz(GRID, seed=5, turbulence_slope=beta, turbulence_sigma=0.5)
    log_ratio = np.log(one["density"].values.astype(np.float64)) - np.log(two["density"].values)
    assert float(np.std(log_ratio)) == pytest.approx(0.5, rel=1e-3)
    mid = 0.5 * (GRID.distance.start + GRID.distance.stop)
    spacing = (GRID.distance.step, np.radians(GRID.lon.step) * mid, np.radians(GRID.lat.step) * mid)
    logk, logp = radial_spectrum(log_ratio, spacing, np.geomspace(0.1, 0.8, 10))
    assert np.polyfit(logk, logp, 1)[0] == pytest.approx(-beta, abs=0.25)


def test_wide_latitude_grid_is_symmetric_without_random_structure():
    # |b| up to 3 deg: several in-plane evaluations (d cos b shifts by > 1 distance pixel)
    wide = GRID.replace(lat=Axis(-3.0, 3.0, 12))
    field = make_cmz(wide, seed=2, ring_twist=0.0, turbulence_sigma=0.0, velocity_dispersion=0.0, latitude_offset=0.0,
                     cloud_count=0, scale_height=200.0, diffuse_height=300.0)
    validate_field(field, wide)
    rho = field["density"].values
    np.testing.assert_allclose(rho, rho[:, :, ::-1], rtol=1e-5)
    np.testing.assert_allclose(field["velocity_los"].values, field["velocity_los"].values[:, :, ::-1],
                               rtol=1e-5, atol=1e-4)
    # the ring seen at |b| = 2.75 deg sits at a larger heliocentric distance d = d_plane / cos b
    d = GRID.distance.centers()
    column = rho[:32, 32, :]  # lon ~ 0, near side: the ring crosses at d_plane ~ R0 - b_ring

    def peak(c):  # sub-pixel position of the maximum (parabola through three pixels)
        i = int(np.argmax(c))
        return i + 0.5 * (c[i - 1] - c[i + 1]) / (c[i - 1] - 2 * c[i] + c[i + 1])

    low, high = peak(column[:, 6]), peak(column[:, 11])  # b = 0.25 and 2.75 deg
    d_plane = np.interp(low, np.arange(d.size), d)
    b_low, b_high = np.radians(wide.lat.centers()[[6, 11]])
    expected = d_plane * (np.cos(b_low) / np.cos(b_high) - 1) / GRID.distance.step
    assert high - low == pytest.approx(expected, abs=0.5)


# ---------------------------------------------------------------- the family that brackets the sky
def test_ring_is_drawn_across_the_bar():
    from iris_nb.sim.cmz import draw_cmz_parameters
    rng = np.random.default_rng(5)
    drawn = [draw_cmz_parameters(rng) for _ in range(400)]
    offsets = np.array([p["ring_angle"] - p["bar_angle"] for p in drawn])
    assert 60 <= offsets.min() and offsets.max() <= 120
    assert abs(offsets.mean() - 90) < 3 and offsets.std() > 10  # centred on 90 deg, with spread
    fixed = draw_cmz_parameters(np.random.default_rng(1), ring_angle=40.0)
    assert fixed["ring_angle"] == 40.0 and fixed["ring_bar_angle"] == pytest.approx(40.0 - fixed["bar_angle"])


def _ring_only(seed=4, **params):
    base = dict(lane_density=0.0, cloud_count=0, diffuse_density=0.5, turbulence_sigma=0.5, ring_twist=0.0,
                ring_coverage=1.2, ring_lopsidedness=0.0, ring_axis_ratio=0.5)
    base.update(params)
    return make_cmz(GRID, seed=seed, **base)


def _plane_coordinates():
    d, lon = GRID.distance.centers(), GRID.lon.centers()
    x, y, _ = cell_positions(d[:, None, None], lon[None, :, None], 0.0, GRID.observer_distance)
    return np.broadcast_to(x, (d.size, lon.size, 1))[..., 0], np.broadcast_to(y, (d.size, lon.size, 1))[..., 0]


def test_field_ring_major_axis_lies_across_the_bar():
    x, y = _plane_coordinates()
    for bar, across in ((25.0, 90.0), (22.0, 70.0)):
        field = _ring_only(bar_angle=bar, ring_bar_angle=across)
        w = h2_mass_weights(field).sum(axis=2)
        r = np.hypot(x, y)
        w = np.where((r > 40) & (r < 160), w, 0.0)
        cxx, cyy, cxy = (w * x * x).sum(), (w * y * y).sum(), (w * x * y).sum()
        # direction (sin t, -cos t) of the largest second moment
        evals, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
        vx, vy = evecs[:, -1]
        theta = np.degrees(np.arctan2(vx, -vy)) % 180.0
        assert abs(((theta - (bar + across)) + 90) % 180 - 90) < 8, (theta, bar + across)


def test_open_and_lopsided_ring():
    x, y = _plane_coordinates()
    r = np.hypot(x, y)
    phase = np.degrees(np.arctan2(y, x))  # angle in the plane, deg
    closed = h2_mass_weights(_ring_only(ring_bar_angle=90.0)).sum(axis=2)
    # lopsided: the half of the ring around the densest phase holds most of the mass
    lop = _ring_only(ring_bar_angle=90.0, ring_lopsidedness=0.6, ring_lopsided_phase=0.0)
    w = np.where((r > 40) & (r < 160), h2_mass_weights(lop).sum(axis=2), 0.0)
    import iris_nb.sim.cmz_geometry as geometry
    ring = geometry.Ring(95.0, 0.5, json.loads(lop.attrs["parameters"])["ring_angle"], 100.0)
    xp, yp = ring.to_frame(x, y)
    anomaly = np.arctan2(yp / ring.b, xp / ring.a)
    dense_half = np.cos(anomaly) > 0
    assert w[dense_half].sum() / w.sum() > 0.62
    # open: a coverage of 0.6 empties 40% of the orbit around the gap phase
    open_ = _ring_only(ring_bar_angle=90.0, ring_coverage=0.6, ring_gap_phase=180.0)
    w_open = np.where((r > 40) & (r < 160), h2_mass_weights(open_).sum(axis=2), 0.0)
    w_closed = np.where((r > 40) & (r < 160), closed, 0.0)
    gap = np.cos(anomaly) < -0.9  # within ~25 deg of E = 180 deg
    assert w_open[gap].sum() < 0.1 * w_closed[gap].sum()
    assert w_open[~gap].sum() > 0.5 * w_closed[~gap].sum()
    del phase


def test_latitude_offset_moves_the_gas_centroid():
    lat = GRID.lat.centers()
    for offset in (-0.08, 0.0):
        field = _ring_only(latitude_offset=offset, scale_height=12.0)
        w = h2_mass_weights(field).sum(axis=(0, 1))
        assert np.sum(w * lat) / w.sum() == pytest.approx(offset, abs=0.012)


def test_per_sample_line_widths_and_cooler_dense_gas(fields):
    values = [float(f["turbulent_b"]) for f in fields.values()]
    assert all(3.0 <= b <= 10.0 for b in values) and len(set(values)) == len(values)
    assert fields[0]["turbulent_b"].attrs["units"] == "km / s"
    from iris_nb.sim.cmz import draw_cmz_parameters
    rng = np.random.default_rng(0)
    dense = [draw_cmz_parameters(rng)["temperature_dense"] for _ in range(200)]
    assert min(dense) < 30 and np.mean(np.array(dense) < 50) > 0.4  # not >= 50 K everywhere
