"""Tests for iris_nb.sim.family: the family reality check against the published CMZ."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import erf  # noqa: E402

from iris_nb.grids import SMALL, Axis  # noqa: E402
from iris_nb.sim import LineObserver, Noise, SimpleObserver, family_summary, make_cmz  # noqa: E402
from iris_nb.sim.family import OBSERVABLES, PUBLISHED_RANGES  # noqa: E402
from iris_nb.sim.observables import cell_volumes, cube_observables, effective_line_width, h2_mass  # noqa: E402
from iris_nb.sim.fields import HYDROGEN_MASS_FRACTION, field_from_arrays  # noqa: E402

# the SMALL window at a few pixels: fast, for everything but the reality check itself
TINY = SMALL.replace(distance=Axis(8052.0, 8502.0, 16), lon=Axis(-1.5, 1.5, 16), lat=Axis(-0.375, 0.375, 4),
                     velocity=Axis(-200.0, 200.0, 32), name="tiny")
CUT = math.sqrt(2.0 * math.log(10.0))  # a component ends where T < 0.1 T_peak: |v - v0| = 2.146 sigma


def gaussian(v, centre, sigma, peak, width=None):
    """A Gaussian line, K; averaged over channels of ``width`` km/s when given (as LineObserver does)."""
    if width is None:
        return peak * np.exp(-0.5 * ((v - centre) / sigma) ** 2)
    lo, hi = (v - 0.5 * width - centre) / (sigma * math.sqrt(2)), (v + 0.5 * width - centre) / (sigma * math.sqrt(2))
    return peak * sigma * math.sqrt(math.pi / 2) * (erf(hi) - erf(lo)) / width


# ------------------------------------------------------------------------------ H2 mass
def test_uniform_slab_gives_its_analytic_mass():
    rho = 37.0  # total gas, solMass / pc3, fully molecular
    field = field_from_arrays(TINY, density=rho, x_h2=0.5)
    d0, d1 = TINY.distance.start, TINY.distance.stop
    b0, b1 = np.radians([TINY.lat.start, TINY.lat.stop])
    volume = (d1**3 - d0**3) / 3.0 * math.radians(TINY.lon.span) * (math.sin(b1) - math.sin(b0))
    assert h2_mass(field) == pytest.approx(HYDROGEN_MASS_FRACTION * rho * volume, rel=1e-9)
    # ~2.6e6 pc3 per 1 solMass/pc3: the window is 450 pc deep, 434 pc wide, 108 pc tall at R0
    assert volume == pytest.approx(450 * 434 * 108, rel=0.02)


def test_one_cell_and_density_units():
    density = np.zeros((16, 16, 4), np.float32)
    density[5, 7, 2] = 100.0
    field = field_from_arrays(TINY, density=density, x_h2=0.25)
    d = TINY.distance.centers()[5]
    b = math.radians(TINY.lat.centers()[2])
    approx = d**2 * TINY.distance.step * math.radians(TINY.lon.step) * math.radians(TINY.lat.step) * math.cos(b)
    assert cell_volumes(TINY)[5, 0, 2] == pytest.approx(approx, rel=1e-5)
    expected = 2 * 0.25 * HYDROGEN_MASS_FRACTION * 100.0 * cell_volumes(TINY)[5, 0, 2]
    assert h2_mass(field) == pytest.approx(expected, rel=1e-6)
    in_cgs = field.copy()
    in_cgs["density"] = field["density"] * 6.768e-23  # solMass/pc3 -> g/cm3
    in_cgs["density"].attrs["units"] = "g / cm3"
    assert h2_mass(in_cgs) == pytest.approx(expected, rel=1e-3)


# ------------------------------------------------------------------------------ line width
@pytest.mark.parametrize("width", [None, SMALL.velocity.step])
def test_single_gaussian_gives_its_width(width):
    dv = width or 0.5
    v = np.arange(-100.0, 100.0, dv) + 0.5 * dv
    spectrum = gaussian(v, 13.0, 6.0, 10.0, width)
    sigma = effective_line_width(spectrum[None, :], dv)[0]
    if width is None:  # fine channels: 0.968 sigma, from the cut at 10% of the peak
        assert sigma == pytest.approx(6.0 * erf(CUT / math.sqrt(2)), rel=0.005)
    assert sigma == pytest.approx(6.0, rel=0.05)  # SMALL's 3.125 km/s channels: whole channels at the cut


def test_line_width_keeps_the_brightest_component_and_skips_faint_sightlines():
    v = np.arange(-150.0, 150.0, 1.0) + 0.5
    one = gaussian(v, -40.0, 5.0, 10.0)
    two = one + gaussian(v, 60.0, 15.0, 6.0)  # the far side of the ring on the same sightline
    faint = gaussian(v, 0.0, 30.0, 1.0)  # below a quarter of the cube's peak
    sigma = effective_line_width(np.stack([one, two, faint]), 1.0)
    assert sigma[0] == pytest.approx(sigma[1], rel=1e-6)
    assert sigma[0] == pytest.approx(5.0 * erf(CUT / math.sqrt(2)), rel=0.01)
    assert np.isnan(sigma[2])
    assert np.all(np.isnan(effective_line_width(np.zeros((3, 8)), 1.0)))


# ------------------------------------------------------------------------------ cube observables
def test_cube_observables_of_two_known_clouds():
    grid = SMALL
    lon, v = grid.lon.centers(), grid.velocity.centers()
    cube = np.zeros(grid.ppv_shape)
    b2 = np.flatnonzero(np.abs(lon - 0.67) <= 0.05)  # 4 pixels, every latitude: a 10 K line at +60 km/s
    c = np.flatnonzero(np.abs(lon + 0.57) <= 0.05)  # half the latitudes: 5 K in the PV, at -55 km/s
    cube[b2] = gaussian(v, 60.0, 8.0, 10.0)
    cube[c, :16] = gaussian(v, -55.0, 8.0, 10.0)
    out = cube_observables(cube, grid)
    assert set(out) == set(OBSERVABLES) - {"h2_mass_msun", "noise_rms_K"}
    assert out["cube_peak_K"] == pytest.approx(cube.max())
    assert out["pv_peak_K"] == pytest.approx(cube[b2].max())  # Sgr C fills half the latitudes
    line_integral = 10.0 * 8.0 * math.sqrt(2 * math.pi)
    lines = b2.size * grid.lat.steps + c.size * 16
    assert out["integrated_intensity_K_km_s"] == pytest.approx(line_integral * lines / (128 * 32), rel=1e-3)
    assert out["line_width_km_s"] == pytest.approx(8.0, rel=0.05)
    assert out["v_sgr_b2_km_s"] == pytest.approx(60.0, abs=0.2)
    assert out["v_sgr_c_km_s"] == pytest.approx(-55.0, abs=0.2)
    assert out["v_peak_sgr_b2_km_s"] == v[np.argmin(abs(v - 60.0))]
    assert out["v_peak_sgr_c_km_s"] == v[np.argmin(abs(v + 55.0))]
    assert out["lv_lon_span_deg"] == pytest.approx((b2[-1] - c[0] + 1) * grid.lon.step)
    reach = 60.0 + 8.0 * math.sqrt(2 * math.log(10 / 0.5)) - (-55.0 - 8.0 * math.sqrt(2 * math.log(5 / 0.5)))
    assert abs(out["lv_velocity_span_km_s"] - reach) <= grid.velocity.step
    empty = cube_observables(np.zeros(grid.ppv_shape), grid)
    assert empty["lv_velocity_span_km_s"] == 0.0 and math.isnan(empty["v_sgr_b2_km_s"])
    assert math.isnan(empty["line_width_km_s"])
    with pytest.raises(ValueError, match="lon, lat, velocity"):
        cube_observables(cube[:, :, :10], grid)


# ------------------------------------------------------------------------------ bad input
def _never(grid, seed=0, **kw):
    raise AssertionError("the model must not be called when the input is bad")


@pytest.mark.parametrize("n", [0, -3])
def test_zero_or_negative_samples_is_a_clear_error(n):
    with pytest.raises(ValueError, match=f"n >= 1 samples, got n={n}"):
        family_summary(n, TINY, model=_never)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 2.5}, TypeError, "positive integer"),
    ({"n": True}, TypeError, "positive integer"),
    ({"grid": "SMALL"}, TypeError, "iris_nb.grids.Grid"),
    ({"model": "make_cmz"}, TypeError, "callable"),
    ({"seed": -1}, TypeError, "non-negative"),
    ({"model_kwargs": [1]}, TypeError, "dict"),
    ({"observer": LineObserver(SMALL)}, ValueError, "same grid"),
    ({"observer": SimpleObserver(TINY)}, ValueError, "brightness temperature in K"),
    ({"observer": "LineObserver"}, TypeError, "observer"),
    ({"noise": 1.0}, TypeError, "Noise"),
    ({"figure": "yes"}, TypeError, "matplotlib Axes"),
])
def test_bad_input_fails_before_any_sample(kwargs, error, match):
    args = {"n": 2, "grid": TINY, "model": _never, **kwargs}
    with pytest.raises(error, match=match):
        family_summary(**args)


# ------------------------------------------------------------------------------ the summary object
def test_table_medians_inside_and_figure_on_a_tiny_grid():
    fig, axes = plt.subplots(3, 5)
    noise = Noise(grid=TINY, fade=False)
    summary = family_summary(3, TINY, seed=5, model_kwargs={"cloud_count": 4}, noise=noise, figure=axes)
    table = summary.table
    assert list(table.columns) == ["seed"] + list(OBSERVABLES)
    assert table.shape == (3, 1 + len(OBSERVABLES)) and list(table.seed) == [5, 6, 7]
    assert set(summary.ranges) == set(PUBLISHED_RANGES)
    assert summary.figure is fig and axes[0, 0].get_title() == "cube peak"
    # the noise model reproduces the SEDIGISM rms of 0.9 K per 0.25 km/s channel
    assert table.noise_rms_K.to_numpy() == pytest.approx(0.9, rel=0.05)
    inside = summary.inside()
    assert inside["noise_rms_K"] is True and inside["pv_peak_K"] is None
    medians = summary.medians()
    assert list(medians.index) == list(OBSERVABLES)
    comparison = summary.comparison()
    assert comparison.loc["noise_rms_K", "outside_by"] == 0.0
    assert "3 samples on tiny" in repr(summary)
    plt.close(fig)
    clean = family_summary(1, TINY, seed=5, model_kwargs={"cloud_count": 4})
    assert "noise_rms_K" not in clean.table and "noise_rms_K" not in clean.ranges
    assert clean.table.iloc[0].drop("seed").to_dict() != table.iloc[0].drop(["seed", "noise_rms_K"]).to_dict()


# ------------------------------------------------------------------------------ the reality check
@pytest.fixture(scope="module")
def default_family():
    return family_summary(16)  # make_cmz on SMALL, LineObserver(SMALL), clean cubes; ~10-60 s


# Every judged median of the default family on SMALL sits inside its published range (n = 16:
# cube peak 18.5 K in 10-20, line width 7.9 km/s in 5-15, H2 mass 5.1e7 in 2-6e7 solMass,
# mean / peak v at Sgr B2 +69 / +61 in +45..+75 km/s, at Sgr C -56 / -58 in -70..-40 km/s).
INSIDE = ["cube_peak_K", "line_width_km_s", "h2_mass_msun", "v_sgr_b2_km_s", "v_sgr_c_km_s",
          "v_peak_sgr_b2_km_s", "v_peak_sgr_c_km_s"]


def test_default_family_table(default_family):
    table = default_family.table
    assert table.shape == (16, 1 + len(OBSERVABLES) - 1) and list(table.seed) == list(range(16))
    assert table[["cube_peak_K", "pv_peak_K", "h2_mass_msun", "line_width_km_s"]].notna().all().all()
    assert (table.pv_peak_K <= table.cube_peak_K).all()
    fig = default_family.plot()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(OBSERVABLES) - 1
    plt.close(fig)


@pytest.mark.parametrize("name", INSIDE)
def test_default_family_median_inside_published_range(default_family, name):
    r = PUBLISHED_RANGES[name]
    assert default_family.inside()[name] is True, (name, default_family.medians()[name], (r.low, r.high))
