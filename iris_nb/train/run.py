"""A whole training run in one value: :class:`RunConfig`, and :func:`run_training` to execute it.

A run names its data (one or several dataset stores written by
:func:`iris_nb.data.write_dataset`), the grid, the :class:`~iris_nb.train.config.TrainingConfig`,
the noise and litter applied to the inputs, where checkpoints go, and optionally a model file
to start from.  The same YAML file drives a notebook call, a shell command and every rank of a
``torchrun`` job::

    dataset: cmz_small.zarr          # or a list of stores
    grid: SMALL                      # preset name, a Grid dict, or null (take the store's grid)
    checkpoint_dir: runs/small-0
    training: {epochs: 8, batch_size: 8, lr: 0.001}
    noise: {sigma: 0.9, channel_width: 0.25}   # rms (K) per 0.25 km/s channel; true: SEDIGISM; or null
    litter: {paths: [near.zarr, far.zarr], p: [0.5, 0.5]}   # or null
    init: null                       # or a model file to fine-tune
    reduction: mean
    seed: 0

Relative paths are relative to the working directory of the process that reads the file;
:func:`iris_nb.train.launch.launch` makes them absolute before it hands the run to torchrun.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .._files import ConfigFiles, check_fields
from ..cube import REDUCTIONS
from ..grids import PRESETS, Grid, get_grid
from ..sim.litter_config import LitterConfig
from ..sim.noise import NoiseConfig, as_noise_config
from . import _run_io
from ._run_build import state_hash
from ._run_io import RunConfigError, check_run_files
from .config import TrainingConfig
from .progress import PROGRESS_PREFIX, progress_printer  # noqa: F401 - their names here before progress.py

__all__ = ["RunConfig", "RunConfigError", "run_training", "train_pairs", "prepare_pairs", "as_run", "progress_printer",
           "state_hash", "PROGRESS_PREFIX"]

DEBUG_KEYS = {
    "save_state": "each rank writes <checkpoint_dir>/debug/rank<k>_state.pt (final weights) and a hash",
    "fail_rank": "this global rank raises RuntimeError on purpose (tests of failure handling)",
    "fail_after": "number of samples the failing rank reads before it raises (default 0)",
}


@dataclasses.dataclass(frozen=True)
class RunConfig(ConfigFiles):
    """Everything one training run needs; validates itself and round-trips to YAML/JSON.

    Parameters
    ----------
    dataset:
        Path of a dataset store, or a list of paths (concatenated; later stores are converted
        to the first store's units).  Items are ``(observation (1, lon, v), target
        (1, distance, lon))``.
    grid:
        A :class:`~iris_nb.grids.Grid`, a preset name (``"SMALL"``, ``"SEDIGISM"``), a grid
        dict, or ``None`` to take the grid of the stores.  A grid that differs from the
        stores' grid is an error (raised by :meth:`check`, before training).
    training:
        :class:`~iris_nb.train.config.TrainingConfig` or its dict.
    noise:
        :class:`~iris_nb.sim.noise.NoiseConfig`, its dict, ``True`` (the SEDIGISM defaults:
        0.9 K rms per 0.25 km/s channel, scaled to the grid's channels, beam-correlated, fade)
        or ``None`` (no noise).  A noise dict without ``channel_width`` (run files written
        before it existed) keeps its old meaning: ``sigma`` per grid pixel, white noise.
    litter:
        ``None``, a :class:`~iris_nb.sim.litter_config.LitterConfig` or its dict
        ``{"paths": [store, ...], "p": probability or [one per store], "scale": 1}``: for each
        litter store (e.g. near-side and far-side gas written with
        :func:`iris_nb.sim.litter.near_side_litter`), each input independently receives one of
        its PV images with probability ``p`` (:class:`iris_nb.sim.litter.Litter`); ``scale``
        (default 1) multiplies every litter image.
    checkpoint_dir:
        Folder for ``checkpoint.pt``, ``model.pt``, ``result.json`` and launch logs.
    init:
        Optional model file (:meth:`iris_nb.Reverter.save` format or a bare IRIS state dict)
        whose weights start the training.
    reduction:
        Latitude reduction of the stored PV images and of the model: ``"mean"`` or ``"max"``.
    width:
        Channel multiplier of a fresh :class:`~iris_nb.Reverter` (1.0 is the exact IRIS
        network; 0.25 gives a ~1 M parameter model for CPUs).  Ignored with ``init``.
    seed:
        If given, replaces ``training.seed`` (data split, shuffling, noise draws).
    test_fraction:
        Fraction of every store held out as its test split (never trained or validated on;
        ``PreObservedDataset(path, split="test", test_fraction=...)`` reads it back).  The
        validation split is ``training.validation_fraction``.
    debug:
        Test hooks, see :data:`DEBUG_KEYS` (``save_state``, ``fail_rank``, ``fail_after``).
    """

    _file_error = RunConfigError

    dataset: tuple[str, ...] | str
    grid: Grid | str | None = None
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    noise: NoiseConfig | None = None
    litter: LitterConfig | None = None
    checkpoint_dir: str = "iris_nb_run"
    init: str | None = None
    reduction: str = "mean"
    width: float = 1.0
    seed: int | None = None
    test_fraction: float = 0.1
    debug: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("dataset", _run_io.as_paths(self.dataset, "dataset"))
        if self.grid is not None:
            try:
                set_("grid", get_grid(self.grid))
            except (TypeError, ValueError) as err:
                raise RunConfigError(f"RunConfig.grid: {err}") from None
        set_("training", _as_training(self.training))
        set_("noise", _as_noise(self.noise))
        set_("litter", _as_litter(self.litter))
        set_("checkpoint_dir", _run_io.as_path(self.checkpoint_dir, "checkpoint_dir"))
        if self.init is not None:
            set_("init", _run_io.as_path(self.init, "init"))
        if self.reduction not in REDUCTIONS:
            raise RunConfigError(f"RunConfig.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        from ..model.architecture import check_width

        try:
            set_("width", check_width(self.width))
        except (TypeError, ValueError) as err:
            raise RunConfigError(f"RunConfig.width: {err}") from None
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
                raise RunConfigError(f"RunConfig.seed must be a non-negative integer or None, got {self.seed!r}")
            if self.training.seed != self.seed:
                set_("training", dataclasses.replace(self.training, seed=self.seed))
        fraction = self.test_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise RunConfigError(f"RunConfig.test_fraction must lie in [0, 1), got {fraction!r}")
        if fraction + self.training.validation_fraction >= 1:
            raise RunConfigError(f"test_fraction {fraction:g} and training.validation_fraction "
                                 f"{self.training.validation_fraction:g} leave no training samples; keep their sum below 1")
        set_("test_fraction", float(fraction))
        set_("debug", _as_debug(self.debug))

    # ------------------------------------------------------------------ dict / files
    def to_dict(self) -> dict:
        """Plain YAML/JSON-safe dictionary; :meth:`from_dict` inverts it.

        The grid is written as its preset name when it equals a preset, else as a dict.
        """
        return {
            "dataset": self.dataset[0] if len(self.dataset) == 1 else list(self.dataset),
            "grid": grid_to_plain(self.grid),
            "training": self.training.to_dict(),
            "noise": None if self.noise is None else self.noise.to_dict(),
            "litter": None if self.litter is None else self.litter.to_dict(),
            "checkpoint_dir": self.checkpoint_dir,
            "init": self.init,
            "reduction": self.reduction,
            "width": self.width,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "debug": dict(self.debug),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build a run from a dict such as :meth:`to_dict` gives; unknown keys are an error."""
        if isinstance(data, RunConfig):
            return data
        if not isinstance(data, dict):
            raise TypeError(f"a run config is a dict of RunConfig fields, got {type(data).__name__}")
        check_fields(cls, data, "RunConfig", error=RunConfigError,
                     hint=" (training options go under 'training:')")
        if "dataset" not in data:
            raise RunConfigError("a run config needs 'dataset': the path of a dataset store or a list of paths")
        return cls(**data)

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "RunConfig":
        """A copy whose paths are absolute (resolved against the current working directory)."""
        absolute = lambda p: None if p is None else str(Path(p).expanduser().resolve())  # noqa: E731
        litter = None if self.litter is None else self.litter.replace(
            paths=tuple(absolute(p) for p in self.litter.paths))
        return self.replace(dataset=tuple(absolute(p) for p in self.dataset), litter=litter,
                            checkpoint_dir=absolute(self.checkpoint_dir), init=absolute(self.init))

    def check(self) -> Grid:
        """Check the files the run needs, before any training; returns the run's grid.

        Raises :class:`RunConfigError` (a ``ValueError``) for a missing dataset or litter store,
        stores on different grids, a ``grid`` that differs from the stores' grid, a store
        reduction other than :attr:`reduction`, or an ``init`` model on another grid.
        """
        return check_run_files(self)


def _as_training(value) -> TrainingConfig:
    if isinstance(value, TrainingConfig):
        return value
    if isinstance(value, dict):
        return TrainingConfig.from_dict(value)
    raise RunConfigError(f"RunConfig.training must be a TrainingConfig or a dict of its fields, "
                         f"got {type(value).__name__}")


def _as_noise(value) -> NoiseConfig | None:
    try:
        return as_noise_config(value)
    except TypeError as err:
        raise RunConfigError(f"RunConfig.noise: {err}") from None


def _as_litter(value) -> LitterConfig | None:
    try:
        return LitterConfig.coerce(value)
    except (TypeError, ValueError) as err:
        raise RunConfigError(f"RunConfig.litter: {err}") from None


def _as_debug(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunConfigError(f"RunConfig.debug must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - set(DEBUG_KEYS))
    if unknown:
        raise RunConfigError(f"unknown RunConfig.debug keys {unknown}; known keys are {sorted(DEBUG_KEYS)}")
    out = dict(value)
    if not isinstance(out.get("save_state", False), bool):
        raise RunConfigError(f"debug.save_state must be true or false, got {out['save_state']!r}")
    for key in ("fail_rank", "fail_after"):
        item = out.get(key)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int) or item < 0):
            raise RunConfigError(f"debug.{key} must be a non-negative integer, got {item!r}")
    return out


def grid_to_plain(grid: Grid | None):
    if grid is None:
        return None
    preset = PRESETS.get(grid.name.upper())
    if preset is not None and preset == grid:
        return preset.name
    return grid.to_dict()


# ---------------------------------------------------------------------- running


def run_training(run, device: str | None = None, resume: bool = True, callbacks=(), progress: bool = True):
    """Execute a run in this process, or as one rank of a ``torchrun`` job.

    ``run`` is a :class:`RunConfig`, a dict of its fields, or a YAML path.  Steps: check the
    files (errors before anything starts); :func:`~iris_nb.train.distributed.init_from_env`
    (joins the process group when ``WORLD_SIZE > 1``); build the datasets, noise, litter and
    model (``Reverter(grid, reduction)`` or ``Reverter.load(init)``); call
    :func:`~iris_nb.train.loop.train_reverter`; rank 0 writes ``<checkpoint_dir>/result.json``.
    ``device`` (``"cpu"``, ``"cuda"`` or ``None``) overrides ``run.training.device``;
    ``resume``, ``callbacks`` and ``progress`` (a bar on rank 0, plain lines in a log) go to ``train_reverter``.

    Returns the :class:`~iris_nb.train.result.TrainingResult` (its ``model`` holds the trained
    weights, output ``(B, 1, distance, lon)`` in the model's density unit).
    """
    from . import distributed
    from ._run_build import build_inputs, save_debug_state
    from .loop import train_reverter
    from .result import write_result

    run = as_run(run)
    grid = run.check()
    already = torch.distributed.is_available() and torch.distributed.is_initialized()
    chosen = device if device is not None else run.training.device
    torch_device = distributed.init_from_env(chosen)
    try:
        inputs = build_inputs(run, grid, torch_device)
        Path(run.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        result = train_reverter(inputs["model"], inputs["dataset"], noise=inputs["noise"],
                                litter=inputs["litter"], config=inputs["config"],
                                checkpoint_dir=run.checkpoint_dir, resume=resume,
                                callbacks=tuple(callbacks), progress=progress, **inputs["extra"])
        if run.debug.get("save_state"):
            save_debug_state(result.model, run.checkpoint_dir, distributed.rank())
        if distributed.is_main_process():
            write_result(result, run, torch_device)
        distributed.barrier()
        return result
    finally:
        if not already:
            distributed.cleanup()


def prepare_pairs(run, dataset, model=None) -> dict:
    """The model, noise and litter with which :func:`train_pairs` trains ``dataset``.

    Returns ``{"model": Reverter, "noise": Noise or None, "litter": Litter or None}``, built
    from ``run`` as :func:`run_training` builds them; see :func:`train_pairs` for the
    arguments.  Raises ValueError/TypeError (an empty dataset, no grid or unit to build a
    model from, a model on another grid than ``run.grid``, a missing litter store) before
    any training.
    """
    from ._run_build import build_pairs_inputs

    return build_pairs_inputs(as_run(run), dataset, model)


def train_pairs(run, dataset, model=None, *, callbacks=(), progress: bool = True):
    """Train on pairs held in memory with the settings of ``run`` (no dataset store is read).

    ``dataset`` is a sized torch Dataset of ``(observation (1, lon, v), target
    (1, distance, lon))`` pairs, e.g. :func:`iris_nb.data.field_datasets.observed_pairs`; ``model``
    is a :class:`~iris_nb.Reverter` (trained in place), or ``None`` for a fresh one built
    from ``run`` (grid: ``run.grid``, else ``dataset.grid``; input unit:
    ``dataset.units["observation"]``; initial weights from ``run.training.seed``).
    ``run.training``, ``run.noise``, ``run.litter`` (stores) and ``run.checkpoint_dir``
    apply as in :func:`run_training` (``run.dataset`` is not read); the training resumes
    from ``<checkpoint_dir>/checkpoint.pt`` when it exists.  ``callbacks`` and ``progress``
    go to :func:`~iris_nb.train.loop.train_reverter`.

    Returns the :class:`~iris_nb.train.result.TrainingResult`.
    """
    from .loop import train_reverter

    run = as_run(run)
    inputs = prepare_pairs(run, dataset, model)
    return train_reverter(inputs["model"], dataset, noise=inputs["noise"], litter=inputs["litter"],
                          config=run.training, checkpoint_dir=run.checkpoint_dir, resume=True,
                          callbacks=tuple(callbacks), progress=progress)


def as_run(run) -> RunConfig:
    """A :class:`RunConfig` from a RunConfig, a dict of its fields or a YAML/JSON file path."""
    if isinstance(run, RunConfig):
        return run
    if isinstance(run, dict):
        return RunConfig.from_dict(run)
    if isinstance(run, (str, os.PathLike)):
        path = Path(run)
        if path.suffix.lower() == ".json":
            return RunConfig.from_json(path)
        return RunConfig.from_yaml(path)
    raise TypeError(f"run must be a RunConfig, a dict of its fields or a YAML path, got {type(run).__name__}")
