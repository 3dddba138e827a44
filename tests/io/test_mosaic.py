"""Mosaicking FITS tiles (the SEDIGISM G359 + G001 case) and velocity resampling."""

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from fitsmaker import pixel_centres, unique_cube, write_fits_cube
from iris_nb.io import mosaic, open_cube, resample_velocity

LON = pixel_centres(-1.5, 1.5, 24)  # 0.125 deg pixels
LAT = pixel_centres(-0.25, 0.25, 4)
VEL = pixel_centres(-200.0, 200.0, 8)
WEST = slice(0, 14)  # l = -1.5 .. +0.25: the G359 tile, 4 columns past l = 0
EAST = slice(10, 24)  # l = -0.25 .. +1.5: the G001 tile


def write_tiles(tmp_path, data, **east_kwargs):
    west = write_fits_cube(tmp_path / "G359_13CO21_Tmb_DR1.fits", data[WEST], LON[WEST], LAT, VEL)
    east_data = east_kwargs.pop("east_data", data[EAST])
    east = write_fits_cube(tmp_path / "G001_13CO21_Tmb_DR1.fits", east_data, LON[EAST], LAT, VEL, **east_kwargs)
    return west, east


def test_two_tiles_reassemble_the_cube_exactly(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west, east = write_tiles(tmp_path, data)
    assert 359 < fits.getheader(west)["CRVAL1"] < 360  # G359 tile in the 0..360 convention
    cube = open_cube([west, east])
    assert cube.sizes == {"lon": 24, "lat": 4, "velocity": 8}
    np.testing.assert_allclose(cube.lon.values, LON, atol=1e-9)
    assert np.unique(np.round(cube.lon.values, 6)).size == LON.size  # no duplicated column
    np.testing.assert_array_equal(cube.values, data)
    assert cube.attrs["source"] == "G359_13CO21_Tmb_DR1.fits, G001_13CO21_Tmb_DR1.fits"
    assert cube.attrs["units"] == "K" and cube.attrs["line"] == "13CO(2-1)"
    reverse = open_cube([east, west])
    np.testing.assert_array_equal(reverse.values, data)
    np.testing.assert_allclose(reverse.lon.values, LON, atol=1e-9)


def test_overlap_averages_finite_values_only(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west_data = data[WEST].copy()
    west_data[-1] = np.nan  # G359's last column unobserved: G001 fills it
    east_data = data[EAST].copy()
    east_data[1] += 2.0  # disagreement in the overlap: averaged
    east_data[2, 0, 0] = np.nan  # a blank in one tile only: the other tile's value is kept
    west = write_fits_cube(tmp_path / "w.fits", west_data, LON[WEST], LAT, VEL)
    east = write_fits_cube(tmp_path / "e.fits", east_data, LON[EAST], LAT, VEL)
    cube = open_cube([west, east]).values
    np.testing.assert_array_equal(cube[13], data[13])
    np.testing.assert_array_equal(cube[11], data[11] + 1.0)
    assert cube[12, 0, 0] == data[12, 0, 0]
    np.testing.assert_array_equal(cube[:10], data[:10])
    np.testing.assert_array_equal(cube[14:], data[14:])


def test_gap_between_tiles_is_nan(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west = write_fits_cube(tmp_path / "w.fits", data[:8], LON[:8], LAT, VEL)
    east = write_fits_cube(tmp_path / "e.fits", data[12:], LON[12:], LAT, VEL)
    cube = open_cube([west, east])
    assert cube.sizes["lon"] == 24
    assert np.isnan(cube.values[8:12]).all()
    np.testing.assert_array_equal(cube.values[12:], data[12:])


def test_velocity_ranges_are_joined(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west = write_fits_cube(tmp_path / "w.fits", data[WEST, :, :6], LON[WEST], LAT, VEL[:6])
    east = write_fits_cube(tmp_path / "e.fits", data[EAST, :, 2:], LON[EAST], LAT, VEL[2:])
    cube = open_cube([west, east])
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    np.testing.assert_array_equal(cube.values[:10, :, :6], data[:10, :, :6])
    assert np.isnan(cube.values[:10, :, 6:]).all()
    np.testing.assert_array_equal(cube.values[14:, :, 2:], data[14:, :, 2:])
    np.testing.assert_array_equal(cube.values[10:14], data[10:14])  # overlap: both tiles agree


def test_mosaic_of_dataarrays_and_blank_tile(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west, east = write_tiles(tmp_path, data)
    tiles = [open_cube(east), open_cube(west)]
    np.testing.assert_array_equal(mosaic(tiles).values, data)
    blank = write_fits_cube(tmp_path / "blank.fits", np.full((14, 4, 8), np.nan), LON[EAST], LAT, VEL)
    with pytest.raises(ValueError, match="blank.fits has no finite values"):
        open_cube([west, blank])


def test_tiles_in_different_units_are_converted_first(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west, east = write_tiles(tmp_path, data, east_data=data[EAST] * 1000.0, bunit="mK")
    cube = open_cube([west, east])
    np.testing.assert_allclose(cube.values, data, rtol=1e-6)
    assert cube.attrs["original_units"] == "K, mK"


def smooth(lon, lat, vel):
    lon, lat, vel = np.meshgrid(lon, lat, vel, indexing="ij")
    return (3.0 + np.sin(lon) + 0.5 * lat + 1e-3 * vel).astype(np.float32)


def test_misaligned_tile_is_interpolated_with_warning(tmp_path):
    shifted = LON[EAST] + 0.5 * (LON[1] - LON[0])
    west = write_fits_cube(tmp_path / "w.fits", smooth(LON[WEST], LAT, VEL), LON[WEST], LAT, VEL)
    east = write_fits_cube(tmp_path / "e.fits", smooth(shifted, LAT, VEL), shifted, LAT, VEL)
    with pytest.warns(UserWarning, match="not on the pixel grid"):
        cube = open_cube([west, east])
    np.testing.assert_allclose(np.diff(cube.lon.values), LON[1] - LON[0], rtol=1e-9)
    np.testing.assert_allclose(cube.lon.values, LON[: cube.sizes["lon"]], atol=1e-9)
    truth = smooth(cube.lon.values, LAT, VEL)
    finite = np.isfinite(cube.values)
    assert finite[:23].all()  # the shifted tile covers up to l = 1.5 + half a pixel
    np.testing.assert_allclose(cube.values[finite], truth[finite], atol=2e-3)


def test_different_velocity_axes_are_resampled(tmp_path):
    fine = pixel_centres(-200.0, 200.0, 16)
    west = write_fits_cube(tmp_path / "w.fits", smooth(LON[WEST], LAT, VEL), LON[WEST], LAT, VEL)
    east = write_fits_cube(tmp_path / "e.fits", smooth(LON[EAST], LAT, fine), LON[EAST], LAT, fine)
    with pytest.warns(UserWarning, match="not on the pixel grid"):
        cube = open_cube([west, east])
    np.testing.assert_allclose(cube.velocity.values, VEL)
    np.testing.assert_allclose(cube.values, smooth(LON, LAT, VEL), rtol=1e-5)


def test_tiles_of_different_lines_or_frequencies(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west, east = write_tiles(tmp_path, data, line="C18O(2-1)")
    with pytest.raises(ValueError, match="different lines"):
        open_cube([west, east])
    west, east = write_tiles(tmp_path, data, line=None, rest_frequency=219.5603541)
    with pytest.raises(ValueError, match="different rest frequencies"):
        open_cube([west, east])


def test_line_names_are_compared_loosely(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    west, east = write_tiles(tmp_path, data, line="13co 2-1")
    np.testing.assert_array_equal(open_cube([west, east]).values, data)


def test_tile_narrower_than_a_channel_is_averaged_into_one(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    step = VEL[1] - VEL[0]
    wide = VEL[1] + np.array([-0.375, 0.375]) * step  # two channels 0.75 pixel wide, around VEL[1]
    west = write_fits_cube(tmp_path / "w.fits", data[WEST], LON[WEST], LAT, VEL)
    east = write_fits_cube(tmp_path / "e.fits", data[EAST, :, :2], LON[EAST], LAT, wide)
    with pytest.warns(UserWarning, match="not on the pixel grid"):
        cube = open_cube([west, east])
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    only_east = cube.values[14:]  # columns that only the narrow tile covers
    np.testing.assert_allclose(only_east[:, :, 1], data[EAST, :, :2][4:].mean(axis=2), rtol=1e-6)
    assert np.isnan(np.delete(only_east, 1, axis=2)).all()


def test_tiles_that_cannot_be_put_on_the_grid_say_why(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    step = LON[1] - LON[0]
    west = write_fits_cube(tmp_path / "w.fits", data[WEST], LON[WEST], LAT, VEL)
    between = LON[2] + np.array([0.2, 0.5]) * step  # two fine pixels between two centres of the grid
    narrow = write_fits_cube(tmp_path / "n.fits", data[:2], between, LAT, VEL)
    with pytest.warns(UserWarning, match="not on the pixel grid"), pytest.raises(ValueError, match="covers no lon"):
        open_cube([west, narrow])
    shifted = LON[EAST] + 0.3 * step  # off the grid in lon, so lon and lat are interpolated ...
    single = write_fits_cube(tmp_path / "s.fits", data[EAST, :1], shifted, LAT[:1], VEL)  # ... from one lat row
    with pytest.warns(UserWarning, match="not on the pixel grid"), pytest.raises(ValueError, match="single lat pixel"):
        open_cube([west, single])


def test_mosaic_rejects_non_kelvin_tiles():
    tile = xr.DataArray(np.ones((2, 2, 2)), dims=("lon", "lat", "velocity"), attrs={"units": "mK"})
    with pytest.raises(ValueError, match="convert every tile to K"):
        mosaic([tile])


# ------------------------------------------------------------------------- velocity resampling


def spectrum_cube(velocity, values):
    return xr.DataArray(
        np.asarray(values, dtype=np.float64)[None, None, :],
        dims=("lon", "lat", "velocity"),
        coords={"velocity": ("velocity", velocity, {"units": "km/s"})},
        attrs={"units": "K"},
    )


def test_resample_velocity_conserves_the_line_integral():
    fine = np.linspace(-100.0, 100.0, 401)  # 0.5 km/s channels
    line = 4.0 * np.exp(-0.5 * ((fine - 12.0) / 7.0) ** 2)
    coarse = np.arange(-98.0, 99.0, 4.0)  # 4 km/s channels, edges -100 .. 100
    out = resample_velocity(spectrum_cube(fine, line), coarse)
    assert out.dims == ("lon", "lat", "velocity") and out.sizes["velocity"] == coarse.size
    np.testing.assert_allclose(out.values.sum() * 4.0, line.sum() * 0.5, rtol=1e-6)
    assert abs(coarse[np.argmax(out.values[0, 0])] - 12.0) <= 2.0
    constant = resample_velocity(spectrum_cube(fine, np.full(fine.size, 2.5)), coarse)
    np.testing.assert_allclose(constant.values, 2.5)


def test_resample_velocity_handles_blanks_and_edges():
    velocity = np.arange(0.0, 10.0)  # 1 km/s channels, edges -0.5 .. 9.5
    values = np.arange(10.0)
    values[4:6] = np.nan
    out = resample_velocity(spectrum_cube(velocity, values), np.array([0.5, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5]))
    result = out.values[0, 0]
    np.testing.assert_allclose(result[:2], [0.5, 2.5])
    assert np.isnan(result[2])  # both channels blank
    np.testing.assert_allclose(result[3:5], [6.5, 8.5])
    assert np.isnan(result[5:]).all()  # beyond the input axis
    half = resample_velocity(spectrum_cube(velocity, values), np.array([8.5, 9.5])).values[0, 0]
    np.testing.assert_allclose(half, [8.5, 9.0])  # [9, 10] is half covered by channel 9: kept
    quarter = resample_velocity(spectrum_cube(velocity, values), np.array([8.75, 9.75])).values[0, 0]
    assert quarter[0] == pytest.approx(8 * 0.25 + 9 * 0.75)
    assert np.isnan(quarter[1])  # [9.25, 10.25] is only a quarter covered: blank
    with pytest.raises(ValueError, match="ascending"):
        resample_velocity(spectrum_cube(velocity, values), velocity[::-1])
