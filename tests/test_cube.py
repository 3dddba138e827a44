"""Cube conventions (standardize_cube) and latitude reduction (reduce_cube)."""

import warnings

import numpy as np
import pytest
import xarray as xr

from cubes import make_cube
from iris_nb.cube import LineMismatchWarning, reduce_cube, standardize_cube
from iris_nb.grids import SMALL
from iris_nb.units import brightness_scale


# ------------------------------------------------------------------ standardisation
def test_standard_cube_is_not_copied():
    cube = make_cube()
    std = standardize_cube(cube)
    assert std.dims == ("lon", "lat", "velocity")
    assert np.shares_memory(std.data, cube.data)
    assert std.dtype == np.float32
    assert std.attrs["units"] == "K"


def test_other_order_m_per_s_and_descending_360_lon_give_the_same_cube():
    cube = make_cube()
    lon360 = np.mod(cube.lon.values, 360.0)
    other = (
        cube.assign_coords(lon=("lon", lon360, {"units": "deg"}),
                           velocity=("velocity", cube.velocity.values * 1e3, {"units": "m/s"}))
        .isel(lon=slice(None, None, -1), velocity=slice(None, None, -1))
        .transpose("velocity", "lon", "lat")
    )
    assert other.lon.values.max() > 358  # really stored as 0..360, descending
    std = standardize_cube(other)
    assert std.dims == ("lon", "lat", "velocity")
    np.testing.assert_allclose(std.lon.values, cube.lon.values, atol=1e-9)
    np.testing.assert_allclose(std.velocity.values, cube.velocity.values, atol=1e-9)
    np.testing.assert_array_equal(std.values, cube.values)
    assert std.velocity.attrs["units"] == "km / s"


def test_tile_straddling_zero_is_sorted():
    lon = np.array([1.0, 0.5, 0.0, 359.5, 359.0])  # FITS order: descending through l = 0
    cube = make_cube(lon=lon, shape=(5, 4, 6))
    std = standardize_cube(cube)
    np.testing.assert_allclose(std.lon.values, [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(std.values, cube.values[::-1])


def test_unsorted_coordinate_is_sorted_and_radians_converted():
    lat = np.deg2rad(np.array([0.1, -0.2, 0.3, 0.0]))
    cube = make_cube(lat=lat, shape=(5, 4, 6))
    cube.lat.attrs["units"] = "rad"
    std = standardize_cube(cube)
    np.testing.assert_allclose(std.lat.values, [-0.2, 0.0, 0.1, 0.3])
    np.testing.assert_array_equal(std.values[:, 0], cube.values[:, 1])


def test_mk_and_jy_per_beam_are_converted_to_kelvin():
    cube = make_cube()
    mk = (cube * 1000.0).assign_attrs(units="mK")
    np.testing.assert_allclose(standardize_cube(mk).values, cube.values, rtol=1e-6)
    jy = cube.copy().assign_attrs(units="Jy/beam", beam_fwhm=30.0, rest_frequency=SMALL.rest_frequency)
    factor = brightness_scale("Jy/beam", SMALL.rest_frequency, 30.0)
    std = standardize_cube(jy)
    assert std.attrs["units"] == "K" and std.attrs["original_units"] == "Jy / beam"
    np.testing.assert_allclose(std.values, cube.values * factor, rtol=1e-6)
    elliptical = jy.assign_attrs(beam_fwhm_minor=15.0)
    factor = brightness_scale("Jy/beam", SMALL.rest_frequency, (30.0, 15.0))
    np.testing.assert_allclose(standardize_cube(elliptical).values, cube.values * factor, rtol=1e-6)
    kept = standardize_cube(mk, to_kelvin=False)
    assert kept.attrs["units"] == "mK"
    np.testing.assert_array_equal(kept.values, mk.values)


def test_integer_and_float64_data():
    cube = make_cube(data=np.ones((16, 8, 12), dtype=np.int16))
    assert standardize_cube(cube).dtype == np.float32
    cube64 = make_cube().astype(np.float64).assign_attrs(units="K")
    assert standardize_cube(cube64).dtype == np.float64


def test_stack_dim_moves_first():
    cube = make_cube()
    stack = xr.concat([cube, 2 * cube], dim="sample").transpose("lon", "sample", "lat", "velocity")
    stack.attrs["units"] = "K"
    std = standardize_cube(stack)
    assert std.dims == ("sample", "lon", "lat", "velocity")
    np.testing.assert_array_equal(std.values[1], 2 * cube.values)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.assign_attrs(units=None), ["no units", "attrs['units']"]),
        (lambda c: c.assign_attrs(units="furlong"), ["cannot parse"]),
        (lambda c: c.assign_attrs(units="Jy/beam"), ["beam", "FWHM"]),
        (lambda c: c.assign_attrs(units="km"), ["not a brightness"]),
        (lambda c: c.rename(lon="x", lat="y", velocity="v"), ["('x', 'y', 'v')", "rename", "'x': 'lon'"]),
        (lambda c: c.isel(lat=0), ["2 dims", "lon, lat, velocity"]),
        (lambda c: c.expand_dims(a=1, b=1), ["5 dims"]),
        (lambda c: c.expand_dims(a=1).rename(lat="b0"), ["missing", "rename"]),
        (lambda c: c.drop_vars("lat"), ["no 'lat' coordinate", "assign_coords"]),
        (lambda c: c.assign_coords(velocity=("velocity", c.velocity.values, {})), ["'velocity'", "no units"]),
        (lambda c: c.assign_coords(velocity=("velocity", c.velocity.values + 2.3e11, {"units": "Hz"})),
         ["Hz", "radio"]),
        (lambda c: c.assign_coords(lon=("lon", np.r_[np.nan, c.lon.values[1:]], {"units": "deg"})),
         ["missing", "'lon'"]),
        (lambda c: c.assign_coords(lat=("lat", np.r_[0.0, 0.0, c.lat.values[2:]], {"units": "deg"})),
         ["duplicate"]),
        (lambda c: c * np.nan, ["only NaN"]),
        (lambda c: c.astype(str), ["numeric"]),
    ],
)
def test_bad_cubes_raise_helpful_errors(change, words):
    cube = change(make_cube())
    with pytest.raises((ValueError, TypeError)) as info:
        standardize_cube(cube)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_all_nan_cube_in_a_stack_is_named():
    cube = make_cube()
    stack = xr.concat([cube, cube * np.nan], dim="sample").assign_attrs(units="K")
    with pytest.raises(ValueError, match="cube 1 of the stack"):
        standardize_cube(stack)


def test_not_a_dataarray():
    with pytest.raises(TypeError, match="pick one variable"):
        standardize_cube(make_cube().to_dataset(name="t"))


def test_line_mismatch_warns_and_match_does_not():
    cube = make_cube().assign_attrs(line="12CO(2-1)")
    with pytest.warns(LineMismatchWarning, match="12CO"):
        standardize_cube(cube, SMALL)
    cube = make_cube().assign_attrs(rest_frequency=230.538)
    with pytest.warns(LineMismatchWarning, match="230.538"):
        standardize_cube(cube, SMALL)
    cube = make_cube().assign_attrs(RESTFRQ=SMALL.rest_frequency * 1e9, line="13CO (2-1)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        standardize_cube(cube, SMALL)


# ------------------------------------------------------------------ reduction
def test_mean_reduction_ignores_nan_pixels():
    cube = make_cube()
    data = cube.values.copy()
    data[3, 2, 5] = np.nan
    cube = cube.copy(data=data)
    pv = reduce_cube(cube, "mean")
    assert pv.dims == ("lon", "velocity")
    assert np.isfinite(pv.values).all()
    valid = np.delete(data[3, :, 5], 2)
    np.testing.assert_allclose(pv.values[3, 5], valid.mean(), rtol=1e-6)
    np.testing.assert_allclose(pv.values[4], data[4].mean(axis=0), rtol=1e-6)
    assert pv.attrs["all_nan_fraction"] == 0.0
    assert pv.attrs["units"] == "K" and pv.attrs["reduction"] == "mean"


def test_all_nan_latitudes_become_zero_and_are_counted():
    cube = make_cube()
    data = cube.values.copy()
    data[0, :, :3] = np.nan
    pv = reduce_cube(cube.copy(data=data), "mean")
    assert (pv.values[0, :3] == 0).all()
    assert pv.attrs["all_nan_fraction"] == pytest.approx(3 / (16 * 12))
    pv_max = reduce_cube(cube.copy(data=data), "max")
    assert (pv_max.values[0, :3] == 0).all()
    np.testing.assert_array_equal(pv_max.values[1:], np.nanmax(data[1:], axis=1))


def test_max_reduction_ignores_nan_and_keeps_units():
    cube = make_cube(units="mK")
    data = cube.values.copy()
    data[2, :, 4] = -1.0
    data[2, 0, 4] = np.nan
    pv = reduce_cube(cube.copy(data=data), "max")
    assert pv.values[2, 4] == -1.0
    assert pv.attrs["units"] == "mK"
    assert pv.dtype == np.float32


def test_reduction_of_a_stack_and_of_a_reordered_cube():
    cube = make_cube()
    stack = xr.concat([cube, 3 * cube], dim="time").assign_attrs(units="K")
    pv = reduce_cube(stack.transpose("time", "velocity", "lat", "lon"))
    assert pv.dims == ("time", "lon", "velocity")
    np.testing.assert_allclose(pv.values[1], 3 * cube.values.mean(axis=1), rtol=1e-6)


def test_bad_reduction_name():
    with pytest.raises(ValueError, match="'mean' or 'max'"):
        reduce_cube(make_cube(), "median")
