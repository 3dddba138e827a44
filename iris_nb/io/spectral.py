"""Conversion between ``spectral_cube.SpectralCube`` objects and iris_nb cube DataArrays."""

from __future__ import annotations

import math
import warnings

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

from ..conventions import CUBE_DIMS, ascending, beam_attrs, beam_pair, rest_frequency_ghz
from ._common import (
    brightness_factor,
    check_dtype,
    copy_into,
    make_cube,
    parse_brightness_unit,
    radio_velocity,
    regular_step,
)
from .sky import galactic_axes, reproject_block

__all__ = ["CubeReader", "from_spectral_cube", "to_spectral_cube"]

_CHUNK_VALUES = 8_000_000
"""Values read per block of channels (about 32 MB of float32)."""


def _check_cube(cube):
    from spectral_cube.spectral_cube import BaseSpectralCube

    if not isinstance(cube, BaseSpectralCube):
        raise TypeError(
            f"expected a spectral_cube.SpectralCube, got {type(cube).__name__}; "
            "read FITS files with iris_nb.io.open_cube(path) instead"
        )


def header_line(header) -> str | None:
    """Line name from the FITS keywords LINE, or MOLECULE plus TRANSITI."""
    if header is None:
        return None
    line = str(header.get("LINE", "") or "").strip()
    if line:
        return line
    molecule = str(header.get("MOLECULE", "") or "").strip()
    transition = str(header.get("TRANSITI", "") or "").strip()
    return f"{molecule}({transition})" if molecule and transition else (molecule or None)


def _cube_rest_frequency(cube, rest_frequency, what):
    """Rest frequency in GHz: the argument wins over the WCS; ``None`` when neither gives it."""
    given = rest_frequency_ghz(rest_frequency, what)
    header_hz = float(cube.wcs.wcs.restfrq or 0.0)
    if not header_hz > 0 and cube.wcs.wcs.restwav > 0:
        header_hz = float((cube.wcs.wcs.restwav * u.m).to_value(u.Hz, equivalencies=u.spectral()))
    header = header_hz / 1e9 if header_hz > 0 else None
    if given is not None and header is not None and not math.isclose(given, header, rel_tol=1e-6):
        warnings.warn(
            f"{what}: rest_frequency={given} GHz overrides the header's {header} GHz", stacklevel=3
        )
    return given if given is not None else header


def _cube_beams(cube, beam_fwhm, n_channels, what):
    """``(beam for attrs, per-channel (major, minor) arcsec or None)``."""
    given = beam_pair(beam_fwhm, what)
    if given is not None:
        return given, None
    beams = getattr(cube, "beams", None)
    if beams is not None and len(beams) == n_channels:
        major = beams.major.to_value(u.arcsec)
        minor = beams.minor.to_value(u.arcsec)
        return (float(np.median(major)), float(np.median(minor))), (major, minor)
    try:
        beam = cube.beam
    except Exception:  # spectral_cube raises NoBeamError (or others) when there is none
        return None, None
    if beam is None:
        return None, None
    return (float(beam.major.to_value(u.arcsec)), float(beam.minor.to_value(u.arcsec))), None


def _brightness_factors(unit, rest_ghz, beam, channel_beams, what):
    """Factor to K, a float or one per channel of shape (n_velocity,) in input order."""
    unit = parse_brightness_unit(unit, what)
    if channel_beams is None or unit.is_equivalent(u.K):
        return brightness_factor(unit, rest_ghz, beam, what)
    major, minor = channel_beams
    return np.array(
        [brightness_factor(unit, rest_ghz, (a, b), what) for a, b in zip(major, minor)]
    )


class CubeReader:
    """A SpectralCube with its output axes worked out, read in blocks of channels.

    Building one checks everything (units, rest frequency, beam, axes) without reading the
    data. Attributes: ``lon``, ``lat`` (deg) and ``velocity`` (km/s), ascending output
    centres; ``attrs`` for the DataArray; ``name`` for messages; ``dtype``.
    """

    def __init__(self, cube, *, rest_frequency=None, beam_fwhm=None, line=None, units=None,
                 dtype="float32", source=None, original_units=None):
        _check_cube(cube)
        what = source or "the spectral cube"
        self.cube, self.name, self.dtype = cube, what, check_dtype(dtype)
        n_v, n_y, n_x = cube.shape
        if min(cube.shape) < 1:
            raise ValueError(f"{what} is empty (shape {cube.shape})")
        rest_ghz = _cube_rest_frequency(cube, rest_frequency, what)
        spec = cube.wcs.wcs.spec
        ctype = cube.wcs.wcs.ctype[spec] if spec >= 0 else ""
        velocity = radio_velocity(cube.spectral_axis, ctype, rest_ghz * 1e9 if rest_ghz else None, what)
        self.velocity, self.flip_v = ascending(velocity, "velocity", what)
        unit = units if units is not None else cube.unit
        beam, channel_beams = _cube_beams(cube, beam_fwhm, n_v, what)
        self.factors = _brightness_factors(unit, rest_ghz, beam, channel_beams, what)
        self.axes = galactic_axes(cube.wcs.celestial, n_y, n_x, what)
        self.lon, self.lat = self.axes.lon, self.axes.lat
        self.attrs = {
            "rest_frequency": rest_ghz,
            "line": line if line is not None else header_line(getattr(cube, "header", None)),
            "source": source,
            "original_units": original_units if original_units is not None else str(unit),
        }
        self.attrs.update(beam_attrs(beam))

    @property
    def shape(self):
        """Output shape (lon, lat, velocity)."""
        return (self.lon.size, self.lat.size, self.velocity.size)

    def blocks(self):
        """Yield ``(velocity slice, block)``: blocks (lon, lat, k) in K, output order, views.

        Each block covers about 32 MB of input; the slice indexes the ascending velocity axis.
        """
        n_v, n_y, n_x = self.cube.shape
        step = max(1, _CHUNK_VALUES // (n_y * n_x))
        for start in range(0, n_v, step):
            stop = min(n_v, start + step)
            block = np.asarray(self.cube.filled_data[start:stop].value)
            if self.axes.reprojected:
                block = reproject_block(block, self.axes)
            else:
                block = block[:, :: -1 if self.axes.flip_lat else 1, :: -1 if self.axes.flip_lon else 1]
            if np.isscalar(self.factors):
                if self.factors != 1.0:
                    block = block * self.factors
            else:
                block = block * self.factors[start:stop, None, None]
            if self.flip_v:
                yield slice(n_v - stop, n_v - start), block[::-1].transpose(2, 1, 0)
            else:
                yield slice(start, stop), block.transpose(2, 1, 0)

    def to_dataarray(self) -> xr.DataArray:
        """Read all channels into a cube DataArray (lon, lat, velocity), K."""
        data = np.empty(self.shape, dtype=self.dtype)
        for target, block in self.blocks():
            copy_into(data[:, :, target], block)
        return make_cube(data, self.lon, self.lat, self.velocity, self.attrs, self.name)


def from_spectral_cube(
    cube,
    *,
    rest_frequency=None,
    beam_fwhm=None,
    line=None,
    units=None,
    dtype="float32",
    source=None,
    original_units=None,
) -> xr.DataArray:
    """Convert a ``SpectralCube`` into an iris_nb cube.

    Parameters
    ----------
    cube:
        ``spectral_cube.SpectralCube`` (or a varying-resolution cube), numpy order
        (spectral, y, x), any sky frame, any spectral axis type that converts to velocity.
    rest_frequency:
        Line rest frequency in GHz; overrides the WCS ``RESTFRQ``. Needed for frequency,
        wavelength and optical-velocity axes and for ``Jy/beam`` data.
    beam_fwhm:
        Beam FWHM in arcsec (number or ``(major, minor)``); overrides the cube's beam.
    line:
        Line name kept in ``attrs["line"]`` (default: FITS LINE or MOLECULE keyword).
    units:
        Brightness unit of the data, overriding ``cube.unit`` (e.g. when it is missing).
    dtype:
        Floating type of the returned values.
    source, original_units:
        Provenance strings for ``attrs`` (``open_cube`` fills them with the file name and BUNIT).

    Returns
    -------
    xarray.DataArray
        Dims ``(lon, lat, velocity)``, brightness temperature in K; ``lon`` deg wrapped to
        (-180, 180] ascending, ``lat`` deg ascending, ``velocity`` km/s (LSR, radio) ascending.
        Masked or blank voxels are NaN. RA/Dec (or non-rectilinear) cubes are reprojected with
        bilinear interpolation onto a Galactic CAR grid of the input's finest pixel size. The
        data are read in blocks of channels straight into the C-ordered output array.
    """
    reader = CubeReader(cube, rest_frequency=rest_frequency, beam_fwhm=beam_fwhm, line=line, units=units,
                        dtype=dtype, source=source, original_units=original_units)
    return reader.to_dataarray()


def _coord_values(da, name, default_unit):
    coord = da.coords[name]
    unit = u.Unit(coord.attrs.get("units", default_unit))
    return np.asarray(coord.values, dtype=float) * unit


def to_spectral_cube(da: xr.DataArray):
    """Turn an iris_nb cube into a ``spectral_cube.SpectralCube`` (inverse of :func:`from_spectral_cube`).

    ``da`` has dims ``lon``, ``lat``, ``velocity`` (any order) on evenly spaced coordinates
    (deg, deg, km/s unless the coordinates' ``attrs["units"]`` say otherwise) and brightness
    in ``attrs["units"]``. The cube has numpy shape (velocity, lat, lon), a Galactic CAR WCS
    with longitude descending along x (the FITS habit, CDELT1 < 0), a VRAD axis in km/s, the
    rest frequency (``RESTFRQ``), beam and line name when ``da.attrs`` has them.
    """
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"to_spectral_cube expects an xarray.DataArray, got {type(da).__name__}")
    if set(da.dims) != set(CUBE_DIMS):
        raise ValueError(f"cube dims are {da.dims}; expected {CUBE_DIMS} in any order")
    from spectral_cube import SpectralCube

    unit = parse_brightness_unit(da.attrs.get("units"), "cube")
    lon = _coord_values(da, "lon", "deg").to_value(u.deg)
    lat = _coord_values(da, "lat", "deg").to_value(u.deg)
    velocity = _coord_values(da, "velocity", "km/s").to_value(u.km / u.s)
    d_lon = regular_step(lon, "lon", "cube")
    d_lat = regular_step(lat, "lat", "cube")
    d_v = regular_step(velocity, "velocity", "cube")
    data = np.asarray(da.transpose("velocity", "lat", "lon").values)[:, :, ::-1]

    wcs = WCS(naxis=3)
    wcs.wcs.ctype = ["GLON-CAR", "GLAT-CAR", "VRAD"]
    wcs.wcs.cunit = ["deg", "deg", "km/s"]
    wcs.wcs.cdelt = [-d_lon, d_lat, d_v]
    wcs.wcs.crval = [float(lon[-1]) % 360.0, 0.0, float(velocity[0])]
    wcs.wcs.crpix = [1.0, 1.0 - float(lat[0]) / d_lat, 1.0]
    wcs.wcs.specsys = "LSRK"
    if da.attrs.get("rest_frequency") is not None:
        wcs.wcs.restfrq = float(da.attrs["rest_frequency"]) * 1e9
    wcs.wcs.set()

    header = fits.Header()
    if da.attrs.get("line"):
        header["LINE"] = str(da.attrs["line"])
    beam = None
    if da.attrs.get("beam_fwhm"):
        from radio_beam import Beam

        major = float(da.attrs["beam_fwhm"])
        minor = float(da.attrs.get("beam_fwhm_minor", major))
        beam = Beam(major=major * u.arcsec, minor=minor * u.arcsec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return SpectralCube(data=data * unit, wcs=wcs, meta=dict(header), header=header, beam=beam)
