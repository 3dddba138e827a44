"""Training the Reverter: physical losses, resumable train/test loops, DDP through torchrun.

::

    from iris_nb.train import TrainingConfig, train_reverter, test_reverter
    result = train_reverter(model, PreObservedDataset(store), noise=Noise(grid=grid),  # SEDIGISM noise
                            config=TrainingConfig(epochs=8), checkpoint_dir="runs/a")
    metrics = test_reverter(result.model, PreObservedDataset(store, split="test"))

    from iris_nb.train import RunConfig, launch      # several processes / GPUs / nodes
    result = launch(RunConfig(dataset=store, checkpoint_dir="runs/b"), nproc_per_node=2)

Which entry point when (each returns a :class:`TrainingResult`, or builds on one that does;
all of them resume from ``<checkpoint_dir>/checkpoint.pt``):

=============================  =================================================================
``train_reverter``             The loop itself: a model and a torch Dataset in your hands (pairs,
                               fields or a stream), one process (CPU/one GPU), or each rank of a
                               torchrun job you started yourself.
``train_pairs``                In-memory pairs (e.g. ``observed_pairs``) with the noise, litter and
                               training settings of a :class:`RunConfig`; builds the model.
``run_training``               A :class:`RunConfig` (YAML) on dataset stores, in this process or as
                               one rank under torchrun/SLURM (what ``iris-nb train`` runs);
                               writes ``result.json``.
``launch``                     A :class:`RunConfig` on several processes or GPUs from a notebook
                               or script: starts torchrun, streams the ranks' output, stops every
                               rank on failure; ``block=False`` for a :class:`LaunchHandle`.
``train_ensemble``             ``n`` members of one model with different seeds (spread of the
                               answer), one after the other, each resumable.
``TrainingPanel``              Widgets (``iris_nb.widgets``): edit a :class:`RunConfig`, start and
                               stop it (locally or through ``launch``) and watch live curves.
=============================  =================================================================
"""

from .config import TrainingConfig
from .ensemble import train_ensemble
from .evaluate import test_reverter
from .launch import LaunchHandle, launch, load_run_result
from ._procs import LaunchError, PortInUseError
from .losses import MSELoss, PhysicalLoss, ScaledDensityLoss, make_loss
from .loop import train_reverter
from .result import TrainingResult
from .run import RunConfig, run_training, train_pairs

__all__ = [
    "LaunchError",
    "LaunchHandle",
    "MSELoss",
    "PhysicalLoss",
    "PortInUseError",
    "RunConfig",
    "ScaledDensityLoss",
    "TrainingConfig",
    "TrainingResult",
    "launch",
    "load_run_result",
    "make_loss",
    "run_training",
    "test_reverter",
    "train_ensemble",
    "train_pairs",
    "train_reverter",
]
