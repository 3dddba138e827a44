"""Reading single FITS cubes with iris_nb.io.open_cube: orientation, units, spectral axes, errors."""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from fitsmaker import C_KMS, REST_13CO21, pixel_centres, unique_cube, write_fits_cube
from iris_nb.io import open_cube

LON = pixel_centres(-1.5, 1.5, 12)
LAT = pixel_centres(-0.25, 0.25, 4)
VEL = pixel_centres(-200.0, 200.0, 8)


def smooth_cube():
    """A positive cube (lon, lat, velocity) in K on LON, LAT, VEL."""
    lon, lat, vel = np.meshgrid(LON, LAT, VEL, indexing="ij")
    return (5.0 + np.cos(lon) + lat + 0.01 * vel).astype(np.float32)


def test_galactic_tile_across_zero_comes_out_ascending(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    path = write_fits_cube(tmp_path / "cmz.fits", data, LON, LAT, VEL)
    header = fits.getheader(path)
    assert header["CDELT1"] < 0 and header["CRVAL1"] > 180  # survey habit: descending, 0..360
    cube = open_cube(path)
    assert cube.dims == ("lon", "lat", "velocity")
    assert cube.dtype == np.float32
    np.testing.assert_allclose(cube.lon.values, LON, atol=1e-9)
    np.testing.assert_allclose(cube.lat.values, LAT, atol=1e-9)
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    np.testing.assert_array_equal(cube.values, data)
    assert cube.attrs["units"] == "K"
    assert {cube[n].attrs["units"] for n in ("lon", "lat")} == {"deg"}
    assert cube.velocity.attrs["units"] == "km/s"
    assert cube.attrs["rest_frequency"] == pytest.approx(REST_13CO21)
    assert cube.attrs["beam_fwhm"] == pytest.approx(30.0)
    assert "beam_fwhm_minor" not in cube.attrs
    assert cube.attrs["line"] == "13CO(2-1)"
    assert cube.attrs["source"] == "cmz.fits"
    assert cube.attrs["original_units"] == "K"


def test_descending_velocity_and_km_per_s_axis(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    path = write_fits_cube(tmp_path / "vdesc.fits", data, LON, LAT, VEL, velocity_descending=True)
    assert fits.getheader(path)["CDELT3"] < 0
    cube = open_cube(path)
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    np.testing.assert_array_equal(cube.values, data)
    path = write_fits_cube(tmp_path / "kms.fits", data, LON, LAT, VEL, velocity_unit="km/s", lon_descending=False)
    cube = open_cube(path)
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    np.testing.assert_array_equal(cube.values, data)


def test_velo_lsr_axis_is_read_as_radio_velocity(tmp_path):
    data = smooth_cube()
    path = write_fits_cube(tmp_path / "velo.fits", data, LON, LAT, VEL, spectral="VELO-LSR")
    cube = open_cube(path)
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-9)
    np.testing.assert_array_equal(cube.values, data)


def test_optical_velocity_axis_is_converted_to_radio(tmp_path):
    data = smooth_cube()
    path = write_fits_cube(tmp_path / "vopt.fits", data, LON, LAT, VEL, spectral="VOPT")
    cube = open_cube(path)  # the axis values VEL are optical velocities here
    np.testing.assert_allclose(cube.velocity.values, VEL / (1.0 + VEL / C_KMS), atol=1e-6)
    np.testing.assert_array_equal(cube.values, data)


def test_millikelvin_and_dtype(tmp_path):
    data = smooth_cube()
    path = write_fits_cube(tmp_path / "mk.fits", data * 1000.0, LON, LAT, VEL, bunit="mK")
    cube = open_cube(path, dtype="float64")
    assert cube.dtype == np.float64
    np.testing.assert_allclose(cube.values, data, rtol=1e-6)
    assert cube.attrs["units"] == "K" and cube.attrs["original_units"] == "mK"


def test_jansky_per_beam_uses_header_beam(tmp_path):
    data = smooth_cube()
    bmaj, bmin = 28.0, 22.0
    path = write_fits_cube(tmp_path / "jy.fits", data, LON, LAT, VEL, bunit="Jy/beam", beam_fwhm=(bmaj, bmin))
    cube = open_cube(path)
    expected = 1.222e6 / (REST_13CO21**2 * bmaj * bmin)  # K per Jy/beam, nu in GHz, beam in arcsec
    np.testing.assert_allclose(cube.values / data, expected, rtol=1e-3)
    assert cube.attrs["beam_fwhm"] == pytest.approx(bmaj)
    assert cube.attrs["beam_fwhm_minor"] == pytest.approx(bmin)
    override = open_cube(path, beam_fwhm=2 * bmaj)
    np.testing.assert_allclose(override.values / data, 1.222e6 / (REST_13CO21**2 * 4 * bmaj**2), rtol=1e-3)


def test_nan_blanks_stay_nan(tmp_path):
    data = smooth_cube()
    data[0, :, :] = np.nan  # an unobserved edge column
    data[5, 2, 3] = np.nan
    cube = open_cube(write_fits_cube(tmp_path / "blank.fits", data, LON, LAT, VEL))
    np.testing.assert_array_equal(np.isnan(cube.values), np.isnan(data))
    np.testing.assert_array_equal(cube.values[~np.isnan(data)], data[~np.isnan(data)])


@pytest.mark.parametrize("keyword", ["RESTFRQ", "RESTFREQ"])
def test_frequency_axis_converted_with_radio_formula(tmp_path, keyword):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    path = write_fits_cube(tmp_path / "freq.fits", data, LON, LAT, VEL, spectral="FREQ", rest_keyword=keyword)
    header = fits.getheader(path)
    freqs = header["CRVAL3"] + header["CDELT3"] * (np.arange(VEL.size) + 1 - header["CRPIX3"])
    cube = open_cube(path)
    expected = C_KMS * (1.0 - freqs / (REST_13CO21 * 1e9))  # ascending because freqs descend
    np.testing.assert_allclose(cube.velocity.values, expected, atol=1e-6)
    np.testing.assert_array_equal(cube.values, data)


def test_frequency_axis_without_rest_frequency(tmp_path):
    data = smooth_cube()
    rest = 230.538
    path = write_fits_cube(tmp_path / "norest.fits", data, LON, LAT, VEL, spectral="FREQ", rest_frequency=rest)
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["RESTFRQ"]
    with pytest.raises(ValueError, match="rest_frequency="):
        open_cube(path)
    cube = open_cube(path, rest_frequency=rest)
    np.testing.assert_allclose(cube.velocity.values, VEL, atol=1e-6)
    assert cube.attrs["rest_frequency"] == rest


def test_stokes_axis_is_dropped(tmp_path):
    data = smooth_cube()
    cube = open_cube(write_fits_cube(tmp_path / "stokes.fits", data, LON, LAT, VEL, stokes=True))
    assert cube.shape == data.shape
    np.testing.assert_array_equal(cube.values, data)


def _gaussian_sky(path, ra0, dec0, sigma, lon, lat, vel):
    """Rewrite ``path`` with a Gaussian source at (ra0, dec0) deg evaluated on its true pixel positions."""
    ra, dec = WCS(fits.getheader(path)).celestial.pixel_to_world_values(
        *np.meshgrid(np.arange(lon.size), np.arange(lat.size), indexing="ij")
    )
    pixels = SkyCoord(ra * u.deg, dec * u.deg)
    sep = pixels.separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg  # (lon, lat) in file x order
    image = np.exp(-0.5 * (sep / sigma) ** 2)[::-1]  # file x is RA descending
    return image[:, :, None] * np.ones(vel.size, dtype=np.float32)


def test_equatorial_cube_reprojected_to_galactic(tmp_path):
    ra = pixel_centres(266.2, 266.6, 40)
    dec = pixel_centres(-29.2, -28.8, 40)
    vel = pixel_centres(-50.0, 50.0, 3)
    ra0, dec0 = 266.45, -28.95
    kwargs = dict(frame="icrs", projection="TAN", line=None)
    path = write_fits_cube(tmp_path / "radec.fits", np.zeros((40, 40, 3)), ra, dec, vel, **kwargs)
    data = _gaussian_sky(path, ra0, dec0, 0.04, ra, dec, vel)
    path = write_fits_cube(tmp_path / "radec.fits", data, ra, dec, vel, **kwargs)
    cube = open_cube(path)
    assert cube.dims == ("lon", "lat", "velocity")
    assert np.all(np.diff(cube.lon.values) > 0) and np.all(np.diff(cube.lat.values) > 0)
    step = cube.lon.values[1] - cube.lon.values[0]
    assert step == pytest.approx(0.01, rel=1e-3)
    image = cube.isel(velocity=1).values
    assert np.isnan(image).any()  # the rotated footprint leaves blank corners
    i, j = np.unravel_index(np.nanargmax(image), image.shape)
    truth = SkyCoord(ra0 * u.deg, dec0 * u.deg, frame="icrs").galactic
    assert abs(cube.lon.values[i] - truth.l.wrap_at(180 * u.deg).deg) <= step
    assert abs(cube.lat.values[j] - truth.b.deg) <= step
    assert np.nanmax(image) == pytest.approx(1.0, abs=0.03)
    weight = np.nan_to_num(image)
    lon_c = (weight.sum(axis=1) * cube.lon.values).sum() / weight.sum()
    lat_c = (weight.sum(axis=0) * cube.lat.values).sum() / weight.sum()
    assert abs(lon_c - truth.l.wrap_at(180 * u.deg).deg) < 0.1 * step
    assert abs(lat_c - truth.b.deg) < 0.1 * step


def test_car_reference_off_the_equator_is_read_without_resampling(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    d_lat = LAT[1] - LAT[0]
    shifted = {"CRVAL2": 0.1, "CRPIX2": 1.0 - (LAT[0] - 0.1) / d_lat}  # same pixels, reference at b = 0.1
    cube = open_cube(write_fits_cube(tmp_path / "off.fits", data, LON, LAT, VEL, extra_header=shifted))
    np.testing.assert_array_equal(cube.values, data)
    np.testing.assert_allclose(cube.lat.values, LAT, atol=0.05 * d_lat)


def test_galactic_tan_projection_is_read(tmp_path):
    data = smooth_cube()
    cube = open_cube(write_fits_cube(tmp_path / "tan.fits", data, LON, LAT, VEL, projection="TAN"))
    assert np.all(np.diff(cube.lon.values) > 0)
    assert np.isfinite(cube.values).mean() > 0.5


# ------------------------------------------------------------------------------------ errors


def test_missing_and_non_fits_files(tmp_path):
    with pytest.raises(ValueError, match="no file at"):
        open_cube(tmp_path / "nothing.fits")
    text = tmp_path / "notes.fits"
    text.write_text("these are not the pixels you are looking for\n" * 50)
    with pytest.raises(ValueError, match="not a FITS file"):
        open_cube(text)
    with pytest.raises(TypeError, match="path"):
        open_cube(42)
    with pytest.raises(ValueError, match="empty list"):
        open_cube([])


def test_two_dimensional_image_is_rejected(tmp_path):
    path = tmp_path / "image.fits"
    header = fits.Header({"CTYPE1": "GLON-CAR", "CTYPE2": "GLAT-CAR", "BUNIT": "K"})
    fits.PrimaryHDU(np.ones((4, 5), dtype=np.float32), header).writeto(path)
    with pytest.raises(ValueError, match="2-D image"):
        open_cube(path)


def test_cube_without_spectral_axis(tmp_path):
    path = write_fits_cube(tmp_path / "nospec.fits", smooth_cube(), LON, LAT, VEL, extra_header={"CTYPE3": "LINEAR"})
    with pytest.raises(ValueError, match="no spectral axis"):
        open_cube(path)


@pytest.mark.parametrize("cunit", ["bananas", "Hz"])
def test_unknown_spectral_unit(tmp_path, cunit):
    path = write_fits_cube(tmp_path / "unit.fits", smooth_cube(), LON, LAT, VEL, extra_header={"CUNIT3": cunit})
    with pytest.raises(ValueError, match="unknown spectral unit"):
        open_cube(path)


def test_missing_bunit_needs_units(tmp_path):
    data = smooth_cube()
    path = write_fits_cube(tmp_path / "nounit.fits", data, LON, LAT, VEL, bunit=None)
    with pytest.raises(ValueError, match="units="):
        open_cube(path)
    cube = open_cube(path, units="mK")
    np.testing.assert_allclose(cube.values, data * 1e-3, rtol=1e-6)


def test_jansky_without_beam(tmp_path):
    data = smooth_cube()
    path = write_fits_cube(tmp_path / "nobeam.fits", data, LON, LAT, VEL, bunit="Jy/beam", beam_fwhm=None)
    with pytest.raises(ValueError, match="beam"):
        open_cube(path)
    cube = open_cube(path, beam_fwhm=30.0)
    np.testing.assert_allclose(cube.values / data, 1.222e6 / (REST_13CO21**2 * 900.0), rtol=1e-3)


def test_all_nan_cube(tmp_path):
    path = write_fits_cube(tmp_path / "empty.fits", np.full((12, 4, 8), np.nan), LON, LAT, VEL)
    with pytest.raises(ValueError, match="cube empty.fits has no finite values"):
        open_cube(path)


def test_bad_dtype(tmp_path):
    path = write_fits_cube(tmp_path / "ok.fits", smooth_cube(), LON, LAT, VEL)
    with pytest.raises(TypeError, match="float"):
        open_cube(path, dtype="int16")


def test_rest_frequency_in_hz_is_caught(tmp_path):
    path = write_fits_cube(tmp_path / "ok.fits", smooth_cube(), LON, LAT, VEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="GHz"):
            open_cube(path, rest_frequency=220.3986842e9)
