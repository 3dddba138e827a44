"""Training the Reverter: physical losses, resumable train/test loops, DDP through torchrun.

::

    from iris_nb.train import TrainingConfig, train_reverter, test_reverter
    result = train_reverter(model, PreObservedDataset(store), noise=Noise(grid=grid),  # SEDIGISM noise
                            config=TrainingConfig(epochs=8), checkpoint_dir="runs/a")
    metrics = test_reverter(result.model, PreObservedDataset(store, split="test"))

    from iris_nb.train import RunConfig, launch      # several processes / GPUs / nodes
    result = launch(RunConfig(dataset=store, checkpoint_dir="runs/b"), nproc_per_node=2)
"""

from .config import TrainingConfig
from .ensemble import train_ensemble
from .evaluate import test_reverter
from .launch import LaunchHandle, launch, load_run_result
from ._procs import LaunchError, PortInUseError
from .losses import MSELoss, PhysicalLoss, ScaledDensityLoss, make_loss
from .loop import train_reverter
from .result import TrainingResult
from .run import RunConfig, run_training

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
    "train_reverter",
]
