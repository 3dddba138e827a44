"""Round trips between iris_nb cubes and spectral_cube.SpectralCube objects."""

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from spectral_cube import SpectralCube

from fitsmaker import REST_13CO21, pixel_centres, unique_cube, write_fits_cube
from iris_nb.io import from_spectral_cube, open_cube, to_spectral_cube

LON = pixel_centres(-0.6, 0.6, 12)
LAT = pixel_centres(-0.2, 0.2, 4)
VEL = pixel_centres(-100.0, 100.0, 10)


@pytest.fixture
def cube(tmp_path):
    data = unique_cube((LON.size, LAT.size, VEL.size))
    data[3, 1, 2] = np.nan
    path = write_fits_cube(tmp_path / "cube.fits", data, LON, LAT, VEL, beam_fwhm=(32.0, 27.0))
    return open_cube(path)


def test_to_spectral_cube_looks_like_a_survey_file(cube):
    sc = to_spectral_cube(cube)
    assert isinstance(sc, SpectralCube)
    assert sc.shape == (VEL.size, LAT.size, LON.size)
    assert sc.unit == u.K
    assert sc.wcs.wcs.cdelt[0] < 0  # longitude descending along x, as in FITS surveys
    np.testing.assert_allclose(sc.spectral_axis.to_value(u.km / u.s), VEL, atol=1e-9)
    assert sc.wcs.wcs.restfrq == pytest.approx(REST_13CO21 * 1e9)
    assert sc.beam.major.to_value(u.arcsec) == pytest.approx(32.0)
    assert sc.beam.minor.to_value(u.arcsec) == pytest.approx(27.0)
    world_lon = sc.world[0, 0, :][2].to_value(u.deg)  # (spectral, lat, lon) world: lon is last
    np.testing.assert_allclose(np.sort((world_lon + 180) % 360 - 180), LON, atol=1e-9)


def test_round_trip_through_spectral_cube(cube):
    back = from_spectral_cube(to_spectral_cube(cube))
    assert back.dims == cube.dims
    np.testing.assert_array_equal(back.values, cube.values)
    for name in ("lon", "lat", "velocity"):
        np.testing.assert_allclose(back[name].values, cube[name].values, atol=1e-9)
    for key in ("rest_frequency", "beam_fwhm", "beam_fwhm_minor"):
        assert back.attrs[key] == pytest.approx(cube.attrs[key])
    assert back.attrs["line"] == "13CO(2-1)"


def test_round_trip_through_a_written_file(cube, tmp_path):
    path = tmp_path / "written.fits"
    to_spectral_cube(cube.transpose("velocity", "lon", "lat")).write(path)
    again = open_cube(path)
    np.testing.assert_array_equal(again.values, cube.values)
    np.testing.assert_allclose(again.lon.values, cube.lon.values, atol=1e-9)
    np.testing.assert_allclose(again.velocity.values, cube.velocity.values, atol=1e-9)


def test_from_spectral_cube_applies_masks_and_units(cube):
    sc = to_spectral_cube(cube)
    masked = sc.with_mask(sc > 100 * u.K)
    out = from_spectral_cube(masked)
    expected = np.where(cube.values > 100, cube.values, np.nan)
    np.testing.assert_array_equal(out.values, expected)
    in_mk = from_spectral_cube(sc.to(u.mK))
    np.testing.assert_allclose(in_mk.values, cube.values, rtol=1e-6)
    assert in_mk.attrs["original_units"] == "mK"


def test_from_spectral_cube_with_frequency_axis(cube):
    sc = to_spectral_cube(cube).with_spectral_unit(u.GHz, velocity_convention="radio")
    out = from_spectral_cube(sc)
    np.testing.assert_allclose(out.velocity.values, VEL, atol=1e-6)
    np.testing.assert_array_equal(out.values, cube.values)


def test_conversion_errors(cube):
    with pytest.raises(TypeError, match="SpectralCube"):
        from_spectral_cube(cube)
    with pytest.raises(TypeError, match="DataArray"):
        to_spectral_cube(cube.values)
    with pytest.raises(ValueError, match="dims"):
        to_spectral_cube(cube.rename(lat="b"))
    irregular = cube.assign_coords(lon=cube.lon.values ** 3)
    with pytest.raises(ValueError, match="evenly spaced"):
        to_spectral_cube(irregular)


def test_varying_beams_convert_channel_by_channel():
    from radio_beam import Beams
    from spectral_cube import VaryingResolutionSpectralCube

    ones = xr.DataArray(
        np.ones((LON.size, LAT.size, VEL.size), dtype=np.float32),
        dims=("lon", "lat", "velocity"),
        coords={"lon": LON, "lat": LAT, "velocity": VEL},
        attrs={"units": "Jy/beam", "rest_frequency": REST_13CO21},
    )
    sc = to_spectral_cube(ones)
    majors = np.linspace(20.0, 40.0, VEL.size)  # one beam per channel
    beams = Beams(major=majors * u.arcsec, minor=majors * u.arcsec)
    varying = VaryingResolutionSpectralCube(data=sc.unmasked_data[:], wcs=sc.wcs, beams=beams)
    out = from_spectral_cube(varying)
    expected = 1.222e6 / (REST_13CO21**2 * majors**2)  # K per Jy/beam, channel by channel
    np.testing.assert_allclose(out.values[3, 2], expected, rtol=1e-3)
    assert out.attrs["beam_fwhm"] == pytest.approx(np.median(majors))
