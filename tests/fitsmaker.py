"""Write realistic FITS spectral-line cubes for tests.

``write_fits_cube`` takes data in the package's order ``(lon, lat, velocity)`` on ascending
coordinates and writes them the way surveys do: numpy order (velocity, lat, lon), longitude
descending along x (CDELT1 < 0) in the 0..360 convention, velocity in m/s, BUNIT, BMAJ/BMIN,
RESTFRQ, LINE. Options produce the variants that readers must cope with (frequency axes,
descending velocity, RA/Dec, tiles straddling l = 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

C_KMS = 299792.458
REST_13CO21 = 220.3986842  # GHz


def _step(values, name):
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return 1.0
    step = (values[-1] - values[0]) / (values.size - 1)
    if step <= 0 or not np.allclose(np.diff(values), step, rtol=1e-6, atol=0):
        raise ValueError(f"{name} must be evenly spaced and ascending")
    return step


def write_fits_cube(
    path,
    data,
    lon,
    lat,
    velocity,
    *,
    bunit="K",
    beam_fwhm=30.0,
    rest_frequency=REST_13CO21,
    rest_keyword="RESTFRQ",
    line="13CO(2-1)",
    spectral="VRAD",
    velocity_unit="m/s",
    velocity_descending=False,
    lon_descending=True,
    lon_360=True,
    frame="galactic",
    projection="CAR",
    stokes=False,
    extra_header=None,
) -> Path:
    """Write ``data`` as a FITS cube and return its path.

    Parameters
    ----------
    data:
        Array of shape (lon, lat, velocity), written as float32 in ``bunit``.
    lon, lat:
        Ascending, evenly spaced pixel centres in deg (RA and Dec when ``frame="icrs"``).
        With ``projection="CAR"`` the latitude reference is the equator (CRVAL2 = 0), so the
        pixels sit exactly on these centres; other projections put the reference pixel in
        the middle of the image.
    velocity:
        Ascending, evenly spaced channel centres, km/s (radio convention).
    bunit:
        BUNIT string, or ``None`` to leave it out.
    beam_fwhm:
        Beam FWHM in arcsec, a ``(major, minor)`` pair, or ``None`` for no BMAJ/BMIN.
    rest_frequency, rest_keyword:
        Rest frequency in GHz (``None``: not written) and the keyword (RESTFRQ or RESTFREQ).
    line:
        Value of the LINE keyword (``None``: not written).
    spectral:
        "VRAD", "VELO-LSR", "VOPT" (velocity axes in ``velocity_unit``) or "FREQ" (Hz,
        ``f = f0 (1 - v / c)``, needs ``rest_frequency``).
    velocity_descending:
        Write channels in decreasing velocity (CDELT3 < 0 for velocity axes).
    lon_descending, lon_360:
        Longitude decreasing along x (CDELT1 < 0) and CRVAL1 in 0..360.
    frame, projection:
        "galactic" (GLON/GLAT) or "icrs" (RA/DEC, RADESYS ICRS); FITS projection code.
    stokes:
        Add a fourth, single-plane STOKES axis (as CASA writes cubes).
    extra_header:
        Further keywords to set (a dict), applied last.
    """
    data = np.asarray(data, dtype=np.float32)
    lon, lat, velocity = (np.asarray(a, dtype=float) for a in (lon, lat, velocity))
    if data.shape != (lon.size, lat.size, velocity.size):
        raise ValueError(f"data shape {data.shape} != (lon, lat, velocity) sizes {(lon.size, lat.size, velocity.size)}")
    d_lon, d_lat, d_v = _step(lon, "lon"), _step(lat, "lat"), _step(velocity, "velocity")

    cube = data.transpose(2, 1, 0)  # (velocity, lat, lon)
    if lon_descending:
        cube = cube[:, :, ::-1]
    if velocity_descending:
        cube = cube[::-1]
    file_lon = lon[::-1] if lon_descending else lon
    file_v = velocity[::-1] if velocity_descending else velocity

    header = fits.Header()
    sky = ("GLON", "GLAT") if frame == "galactic" else ("RA--", "DEC-")
    header["CTYPE1"] = f"{sky[0]}-{projection}"
    header["CTYPE2"] = f"{sky[1]}-{projection}"
    centre_x = lon.size // 2
    header["CRPIX1"] = centre_x + 1.0
    lon_ref = file_lon[centre_x]
    header["CRVAL1"] = lon_ref % 360.0 if lon_360 else lon_ref
    header["CDELT1"] = -d_lon if lon_descending else d_lon
    header["CUNIT1"] = "deg"
    if projection == "CAR":
        header["CRPIX2"] = 1.0 - lat[0] / d_lat
        header["CRVAL2"] = 0.0
    else:
        header["CRPIX2"] = lat.size // 2 + 1.0
        header["CRVAL2"] = lat[lat.size // 2]
    header["CDELT2"] = d_lat
    header["CUNIT2"] = "deg"
    if frame != "galactic":
        header["RADESYS"] = frame.upper()
        if frame.lower() == "fk5":
            header["EQUINOX"] = 2000.0

    sign = -1.0 if velocity_descending else 1.0
    if spectral.upper() == "FREQ":
        if rest_frequency is None:
            raise ValueError("a FREQ axis needs rest_frequency")
        f0 = rest_frequency * 1e9
        header["CTYPE3"] = "FREQ"
        header["CUNIT3"] = "Hz"
        header["CRVAL3"] = f0 * (1.0 - file_v[0] / C_KMS)
        header["CDELT3"] = -sign * f0 * d_v / C_KMS
    else:
        scale = {"m/s": 1000.0, "km/s": 1.0}[velocity_unit]
        header["CTYPE3"] = spectral
        header["CUNIT3"] = velocity_unit
        header["CRVAL3"] = file_v[0] * scale
        header["CDELT3"] = sign * d_v * scale
    header["CRPIX3"] = 1.0
    header["SPECSYS"] = "LSRK"
    if rest_frequency is not None:
        header[rest_keyword] = rest_frequency * 1e9
    if bunit is not None:
        header["BUNIT"] = bunit
    if beam_fwhm is not None:
        major, minor = (beam_fwhm, beam_fwhm) if np.isscalar(beam_fwhm) else beam_fwhm
        header["BMAJ"] = major / 3600.0
        header["BMIN"] = minor / 3600.0
        header["BPA"] = 0.0
    if line is not None:
        header["LINE"] = line
    header["TELESCOP"] = "APEX"
    header["OBJECT"] = "CMZ"
    if stokes:
        cube = cube[None]
        header["CTYPE4"] = "STOKES"
        header["CRVAL4"] = 1.0
        header["CDELT4"] = 1.0
        header["CRPIX4"] = 1.0
    for key, value in (extra_header or {}).items():
        header[key] = value
    path = Path(path)
    fits.PrimaryHDU(data=np.ascontiguousarray(cube), header=header).writeto(path, overwrite=True)
    return path


def pixel_centres(start, stop, steps):
    """Centres of ``steps`` equal pixels between the edges ``start`` and ``stop`` (ascending)."""
    step = (stop - start) / steps
    return start + (np.arange(steps) + 0.5) * step


def unique_cube(shape):
    """float32 cube whose every value is a distinct integer (exact in float32 up to 2**24)."""
    size = int(np.prod(shape))
    if size >= 2**24:
        raise ValueError("cube too large for distinct float32 integers")
    return np.arange(size, dtype=np.float32).reshape(shape) + 1.0
