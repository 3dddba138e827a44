"""Reading FITS spectral-line cubes (one file or several tiles) into iris_nb cubes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import astropy.units as u
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ._common import check_dtype, parse_brightness_unit
from .spectral import CubeReader, header_line

__all__ = ["open_cube", "read_fits_cube"]

_SPECTRAL_CODES = ("VRAD", "VOPT", "ZOPT", "VELO", "BETA", "FREQ", "WAVE", "ENER", "WAVN", "FELO", "AWAV")
_SPECTRAL_DEFAULT_UNIT = {"FREQ": "Hz", "WAVE": "m", "AWAV": "m", "ENER": "J", "WAVN": "1/m"}
_PHYSICAL = {"FREQ": u.Hz, "WAVE": u.m, "AWAV": u.m, "ENER": u.J, "WAVN": 1 / u.m, "ZOPT": u.one, "BETA": u.one}
_CELESTIAL = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT", "SLON", "SLAT")


def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    if isinstance(paths, (list, tuple)):
        if not paths:
            raise ValueError("open_cube got an empty list of paths; give at least one FITS file")
        bad = [p for p in paths if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise TypeError(f"paths must be file names, got {bad[0]!r} of type {type(bad[0]).__name__}")
        return [Path(p) for p in paths]
    raise TypeError(f"open_cube expects a path or a list of paths, got {type(paths).__name__}")


def _image_hdu(hdul, name: str) -> int:
    """Index of the first HDU holding an image array."""
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS", 0) > 0:
            return index
    raise ValueError(f"{name} holds no image data (no HDU with NAXIS > 0); expected a spectral cube")


def _check_header(header: fits.Header, name: str, units) -> None:
    """Raise an actionable ValueError for headers that cannot describe a (lon, lat, v) cube."""
    shape = [header.get(f"NAXIS{i}", 0) for i in range(1, header.get("NAXIS", 0) + 1)]
    ctypes = [str(header.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, len(shape) + 1)]
    if len(shape) < 3:
        raise ValueError(
            f"{name} is a {len(shape)}-D image (shape {shape}), not a spectral cube; expected 3 axes "
            "(longitude, latitude, velocity or frequency)"
        )
    extra = [c for c, n in zip(ctypes, shape) if not c.startswith(_CELESTIAL + _SPECTRAL_CODES)]
    if len(shape) > 4 or (len(shape) == 4 and not (extra == ["STOKES"] or extra == [])):
        raise ValueError(
            f"{name} has {len(shape)} axes {ctypes}; expected 3 axes (sky, sky, spectral), "
            "optionally with a Stokes axis"
        )
    if sum(c.startswith(_CELESTIAL) for c in ctypes) != 2:
        raise ValueError(f"{name} has axes {ctypes}; expected two sky axes (GLON/GLAT or RA/DEC)")
    spectral = [i for i, c in enumerate(ctypes) if c[:4] in _SPECTRAL_CODES]
    if not spectral:
        raise ValueError(
            f"{name} has no spectral axis (CTYPEs {ctypes}); expected one of "
            "VRAD, VELO, VELO-LSR, VOPT or FREQ"
        )
    axis = spectral[0] + 1
    code = ctypes[axis - 1][:4]
    raw_unit = str(header.get(f"CUNIT{axis}", "") or "").strip()
    expected = _PHYSICAL.get(code, u.m / u.s)
    try:
        spec_unit = u.Unit(raw_unit or _SPECTRAL_DEFAULT_UNIT.get(code, "m/s"), format="fits")
    except ValueError:
        spec_unit = None
    if spec_unit is None or not spec_unit.is_equivalent(expected):
        raise ValueError(
            f"{name} has an unknown spectral unit CUNIT{axis}={raw_unit!r} for a {code} axis; "
            f"expected a unit of {expected.physical_type} (e.g. {expected.to_string()})"
        )
    _check_wcs(header, name, ctypes)
    if units is None:
        parse_brightness_unit(header.get("BUNIT"), name)


def _check_wcs(header: fits.Header, name: str, ctypes) -> None:
    """Raise an actionable ValueError when astropy cannot build a WCS from the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            WCS(header).wcs.set()
    except (ValueError, MemoryError) as err:  # astropy.wcs.WcsError and its kin
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("ERROR"))
        cdelts = [header.get(f"CDELT{i}") for i in range(1, len(ctypes) + 1)]
        raise ValueError(
            f"{name} has a coordinate system astropy cannot use: {reason or err} (CTYPEs {ctypes}, "
            f"CDELTs {cdelts}); fix the header, e.g. a zero CDELT or sky axes that do not pair "
            "(GLON goes with GLAT, RA with DEC)"
        ) from None


def _fix_velocity_type(header: fits.Header) -> None:
    """Read VELO / AIPS VELO-xxx axes without VELREF as radio velocities (in place)."""
    for i in range(1, header.get("NAXIS", 0) + 1):
        ctype = str(header.get(f"CTYPE{i}", "")).strip().upper()
        if ctype.startswith("VELO") and "VELREF" not in header:
            header[f"CTYPE{i}"] = "VRAD"
            if ctype.endswith("LSR") and "SPECSYS" not in header:
                header["SPECSYS"] = "LSRK"


def _prepare(path: Path, units):
    """Open ``path``, check its header; return (hdul, hdu index, header, original BUNIT)."""
    if not path.exists():
        raise ValueError(f"no file at {path}; check the path (working directory is {Path.cwd()})")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the FITS file inside it")
    try:
        hdul = fits.open(path, memmap=True)
    except OSError as err:
        raise ValueError(f"{path} is not a FITS file ({err}); open_cube reads FITS cubes") from None
    try:
        index = _image_hdu(hdul, path.name)
        header = hdul[index].header
        _check_header(header, path.name, units)
    except Exception:
        hdul.close()
        raise
    return hdul, index, header, header.get("BUNIT")


def read_fits_cube(path, *, rest_frequency=None, beam_fwhm=None, line=None, units=None, dtype="float32"):
    """Read one FITS cube into a DataArray (lon, lat, velocity) in K; see :func:`open_cube`."""
    path = Path(path)
    hdul, index, header, bunit = _prepare(path, units)
    with hdul:
        return _reader(path, hdul, index, header, bunit, rest_frequency, beam_fwhm, line, units, dtype).to_dataarray()


def _reader(path, hdul, index, header, bunit, rest_frequency, beam_fwhm, line, units, dtype):
    """A :class:`~iris_nb.io.spectral.CubeReader` on an open file (checks, no data read)."""
    from spectral_cube import SpectralCube

    _fix_velocity_type(header)
    specsys = str(header.get("SPECSYS", "LSRK")).strip().upper()
    if specsys not in ("LSRK", "LSRD", ""):
        warnings.warn(
            f"{path.name} has SPECSYS={specsys}; its velocities are used as they are, "
            "without a correction to the LSR",
            stacklevel=4,
        )
    unit = parse_brightness_unit(units if units is not None else bunit, path.name)
    header["BUNIT"] = unit.to_string("fits") if unit != u.Jy / u.beam else "Jy/beam"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.filterwarnings("ignore", message=".*Stokes cube.*")
        cube = SpectralCube.read(hdul, hdu=index)
        return CubeReader(
            cube,
            rest_frequency=rest_frequency,
            beam_fwhm=beam_fwhm,
            line=line if line is not None else header_line(header),
            units=unit,
            dtype=dtype,
            source=path.name,
            original_units=str(bunit) if bunit is not None else str(units),
        )


def open_cube(paths, *, rest_frequency=None, beam_fwhm=None, line=None, units=None, dtype="float32") -> xr.DataArray:
    """Open a FITS spectral-line cube, or several tiles mosaicked onto one grid.

    Parameters
    ----------
    paths:
        One FITS file or a list of tiles (e.g. SEDIGISM ``G359_13CO21_Tmb_DR1.fits`` and
        ``G001_13CO21_Tmb_DR1.fits``). Each holds a 3-D cube (or 4-D with a Stokes axis, whose
        Stokes I is read) with two sky axes and one spectral axis.
    rest_frequency:
        Line rest frequency in GHz, used when the header has no ``RESTFRQ``/``RESTFREQ`` (and
        overriding it when it has). Needed for FREQ axes and Jy/beam data.
    beam_fwhm:
        Beam FWHM in arcsec (or ``(major, minor)``), used instead of the header BMAJ/BMIN.
    line:
        Name of the line (default: header LINE or MOLECULE).
    units:
        Brightness unit of the data ('K', 'mK', 'Jy/beam'), overriding or replacing BUNIT.
    dtype:
        Floating type of the returned values (float32 by default).

    Returns
    -------
    xarray.DataArray
        Dims ``(lon, lat, velocity)``: Galactic longitude (deg, wrapped to (-180, 180],
        ascending), latitude (deg, ascending), LSR radio velocity (km/s, ascending).
        Values are brightness temperatures in K (from K, mK or Jy/beam via the beam and rest
        frequency); blank voxels stay NaN. ``attrs`` carry ``rest_frequency`` (GHz),
        ``beam_fwhm`` (arcsec; ``beam_fwhm_minor`` when different), ``line``, ``source``
        (file names) and ``original_units``.

    Notes
    -----
    Spectral axes VRAD, VELO and VELO-LSR (any velocity unit) are used directly (VELO axes
    without VELREF are taken as radio velocities, as radio single-dish software writes them);
    VOPT, FREQ and WAVE axes are converted to radio velocity ``v = c (1 - f / f0)`` with the
    rest frequency. GLON/GLAT pixel grids are read as they are; RA/Dec cubes are reprojected
    with bilinear interpolation (``reproject.reproject_interp``) onto a Galactic plate carree
    grid with the input's pixel size. Tiles are combined by :func:`iris_nb.io.mosaic`.
    """
    path_list = _as_paths(paths)
    check_dtype(dtype)
    opened = []
    try:
        for path in path_list:  # check every header before reading any data
            opened.append((path, *_prepare(path, units)))
        readers = [
            _reader(path, hdul, index, header, bunit, rest_frequency, beam_fwhm, line, units, dtype)
            for path, hdul, index, header, bunit in opened
        ]
        if len(readers) == 1:
            return readers[0].to_dataarray()
        from .mosaic import mosaic

        return mosaic(readers)
    finally:
        for item in opened:
            item[1].close()
