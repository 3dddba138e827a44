"""Real cubes in and out: FITS files and tiles, spectral-cube objects, HEALPix maps.

Every reader returns an ``xarray.DataArray`` with dims ``(lon, lat, velocity)``:
brightness temperature in K (float32 by default), Galactic longitude in deg wrapped to
(-180, 180] and ascending, latitude in deg ascending, LSR radio velocity in km/s ascending,
and ``attrs`` with what is known (``rest_frequency`` GHz, ``beam_fwhm`` arcsec, ``line``,
``source``, ``original_units``).
"""

from .fits import open_cube, read_fits_cube
from .fitswriter import write_fits_cube
from .healpix import from_healpix
from .mosaic import mosaic, resample_velocity
from .spectral import from_spectral_cube, to_spectral_cube

__all__ = [
    "open_cube",
    "read_fits_cube",
    "write_fits_cube",
    "from_spectral_cube",
    "to_spectral_cube",
    "from_healpix",
    "mosaic",
    "resample_velocity",
]
