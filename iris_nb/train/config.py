"""``TrainingConfig``: every knob of a training run in one small, validated value.

The defaults are the paper's (DESIGN.md section 6): 32 epochs, batch 8 per process,
gradients accumulated (averaged) over 16 batches, 20% validation split with a fixed seed,
the scaled density loss with ``n = 1e-19 kg/m3``, Adam at ``lr = 1e-3`` and a MultiStepLR
that halves the rate after epochs 16, 17 and 18.

A config prints readably, compares by value and round-trips through JSON and YAML::

    cfg = TrainingConfig(epochs=4, batch_size=4)
    TrainingConfig.from_yaml(cfg.to_yaml()) == cfg
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .._files import ConfigFiles, check_fields
from .losses import LOSSES

__all__ = ["TrainingConfig", "as_config", "OPTIMIZERS", "SCHEDULERS", "PRECISIONS", "RESUMABLE_CHANGES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("multistep", "constant", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")

RESUMABLE_CHANGES = ("epochs", "num_workers", "device", "precision", "checkpoint_every")
"""Fields that may differ between a checkpoint and the config resuming it (extend a run,
move it to another device).  Any other difference is refused: it would not continue the
same run."""


@dataclasses.dataclass(frozen=True)
class TrainingConfig(ConfigFiles):
    """Hyper-parameters of :func:`~iris_nb.train.loop.train_reverter`.

    Parameters
    ----------
    epochs:
        Number of passes over the training split (>= 1).
    batch_size:
        Samples per batch *per process* (under torchrun the global batch is
        ``batch_size * world_size``).
    batches_per_update:
        Batches whose gradients are averaged before one optimiser step (gradient
        accumulation); a partial last group of an epoch is averaged over its own size.
    validation_fraction:
        Fraction of the dataset held out for validation, in ``[0, 1)``; 0 turns validation
        off.  Ignored when a ``validation=`` dataset is given to ``train_reverter``.
    loss:
        ``"scaled_density"`` (paper) or ``"mse"``.
    density_normalization:
        Normalisation density ``n`` of the loss, kg/m3 (paper: 1e-19).
    optimizer:
        ``"adam"`` (paper), ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    lr:
        Learning rate (> 0).
    weight_decay:
        Weight decay (>= 0; 0 in the paper).
    scheduler:
        ``"multistep"`` (paper; ``milestones`` and ``gamma``), ``"constant"`` or
        ``"cosine"`` (cosine annealing over ``epochs``); stepped once per epoch.
    milestones:
        Epochs after which a MultiStepLR multiplies the rate by ``gamma``.
    gamma:
        Factor applied at each milestone, in ``(0, 1]``.
    seed:
        Seed of the initial shuffling, the per-epoch order, noise and litter draws.
    split_seed:
        Seed of the train/validation split; ``None`` uses ``seed``.  Ensembles keep it fixed
        so every member sees the same validation set.
    num_workers:
        DataLoader worker processes (0 = load in the training process).
    device:
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or ``None`` (CUDA when available; under
        torchrun ``cuda:LOCAL_RANK``).
    precision:
        ``"fp32"``, ``"bf16"`` (autocast, CPU or GPU) or ``"fp16"`` (autocast with a
        gradient scaler, CUDA only).
    channels_last:
        Channels-last memory layout for the network during training (helps tensor cores).
    checkpoint_every:
        Write the checkpoint every this many epochs (and always at the end or on a stop).
    """

    epochs: int = 32
    batch_size: int = 8
    batches_per_update: int = 16
    validation_fraction: float = 0.2
    loss: str = "scaled_density"
    density_normalization: float = 1e-19
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "multistep"
    milestones: tuple = (16, 17, 18)
    gamma: float = 0.5
    seed: int = 0
    split_seed: int | None = None
    num_workers: int = 0
    device: str | None = None
    precision: str = "fp32"
    channels_last: bool = False
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "batches_per_update", "checkpoint_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("seed", "num_workers"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.split_seed is not None:
            _check_int("split_seed", self.split_seed, minimum=0)
        fraction = _check_float("validation_fraction", self.validation_fraction)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(
                f"TrainingConfig.validation_fraction must lie in [0, 1) (0 = no validation), got "
                f"{self.validation_fraction!r}; the paper uses 0.2"
            )
        for name in ("lr", "density_normalization"):
            if _check_float(name, getattr(self, name)) <= 0:
                raise ValueError(f"TrainingConfig.{name} must be positive, got {getattr(self, name)!r}")
        if _check_float("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"TrainingConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        gamma = _check_float("gamma", self.gamma)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"TrainingConfig.gamma must lie in (0, 1], got {self.gamma!r}")
        _check_choice("loss", self.loss, tuple(LOSSES))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"TrainingConfig.channels_last must be True or False, got {self.channels_last!r}")
        object.__setattr__(self, "milestones", _check_milestones(self.milestones))
        if self.device is not None:
            if not isinstance(self.device, str):
                raise TypeError(f"TrainingConfig.device must be a string like 'cpu' or 'cuda:0', or None, "
                                f"got {type(self.device).__name__}")
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(f"TrainingConfig.device {self.device!r} is not a torch device; use 'cpu', "
                                 "'cuda', 'cuda:0'... or None for automatic") from None
        for name in ("validation_fraction", "lr", "density_normalization", "weight_decay", "gamma"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # ----------------------------------------------------------- factories
    @property
    def effective_split_seed(self) -> int:
        """The seed of the train/validation split (``split_seed``, else ``seed``)."""
        return self.seed if self.split_seed is None else self.split_seed

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """The optimiser for ``params`` (an iterable of parameters or parameter groups)."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """The learning-rate scheduler, to be stepped once per epoch."""
        if self.scheduler == "multistep":
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones), gamma=self.gamma)
        if self.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    def replace(self, **changes) -> "TrainingConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def incompatible_changes(self, other: "TrainingConfig") -> dict:
        """Fields (outside :data:`RESUMABLE_CHANGES`) whose values differ: ``{name: (self, other)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {name: (mine[name], theirs[name]) for name in mine
                if name not in RESUMABLE_CHANGES and mine[name] != theirs[name]}

    # ----------------------------------------------------------- round trips
    def to_dict(self) -> dict:
        """Plain dict (JSON/YAML-ready; milestones as a list)."""
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingConfig":
        """Build a config from :meth:`to_dict` output (unknown keys are refused)."""
        if isinstance(data, cls):
            return data
        return cls(**check_fields(cls, data, "TrainingConfig"))


def as_config(config) -> TrainingConfig:
    """A TrainingConfig from ``None`` (paper defaults), a dict or a config."""
    if config is None:
        return TrainingConfig()
    if isinstance(config, dict):
        return TrainingConfig.from_dict(config)
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig (or a dict of its fields), got {type(config).__name__}")
    return config


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TrainingConfig.{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"TrainingConfig.{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"TrainingConfig.{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"TrainingConfig.{name} must be finite, got {value!r}")
    return float(value)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"TrainingConfig.{name} must be one of {list(choices)}, got {value!r}")


def _check_milestones(milestones) -> tuple:
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise TypeError(f"TrainingConfig.milestones must be a list of epochs, got {milestones!r}")
    values = tuple(milestones)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"TrainingConfig.milestones must be positive integer epochs, got {list(values)}")
    if list(values) != sorted(set(values)):
        raise ValueError(f"TrainingConfig.milestones must be strictly increasing, got {list(values)}")
    return values
