"""HEALPix spectral maps onto Galactic lon/lat/velocity cubes."""

import astropy.units as u
import numpy as np
import pytest
from astropy_healpix import HEALPix

from iris_nb.grids import SMALL
from iris_nb.io import from_healpix

NSIDE = 512  # 0.11 deg pixels
LON = np.linspace(-1.4, 1.4, 15)
LAT = np.linspace(-0.35, 0.35, 6)


def sky_function(l_deg, b_deg):
    """A smooth brightness pattern around the Galactic Centre, K."""
    return 2.0 + np.exp(-0.5 * ((l_deg - 0.3) ** 2 / 0.8**2 + b_deg**2 / 0.5**2))


def healpix_map(frame="galactic", nested=False):
    """(npix,) samples of sky_function at the HEALPix pixel centres of ``frame``."""
    hp = HEALPix(nside=NSIDE, order="nested" if nested else "ring", frame=frame)
    coords = hp.healpix_to_skycoord(np.arange(hp.npix)).galactic
    return sky_function(coords.l.wrap_at(180 * u.deg).deg, coords.b.deg)


@pytest.fixture(scope="module")
def galactic_map():
    return healpix_map()


def test_smooth_map_matches_the_function(galactic_map):
    values = np.stack([galactic_map, 2 * galactic_map], axis=1)  # two channels
    cube = from_healpix(values, [-10.0, 10.0], lon=LON, lat=LAT, units="K", line="13CO(2-1)")
    assert cube.dims == ("lon", "lat", "velocity")
    assert cube.shape == (LON.size, LAT.size, 2)
    assert cube.dtype == np.float32
    truth = sky_function(LON[:, None], LAT[None, :])
    np.testing.assert_allclose(cube.values[:, :, 0], truth, atol=0.01)
    np.testing.assert_allclose(cube.values[:, :, 1], 2 * truth, atol=0.02)
    assert cube.attrs["units"] == "K" and cube.attrs["line"] == "13CO(2-1)"
    assert cube.velocity.attrs["units"] == "km/s"


def test_equatorial_nested_map_and_grid(galactic_map):
    icrs = healpix_map(frame="icrs", nested=True)
    cube = from_healpix(icrs * 1000.0, 5.0 * u.km / u.s, nested=True, frame="icrs", grid=SMALL, units="mK")
    np.testing.assert_allclose(cube.lon.values, SMALL.lon.centers())
    np.testing.assert_allclose(cube.lat.values, SMALL.lat.centers())
    truth = sky_function(SMALL.lon.centers()[:, None], SMALL.lat.centers()[None, :])
    np.testing.assert_allclose(cube.values[:, :, 0], truth, atol=0.01)


def test_descending_velocity_and_blanks(galactic_map):
    values = np.stack([galactic_map, galactic_map + 1.0], axis=1)
    nearest = HEALPix(nside=NSIDE, order="ring", frame="galactic").lonlat_to_healpix(0.0 * u.deg, 0.0 * u.deg)
    values[nearest, 1] = -1.6375e30  # healpy's UNSEEN
    cube = from_healpix(values, np.array([30.0, 10.0]) * 1000 * u.m / u.s, lon=LON, lat=LAT, units="K")
    np.testing.assert_allclose(cube.velocity.values, [10.0, 30.0])
    truth = sky_function(LON[:, None], LAT[None, :])
    np.testing.assert_allclose(cube.values[:, :, 1], truth, atol=0.01)  # the 30 km/s channel
    blank = np.isnan(cube.values[:, :, 0])
    assert blank.any() and blank.sum() <= 4
    i, j = np.argwhere(blank)[0]
    assert abs(LON[i]) < 0.25 and abs(LAT[j]) < 0.25


def test_healpix_errors(galactic_map):
    with pytest.raises(ValueError, match="12 \\* nside"):
        from_healpix(np.ones(1000), [0.0], lon=LON, lat=LAT, units="K")
    with pytest.raises(ValueError, match="nside=256 does not match"):
        from_healpix(galactic_map, [0.0], nside=256, lon=LON, lat=LAT, units="K")
    with pytest.raises(ValueError, match="velocity has 2 channels"):
        from_healpix(galactic_map, [0.0, 1.0], lon=LON, lat=LAT, units="K")
    with pytest.raises(ValueError, match="lon= and lat="):
        from_healpix(galactic_map, [0.0], units="K")
    with pytest.raises(ValueError, match="units="):
        from_healpix(galactic_map, [0.0], lon=LON, lat=LAT)
    with pytest.raises(ValueError, match="not both"):
        from_healpix(galactic_map, [0.0], lon=LON, lat=LAT, grid=SMALL, units="K")
    with pytest.raises(ValueError, match="no beam"):
        from_healpix(galactic_map, [0.0], lon=LON, lat=LAT, units="Jy/beam", rest_frequency=220.4)
