"""iris_nb: reversion of Central Molecular Zone spectral-line cubes into top-down density maps.

What a notebook user types::

    import iris_nb                                   # registers the ``.iris`` accessor
    cube = iris_nb.open_cube(paths)                  # FITS file(s) -> DataArray (lon, lat, velocity), K
    model = iris_nb.Reverter.load(path)              # iris_nb model file or bare IRIS state dict
    top_down = cube.iris.revert(model, units="Msun/pc3")   # DataArray (distance, lon)
    cube.iris.diagnose(model)                        # the cube vs the model's training inputs
    iris_nb.plot.top_down(top_down)
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("iris_nb")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from . import grids, units  # noqa: E402
from .grids import SEDIGISM, SMALL, Axis, Grid  # noqa: E402
from . import io  # noqa: E402
from .io import open_cube  # noqa: E402
from .model import ModelFileError, Reverter  # noqa: E402
from .model.pretrained import pretrained  # noqa: E402
from . import accessor  # noqa: E402,F401  (registers DataArray.iris)
from .reversion import revert  # noqa: E402
from .diagnose import OutOfDistributionWarning  # noqa: E402

_LAZY_SUBPACKAGES = ("data", "plot", "sim", "train", "widgets")


def __getattr__(name):
    """Import the heavier subpackages (plotting, simulation, training, widgets) on first use."""
    if name in _LAZY_SUBPACKAGES:
        import importlib

        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "Axis",
    "Grid",
    "SEDIGISM",
    "SMALL",
    "ModelFileError",
    "OutOfDistributionWarning",
    "Reverter",
    "grids",
    "io",
    "open_cube",
    "plot",
    "pretrained",
    "revert",
    "data",
    "sim",
    "train",
    "widgets",
    "units",
]
