"""The sky part of a cube: from a celestial WCS to Galactic ``lon``/``lat`` pixel centres.

A cube whose celestial axes already form a rectilinear Galactic grid (GLON/GLAT with a
projection such as CAR whose pixel rows are lines of constant latitude) is read as it is.
Any other cube (RA/Dec in ICRS, FK5 or FK4, or a Galactic projection whose rows are not
lines of constant latitude) is reprojected onto a Galactic plate carree (CAR) grid with the
smallest pixel size of the input, using bilinear interpolation (``reproject.reproject_interp``).
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

from ..conventions import wrap_lon

RECTILINEAR_TOLERANCE = 0.05
"""Largest departure (pixels) of a Galactic grid from rows/columns of constant lat/lon still read directly."""

__all__ = ["GalacticAxes", "galactic_axes", "reproject_block"]


class GalacticAxes:
    """Where each output (lon, lat) pixel comes from.

    Attributes: ``lon`` (n_lon,) and ``lat`` (n_lat,) ascending pixel centres in deg;
    ``flip_lon``/``flip_lat`` tell whether the input pixel order must be reversed (direct
    case); ``target`` is the Galactic CAR WCS to reproject onto, ``None`` when the input grid
    is used directly; ``source`` is the input celestial WCS.
    """

    def __init__(self, lon, lat, flip_lon=False, flip_lat=False, target=None, source=None):
        self.lon = np.asarray(lon, dtype=float)
        self.lat = np.asarray(lat, dtype=float)
        self.flip_lon = flip_lon
        self.flip_lat = flip_lat
        self.target = target
        self.source = source

    @property
    def reprojected(self) -> bool:
        """True when the data must be interpolated onto :attr:`target`."""
        return self.target is not None


def _unwrapped_lon(lon_deg, reference_deg, what: str) -> np.ndarray:
    """Longitudes (deg) continuous around ``reference``, wrapped to (-180, 180]."""
    ref = float(wrap_lon(reference_deg))
    lon = ref + wrap_lon(np.asarray(lon_deg) - ref)
    finite = lon[np.isfinite(lon)]
    if finite.size and (finite.max() > 180.0 or finite.min() <= -180.0):
        raise ValueError(
            f"{what} straddles Galactic longitude 180 deg, which the (-180, 180] convention "
            "cannot hold contiguously; cut the cube into two parts first"
        )
    return lon


def _pixel_world(celestial: WCS, ny: int, nx: int):
    """World coordinates (deg) of every pixel centre, two arrays of shape (ny, nx)."""
    y, x = np.mgrid[0:ny, 0:nx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        world = celestial.all_pix2world(x.astype(float), y.astype(float), 0)
    lon, lat = world[celestial.wcs.lng], world[celestial.wcs.lat]  # WCS axes may be (lat, lon)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def galactic_axes(celestial: WCS, ny: int, nx: int, what: str) -> GalacticAxes:
    """Galactic pixel centres for an image of shape (ny, nx) with WCS ``celestial``.

    Returns a :class:`GalacticAxes`; the direct case when the input is a rectilinear
    Galactic grid (every pixel within 0.05 pixel of its row's latitude and its column's
    longitude), else a CAR target for reprojection.
    """
    ctypes = [c.upper() for c in celestial.wcs.ctype]
    lon2d, lat2d = _pixel_world(celestial, ny, nx)
    if not (np.isfinite(lon2d).all() and np.isfinite(lat2d).all()):
        raise ValueError(f"{what} has pixels outside its sky projection ({ctypes}); check the WCS")
    if ctypes[0].startswith("GLON") and ctypes[1].startswith("GLAT"):
        lon2d = _unwrapped_lon(lon2d, lon2d[ny // 2, nx // 2], what)
        lon = lon2d.mean(axis=0)
        lat = lat2d.mean(axis=1)
        dx = abs(lon[-1] - lon[0]) / max(nx - 1, 1) or 1.0
        dy = abs(lat[-1] - lat[0]) / max(ny - 1, 1) or 1.0
        rectilinear = (
            np.max(np.abs(lon2d - lon[None, :])) < RECTILINEAR_TOLERANCE * dx
            and np.max(np.abs(lat2d - lat[:, None])) < RECTILINEAR_TOLERANCE * dy
            and _monotonic(lon)
            and _monotonic(lat)
        )
        if rectilinear:
            flip_lon = nx > 1 and lon[-1] < lon[0]
            flip_lat = ny > 1 and lat[-1] < lat[0]
            lon = lon[::-1] if flip_lon else lon
            lat = lat[::-1] if flip_lat else lat
            return GalacticAxes(lon, lat, flip_lon, flip_lat, source=celestial)
    return _car_target(celestial, lon2d, lat2d, what)


def _monotonic(values) -> bool:
    steps = np.diff(values)
    return bool(values.size < 2 or np.all(steps > 0) or np.all(steps < 0))


def _car_target(celestial: WCS, lon2d, lat2d, what: str) -> GalacticAxes:
    """A Galactic CAR grid covering the input footprint at the input's finest pixel size."""
    try:
        frame = wcs_to_celestial_frame(celestial)
    except ValueError as err:
        raise ValueError(f"{what}: cannot tell the sky frame of the cube ({err}); add RADESYS/EQUINOX") from None
    galactic = SkyCoord(lon2d.ravel(), lat2d.ravel(), unit="deg", frame=frame).galactic
    gal_l = galactic.l.deg
    gal_b = galactic.b.deg
    centre = gal_l[gal_l.size // 2]
    gal_l = _unwrapped_lon(gal_l, centre, what)
    pixel = float(np.min(proj_plane_pixel_scales(celestial)))
    n_lon = int(np.ceil((gal_l.max() - gal_l.min()) / pixel - 1e-6)) + 1
    n_lat = int(np.ceil((gal_b.max() - gal_b.min()) / pixel - 1e-6)) + 1
    lon0 = 0.5 * (gal_l.max() + gal_l.min()) - 0.5 * (n_lon - 1) * pixel
    lat0 = 0.5 * (gal_b.max() + gal_b.min()) - 0.5 * (n_lat - 1) * pixel
    lon = lon0 + pixel * np.arange(n_lon)
    lat = lat0 + pixel * np.arange(n_lat)
    _unwrapped_lon(lon, centre, what)
    target = WCS(naxis=2)
    target.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    target.wcs.cunit = ["deg", "deg"]
    target.wcs.cdelt = [pixel, pixel]
    # CRVAL2 = 0 keeps plate carree pixel rows on lines of constant latitude.
    target.wcs.crval = [float(wrap_lon(lon0)) % 360.0, 0.0]
    target.wcs.crpix = [1.0, 1.0 - lat0 / pixel]
    target.wcs.set()
    return GalacticAxes(lon, lat, target=target, source=celestial)


def reproject_block(block, axes: GalacticAxes) -> np.ndarray:
    """Bilinear reprojection of channels ``block`` (n, ny, nx) onto ``axes.target``.

    Returns (n, n_lat, n_lon) float64 with NaN outside the input footprint or next to blanks.
    """
    from reproject import reproject_interp

    return reproject_interp(
        (block, axes.source),
        axes.target,
        shape_out=(axes.lat.size, axes.lon.size),
        order="bilinear",
        return_footprint=False,
    )
