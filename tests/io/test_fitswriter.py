"""write_fits_cube: survey-style FITS files that open_cube reads back exactly."""

import numpy as np
import pytest
from astropy.io import fits

import iris_nb
from iris_nb.grids import SMALL, Axis
from iris_nb.io.fitswriter import write_fits_cube
from iris_nb.quickstart import toy_cmz_cube
from iris_nb.units import brightness_scale

GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 48), lat=Axis(-0.4, 0.4, 10), velocity=Axis(-210, 210, 56))


@pytest.fixture(scope="module")
def cube():
    data, _ = toy_cmz_cube(GRID, seed=1, n_clouds=10)
    data = data.copy()
    data[:3, 7:, :] = np.nan  # an unobserved corner
    return data


def assert_same_cube(read, cube, rtol=1e-6):
    assert read.dims == ("lon", "lat", "velocity") and read.shape == cube.shape
    for name in ("lon", "lat", "velocity"):
        np.testing.assert_allclose(read[name].values, cube[name].values, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(read.values), np.isnan(cube.values))
    np.testing.assert_allclose(read.values, cube.values, rtol=rtol, atol=rtol * float(np.nanmax(cube.values)))


def test_survey_conventions_in_header_and_round_trip(tmp_path, cube):
    path = write_fits_cube(cube, tmp_path / "cube.fits")
    header = fits.getheader(path)
    data = fits.getdata(path)
    assert data.shape == (56, 10, 48) and data.dtype == np.dtype(">f4")  # (velocity, lat, lon)
    assert header["CTYPE1"] == "GLON-CAR" and header["CDELT1"] < 0
    assert 0 <= header["CRVAL1"] < 360 and header["CTYPE3"] == "VRAD"
    assert header["CUNIT3"].strip() in ("m s-1", "m/s") and header["CDELT3"] == pytest.approx(7500.0)
    assert header["BUNIT"] == "K" and header["BMAJ"] == pytest.approx(30 / 3600)
    assert header["RESTFRQ"] == pytest.approx(220.3986842e9) and header["LINE"] == "13CO(2-1)"
    # the first x pixel is the largest longitude, the last channel the largest velocity
    np.testing.assert_array_equal(data[-1, :, 0], cube.values[-1, :, -1])
    read = iris_nb.open_cube(path)
    assert_same_cube(read, cube)
    assert read.attrs["units"] == "K" and read.attrs["beam_fwhm"] == pytest.approx(30.0)


def test_two_tiles_across_l0_in_k_and_jy_per_beam(tmp_path, cube):
    west = write_fits_cube(cube.sel(lon=slice(-1.5, 0)), tmp_path / "G359_13CO21_Tmb_DR1.fits")
    east = write_fits_cube(cube.sel(lon=slice(0, 1.5)), tmp_path / "G001_13CO21_Tmb_DR1.fits", units="Jy/beam")
    assert fits.getheader(west)["CRVAL1"] > 358  # 0..360 convention: l < 0 written as 359.x
    assert fits.getheader(east)["BUNIT"] == "Jy/beam"
    k_per_jy = brightness_scale("Jy/beam", 220.3986842, 30.0)
    stored = fits.getdata(east)[:, :, ::-1].transpose(2, 1, 0)  # back to (lon, lat, velocity)
    np.testing.assert_allclose(stored * k_per_jy, cube.sel(lon=slice(0, 1.5)).values, rtol=1e-5, atol=1e-6)

    mosaic = iris_nb.open_cube([west, east])
    assert_same_cube(mosaic, cube, rtol=1e-5)
    assert np.all(np.diff(mosaic.lon.values) > 0)  # no duplicated or missing column at l = 0
    assert mosaic.attrs["original_units"] == "K, Jy/beam"


@pytest.mark.parametrize(
    "options",
    [
        {"lon_360": False, "lon_descending": False, "velocity_unit": "km/s"},
        {"spectral": "VELO-LSR", "units": "mK"},
        {"spectral": "FREQ", "dtype": "float64"},
    ],
)
def test_variants_read_back(tmp_path, cube, options):
    path = write_fits_cube(cube, tmp_path / "variant.fits", **options)
    header = fits.getheader(path)
    if options.get("lon_descending") is False:
        assert header["CDELT1"] > 0 and header["CRVAL1"] < 0
    if options.get("units") == "mK":
        assert header["BUNIT"] == "mK"
        assert np.nanmax(fits.getdata(path)) == pytest.approx(1000 * float(np.nanmax(cube.values)), rel=1e-6)
    if options.get("spectral") == "FREQ":
        assert header["CTYPE3"] == "FREQ" and header["CDELT3"] < 0
    assert_same_cube(iris_nb.open_cube(path), cube, rtol=1e-5)


def test_overwrite_and_extra_header(tmp_path, cube):
    path = tmp_path / "cube.fits"
    write_fits_cube(cube, path)
    with pytest.raises(ValueError, match="overwrite=True"):
        write_fits_cube(cube, path)
    write_fits_cube(cube * 2, path, overwrite=True, extra_header={"TELESCOP": "APEX"})
    assert fits.getheader(path)["TELESCOP"] == "APEX"
    assert np.nanmax(fits.getdata(path)) == pytest.approx(2 * float(np.nanmax(cube.values)))


def test_bad_input_is_rejected_before_writing(tmp_path, cube):
    target = tmp_path / "x.fits"
    with pytest.raises(TypeError, match="DataArray"):
        write_fits_cube(cube.values, target)
    with pytest.raises(ValueError, match="isel"):
        write_fits_cube(cube.expand_dims(sample=2), target)
    with pytest.raises(ValueError, match="spectral"):
        write_fits_cube(cube, target, spectral="WAVE")
    with pytest.raises(ValueError, match="velocity_unit"):
        write_fits_cube(cube, target, velocity_unit="deg")
    with pytest.raises(ValueError, match="does not exist"):
        write_fits_cube(cube, tmp_path / "missing" / "x.fits")
    no_beam = cube.copy()
    no_beam.attrs = {k: v for k, v in cube.attrs.items() if k != "beam_fwhm"}
    with pytest.raises(ValueError, match="beam"):
        write_fits_cube(no_beam, target, units="Jy/beam")
    no_units = cube.copy()
    no_units.attrs = {k: v for k, v in cube.attrs.items() if k != "units"}
    with pytest.raises(ValueError, match="units"):
        write_fits_cube(no_units, target)
    uneven = cube.isel(lon=[0, 1, 3, 4])
    with pytest.raises(ValueError, match="evenly spaced"):
        write_fits_cube(uneven, target)
    assert not target.exists()
