"""Synthetic training data: CMZ gas models, synthetic observers, noise and litter.

::

    from iris_nb.sim import make_cmz, LineObserver, columnize, Noise
    field = make_cmz(iris_nb.SMALL, seed=1)            # Dataset (distance, lon, lat)
    cube = LineObserver(iris_nb.SMALL).observe(field)  # DataArray (lon, lat, velocity), K
    truth = columnize(field)                            # DataArray (distance, lon), Msun/pc3

Nothing here imports the network or the training code.
"""

from .arepo import from_arepo, read_arepo_gas
from .augment import FieldAugmentation, observer_jitter
from .cmz import CMZ_PARAMETERS, draw_cmz_parameters, make_cmz
from .cmz_model import CMZModel
from .topdown import TopDownObserver
from .columnize import columnize, columnize_tensors
from .excitation import Excitation, solve_excitation
from .excitation_table import ExcitationTable
from .family import FamilySummary, family_summary
from .fields import (
    FIELD_UNITS,
    HYDROGEN_MASS_FRACTION,
    empty_field,
    field_from_arrays,
    field_tensors,
    h2_density,
    validate_field,
)
from .litter import LITTER_PARAMETERS, Litter, far_side_litter, litter_grid, make_litter, near_side_litter
from .litter_config import LitterConfig
from .noise import Noise, NoiseConfig
from .molecule import Molecule
from .observers import LineObserver, SimpleObserver

__all__ = [
    "CMZModel",
    "TopDownObserver",
    "CMZ_PARAMETERS",
    "Excitation",
    "ExcitationTable",
    "FIELD_UNITS",
    "FamilySummary",
    "FieldAugmentation",
    "HYDROGEN_MASS_FRACTION",
    "LITTER_PARAMETERS",
    "LineObserver",
    "Molecule",
    "Litter",
    "LitterConfig",
    "Noise",
    "NoiseConfig",
    "SimpleObserver",
    "columnize",
    "columnize_tensors",
    "draw_cmz_parameters",
    "empty_field",
    "family_summary",
    "far_side_litter",
    "field_from_arrays",
    "field_tensors",
    "from_arepo",
    "h2_density",
    "litter_grid",
    "make_cmz",
    "make_litter",
    "near_side_litter",
    "observer_jitter",
    "read_arepo_gas",
    "solve_excitation",
    "validate_field",
]
