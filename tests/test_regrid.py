"""Flux-conserving, NaN-aware regridding onto a model grid."""

import numpy as np
import pytest
import xarray as xr

from cubes import make_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.regrid import axis_edges, overlap_matrix, regrid_axis, regrid_cube

# a small grid so every test runs in milliseconds
GRID = SMALL.replace(
    lon=Axis(-1.5, 1.5, 12), lat=Axis(-0.375, 0.375, 6), velocity=Axis(-200.0, 200.0, 16), name="tiny"
)


def centres(start, stop, n):
    step = (stop - start) / n
    return start + (np.arange(n) + 0.5) * step


def grid_cube(n_lon=12, n_lat=6, n_v=16, window=(-1.5, 1.5, -0.375, 0.375, -200.0, 200.0), seed=0):
    rng = np.random.default_rng(seed)
    lon = centres(window[0], window[1], n_lon)
    lat = centres(window[2], window[3], n_lat)
    vel = centres(window[4], window[5], n_v)
    return make_cube(rng.random((n_lon, n_lat, n_v)).astype(np.float32), lon, lat, vel)


def box_average(edges_in, values, edges_out):
    """Reference: exact average of a piecewise-constant function over each output pixel,
    from its cumulative integral (independent of the overlap-matrix code)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values * np.diff(edges_in))])
    at = np.interp(edges_out, edges_in, cumulative)
    return np.diff(at) / np.diff(edges_out)


# ------------------------------------------------------------------ overlap matrices
def test_overlap_matrix_rows_are_fractional_overlaps():
    matrix = overlap_matrix(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.5, 3.0]))
    np.testing.assert_allclose(matrix, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    fine = overlap_matrix(np.array([0.0, 2.0]), np.array([0.0, 0.5, 1.0, 2.0]))
    np.testing.assert_allclose(fine, [[1.0], [1.0], [1.0]])


def test_axis_edges_from_centres():
    np.testing.assert_allclose(axis_edges(np.array([0.5, 1.5, 2.5])), [0, 1, 2, 3])


def test_regrid_axis_averages_one_axis_with_blanks_and_coverage():
    edges_in = np.arange(0.0, 11.0)  # ten 1-wide pixels, 0 .. 10
    rng = np.random.default_rng(3)
    values = rng.random(10)
    edges_out = np.array([0.0, 2.5, 4.0, 7.0, 10.0])
    data = np.stack([values, 2.0 * values])[:, :, None]  # (2, 10, 1): regrid the middle axis
    out = regrid_axis(data, edges_in, edges_out, axis=1)
    assert out.shape == (2, 4, 1)
    np.testing.assert_allclose(out[0, :, 0], box_average(edges_in, values, edges_out), rtol=1e-12)
    np.testing.assert_allclose(out[1], 2.0 * out[0], rtol=1e-12)
    blanked = values.copy()
    blanked[[0, 1]] = np.nan  # [0, 2.5] keeps only half of pixel 2: 0.5 of 2.5 covered
    loose = regrid_axis(blanked, edges_in, edges_out)
    assert loose[0] == pytest.approx(values[2])  # the finite part alone, renormalised
    strict = regrid_axis(blanked, edges_in, edges_out, min_coverage=0.5)
    assert np.isnan(strict[0]) and np.isfinite(strict[1:]).all()
    beyond = regrid_axis(values, edges_in, np.array([9.0, 10.0, 11.0, 12.0]), min_coverage=0.5)
    assert beyond[0] == pytest.approx(values[9]) and np.isnan(beyond[1:]).all()
    assert regrid_axis(values.astype(np.float32), edges_in, edges_out).dtype == np.float32
    with pytest.raises(ValueError, match="edges"):
        regrid_axis(values, edges_in[:-1], edges_out)
    with pytest.raises(ValueError, match="min_coverage"):
        regrid_axis(values, edges_in, edges_out, min_coverage=50)


# ------------------------------------------------------------------ flux conservation
@pytest.mark.parametrize("n_in", [64, 48, 100, 7, 16])  # aligned 4:1, non-aligned, finer output, coarse, same
def test_velocity_integral_is_conserved(n_in):
    n_lon, n_lat = GRID.lon.steps, GRID.lat.steps
    velocity = centres(-200.0, 200.0, n_in)
    rng = np.random.default_rng(n_in)
    profile = np.exp(-0.5 * ((velocity - 30.0) / 25.0) ** 2) + 0.1 * rng.random(n_in)
    data = np.broadcast_to(profile, (n_lon, n_lat, n_in)).astype(np.float64).copy()
    cube = make_cube(data, GRID.lon.centers(), GRID.lat.centers(), velocity)
    out = regrid_cube(cube, GRID)
    integral_in = data[0, 0].sum() * (400.0 / n_in)
    integral_out = out.values[0, 0].sum() * GRID.velocity.step
    assert integral_out == pytest.approx(integral_in, rel=1e-12)
    expected = box_average(np.linspace(-200, 200, n_in + 1), profile, GRID.velocity.edges())
    np.testing.assert_allclose(out.values[5, 3], expected, rtol=1e-12)


def test_not_nearest_channel():
    # one bright channel of width 4 km/s lands inside a 25 km/s output channel: averaged, not picked
    velocity = centres(-200.0, 200.0, 100)
    data = np.zeros((GRID.lon.steps, GRID.lat.steps, 100))
    data[..., 52] = 1.0
    out = regrid_cube(make_cube(data, GRID.lon.centers(), GRID.lat.centers(), velocity), GRID)
    assert out.values[0, 0].max() == pytest.approx(4.0 / 25.0)


def test_area_weighting_in_lon_and_lat_is_separable_box_average():
    rng = np.random.default_rng(1)
    lon = centres(-1.6, 1.6, 21)  # larger window, non-aligned pixels
    lat = centres(-0.4, 0.4, 9)
    velocity = GRID.velocity.centers()
    f_lon, f_lat = rng.random(21), rng.random(9)
    data = f_lon[:, None, None] * f_lat[None, :, None] * np.ones(16)
    out = regrid_cube(make_cube(data, lon, lat, velocity), GRID)
    ref_lon = box_average(np.linspace(-1.6, 1.6, 22), f_lon, GRID.lon.edges())
    ref_lat = box_average(np.linspace(-0.4, 0.4, 10), f_lat, GRID.lat.edges())
    np.testing.assert_allclose(out.values[..., 7], np.outer(ref_lon, ref_lat), rtol=1e-12)
    assert out.dims == ("lon", "lat", "velocity")
    np.testing.assert_allclose(out.lon.values, GRID.lon.centers())
    assert out.lon.attrs["units"] == "deg" and out.velocity.attrs["units"] == "km/s"


# ------------------------------------------------------------------ identity and dtypes
def test_cube_on_the_grid_is_not_copied():
    cube = grid_cube()
    out = regrid_cube(cube, GRID)
    assert np.shares_memory(out.data, cube.data)
    np.testing.assert_array_equal(out.values, cube.values)
    assert out.dtype == np.float32


def test_larger_window_on_the_same_pixels_is_sliced():
    step_lon, step_v = GRID.lon.step, GRID.velocity.step
    cube = grid_cube(n_lon=16, n_v=20, window=(-1.5 - 2 * step_lon, 1.5 + 2 * step_lon, -0.375, 0.375,
                                                -200.0 - 2 * step_v, 200.0 + 2 * step_v))
    out = regrid_cube(cube, GRID)
    assert np.shares_memory(out.data, cube.data)
    np.testing.assert_array_equal(out.values, cube.values[2:14, :, 2:18])


def test_float32_stays_float32_when_regridded():
    cube = grid_cube(n_lon=24, n_lat=12, n_v=40)
    out = regrid_cube(cube, GRID)
    assert out.dtype == np.float32
    exact = regrid_cube(cube.astype(np.float64).assign_attrs(units="K"), GRID)
    assert exact.dtype == np.float64
    np.testing.assert_allclose(out.values, exact.values, rtol=1e-5)
    # output pixel (0, 0, 0) covers input lon 0-1, lat 0-1 and 2.5 velocity channels
    weights = np.array([1.0, 1.0, 0.5])
    expected = (cube.values[:2, :2, :3].astype(np.float64) * weights).sum() / (4 * weights.sum())
    assert exact.values[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    assert out.attrs["units"] == "K"


# ------------------------------------------------------------------ NaN
def test_nan_inputs_are_dropped_and_renormalised():
    cube = grid_cube(n_lon=24, n_lat=6, n_v=16).astype(np.float64).assign_attrs(units="K")
    data = cube.values.copy()
    data[4, 2, 7] = np.nan  # output lon pixel 2 averages input lon pixels 4 and 5
    data[6:8, 1, 3] = np.nan  # both inputs of output pixel (3, 1, 3)
    out = regrid_cube(cube.copy(data=data), GRID)
    assert out.values[2, 2, 7] == pytest.approx(data[5, 2, 7])
    assert np.isnan(out.values[3, 1, 3])
    assert np.isnan(out.values).sum() == 1
    np.testing.assert_allclose(out.values[8], 0.5 * (data[16] + data[17]))


def test_nan_with_all_three_axes_regridded():
    rng = np.random.default_rng(3)
    lon, lat, velocity = centres(-1.5, 1.5, 24), centres(-0.375, 0.375, 12), centres(-200, 200, 32)
    data = rng.random((24, 12, 32))
    data[rng.random(data.shape) < 0.3] = np.nan
    out = regrid_cube(make_cube(data, lon, lat, velocity), GRID)
    block = data[4:6, 2:4, 10:12]
    assert out.values[2, 1, 5] == pytest.approx(np.nanmean(block))


def test_block_by_block_equals_one_block(monkeypatch):
    import iris_nb.regrid as regrid_module

    rng = np.random.default_rng(5)
    lon, lat, velocity = centres(-1.55, 1.55, 37), centres(-0.4, 0.4, 11), centres(-210, 210, 29)
    data = rng.random((2, 37, 11, 29))
    data[rng.random(data.shape) < 0.2] = np.nan
    cube = xr.concat([make_cube(d, lon, lat, velocity) for d in data], dim="sample").assign_attrs(units="K")
    whole = regrid_cube(cube, GRID)
    monkeypatch.setattr(regrid_module, "_BLOCK_BYTES", 1)  # one output lon pixel per block
    np.testing.assert_allclose(regrid_cube(cube, GRID).values, whole.values, rtol=1e-12)
    assert np.isfinite(whole.values).mean() > 0.99


# ------------------------------------------------------------------ stacks and coverage
def test_stack_equals_single_regrids():
    cubes = [grid_cube(n_lon=18, n_lat=9, n_v=30, seed=s) for s in range(3)]
    stack = xr.concat(cubes, dim="sample").assign_attrs(units="K")
    out = regrid_cube(stack, GRID)
    assert out.dims == ("sample", "lon", "lat", "velocity")
    for i, cube in enumerate(cubes):
        np.testing.assert_allclose(out.values[i], regrid_cube(cube, GRID).values, rtol=1e-6)


def test_coverage_error_names_axis_and_amount():
    cube = make_cube(np.ones((27, 6, 16)), centres(-1.2, 1.5, 27), GRID.lat.centers(), GRID.velocity.centers())
    with pytest.raises(ValueError) as info:
        regrid_cube(cube, GRID)
    message = str(info.value)
    assert "lon -1.2..1.5 deg" in message and "-1.5..1.5 deg" in message
    assert "0.3 deg missing on the low side" in message
    cube = make_cube(np.ones((12, 6, 10)), GRID.lon.centers(), GRID.lat.centers(), centres(-200, 150, 10))
    with pytest.raises(ValueError, match=r"velocity .* 50 km/s missing on the high side"):
        regrid_cube(cube, GRID)


def test_coverage_tolerates_half_an_input_pixel():
    # the cube's pixel centres reach the window edges: its outer half pixels are missing
    lon = np.linspace(-1.5, 1.5, 13)
    cube = make_cube(np.ones((13, 6, 16)), lon, GRID.lat.centers(), GRID.velocity.centers())
    out = regrid_cube(cube, GRID)
    np.testing.assert_allclose(out.values, 1.0)


def test_accepts_a_model_like_object_and_preset_names():
    class HasGrid:
        grid = GRID

    out = regrid_cube(grid_cube(n_lon=24), HasGrid())
    assert out.shape == GRID.ppv_shape
    with pytest.raises(ValueError, match="unknown grid preset"):
        regrid_cube(grid_cube(), "nonsense")
