"""iris_nb: reversion of Central Molecular Zone spectral-line cubes into top-down density maps."""

from importlib.metadata import PackageNotFoundError, version as _version

from . import grids, units
from .grids import Grid

try:
    __version__ = _version("iris_nb")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
