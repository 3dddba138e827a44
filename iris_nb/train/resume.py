"""Resuming a run: training checkpoints (the full state needed to continue exactly), and
finding the one to continue from.

``<checkpoint_dir>/checkpoint.pt`` is a ``torch.save`` of a plain dictionary::

    {"format": "iris_nb.training_checkpoint", "format_version": 1,
     "model": state_dict, "model_signature": {...},      # grid, reduction, units, shapes
     "optimizer": ..., "scheduler": ..., "scaler": ... or None,
     "epoch": completed epochs, "batch": batches done in the running epoch (0 at a boundary),
     "pending_gradients": {name: tensor} or None,         # a stop inside an accumulation group
     "epoch_partial": {...},                               # running sums of the stopped epoch
     "rng": {"torch": ..., "cuda": [...], "numpy": ..., "python": ...},
     "history": {...}, "config": TrainingConfig.to_dict(), "world_size": int, "created": ISO,
     "input_statistics": InputStatisticsRecorder.state_dict()}   # the inputs summarised so far

Files are written to a temporary file in the same folder, flushed to disk and moved over
the old one with :func:`os.replace`, so a crash never leaves a half-written checkpoint.  The
checkpoint it replaces is kept as ``checkpoint.previous.pt`` (a second copy on disk): when
``checkpoint.pt`` is damaged afterwards (a full disk, a copy cut short), :func:`open_checkpoint`
resumes from the previous one and says so.  Files are read with ``weights_only=True``: a file
holding pickled objects that would run code is refused, without running them.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_torch_save
from ..units import input_space_name

__all__ = ["CHECKPOINT_NAME", "PREVIOUS_NAME", "MODEL_NAME", "CheckpointMismatchError", "CheckpointReadError",
           "model_signature", "save_checkpoint", "load_checkpoint", "check_compatible", "open_checkpoint",
           "rng_state", "set_rng_state", "atomic_torch_save"]

CHECKPOINT_FORMAT = "iris_nb.training_checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.previous.pt"
"""The checkpoint that ``checkpoint.pt`` replaced, kept so that a damaged newest file loses one interval."""
MODEL_NAME = "model.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint belongs to another model or an incompatible configuration."""


class CheckpointReadError(CheckpointMismatchError):
    """A checkpoint file cannot be read: truncated, not a torch file, or holding code."""


def model_signature(model) -> dict:
    """What must match for a checkpoint to resume into ``model``: grid, reduction, input
    space, units and the shape of every state-dict entry."""
    grid = getattr(model, "grid", None)
    units = getattr(model, "units", None)
    return {
        "grid": grid.to_dict() if grid is not None else None,
        "reduction": getattr(model, "reduction", None),
        "input_space": getattr(model, "input_space", None),
        "units": {k: v.to_string() for k, v in units.items()} if units else None,
        "shapes": {name: list(value.shape) for name, value in model.state_dict().items()},
    }


def rng_state() -> dict:
    """The global random states (torch CPU, every CUDA device, numpy legacy, Python)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [state for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore states saved by :func:`rng_state` (CUDA states only when the device count
    matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def save_checkpoint(folder: str | Path, payload: dict) -> Path:
    """Write ``payload`` (see the module docstring) to ``folder/checkpoint.pt`` atomically,
    keeping the checkpoint it replaces as ``folder/checkpoint.previous.pt``.

    ``checkpoint.pt`` exists at every moment (the old one or the new one): the previous file
    is first given its second name, by a hard link (a copy where links are not possible).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **payload}
    current = folder / CHECKPOINT_NAME
    if current.is_file():
        _keep_as_previous(current, folder / PREVIOUS_NAME)
    return atomic_torch_save(full, current)


def _keep_as_previous(current: Path, previous: Path) -> None:
    partial = previous.with_name(f".{previous.name}.part")
    partial.unlink(missing_ok=True)
    try:
        os.link(current, partial)
    except OSError:  # no hard links on this file system
        shutil.copyfile(current, partial)
    os.replace(partial, previous)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a training checkpoint (a file, or a folder holding ``checkpoint.pt``).

    Raises :class:`CheckpointMismatchError` when the file is not a training checkpoint, and
    :class:`FileNotFoundError` when it does not exist.
    """
    from ..model.model_file import describe_load_error

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, foreign or unsafe files raise many types
        raise CheckpointReadError(
            f"cannot read training checkpoint {path}: {describe_load_error(err, path)}. Nothing was loaded; move "
            "the file away to start afresh"
        ) from err
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not an iris_nb training checkpoint (a model file written by Reverter.save? load it "
            "with Reverter.load and pass the model to train_reverter instead)"
        )
    if int(content.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointMismatchError(f"{path} has checkpoint version {content['format_version']}, newer than this "
                                      f"iris_nb reads ({CHECKPOINT_VERSION}); update iris_nb")
    return content


def check_compatible(checkpoint: dict, model, config, path="checkpoint") -> None:
    """Refuse (with :class:`CheckpointMismatchError`) a checkpoint of another model or of a
    config that differs in a field that changes the run (see
    :data:`~iris_nb.train.config.RESUMABLE_CHANGES` for what may change)."""
    from .config import TrainingConfig

    saved, current = checkpoint.get("model_signature", {}), model_signature(model)
    if saved.get("input_space") in ("T", "I", "vrho"):  # the codes of checkpoints before the rename
        saved = {**saved, "input_space": input_space_name(saved["input_space"])}
    problems = []
    for key in ("grid", "reduction", "input_space", "units"):
        if saved.get(key) != current[key]:
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, model {current[key]!r}")
    saved_shapes, shapes = saved.get("shapes", {}), current["shapes"]
    if saved_shapes != shapes:
        missing = sorted(set(shapes) - set(saved_shapes))
        extra = sorted(set(saved_shapes) - set(shapes))
        differ = sorted(k for k in set(shapes) & set(saved_shapes) if shapes[k] != saved_shapes[k])
        problems.append(f"architecture: {len(missing)} missing, {len(extra)} unexpected and {len(differ)} "
                        f"differently shaped weights (e.g. {(missing + extra + differ)[:3]})")
    if problems:
        raise CheckpointMismatchError(
            f"the checkpoint in {path} belongs to another model ({'; '.join(problems)}); use a new "
            "checkpoint_dir for this model, or build the model that wrote it"
        )
    saved_config = TrainingConfig.from_dict(checkpoint["config"])
    changes = saved_config.incompatible_changes(config)
    if changes:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changes.items())
        raise CheckpointMismatchError(
            f"the checkpoint in {path} was written with another training config ({listed}); resuming would "
            "not continue the same run. Use the checkpoint's config (TrainingConfig.from_dict(load_checkpoint("
            "path)['config'])) or a new checkpoint_dir"
        )


def open_checkpoint(checkpoint_dir, resume: bool, model, config):
    """The checkpoint folder and the state to resume from, ``(folder, state or None)``.

    Rank 0 reads the checkpoint and the other ranks receive it.  An unreadable
    ``checkpoint.pt`` (truncated, damaged) with a good ``checkpoint.previous.pt`` beside it
    resumes from the previous one, with a warning; the damaged file is renamed
    ``checkpoint.damaged.pt`` so that the next save does not keep it as the previous one.
    """
    from .distributed import is_distributed, rank

    if checkpoint_dir is None:
        return None, None
    folder = Path(checkpoint_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {folder} is a file; give a folder")
    state, error = None, None
    if rank() == 0:
        try:
            state = _read_for_resume(folder, resume, model, config)
        except (ValueError, OSError) as err:
            error = err
    if is_distributed():
        import torch.distributed as dist

        box = [state, None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        state, message = box
        if message is not None and error is None:
            raise ValueError(f"rank 0 refused the checkpoint: {message}")
    if error is not None:
        raise error
    return folder, state


def _read_for_resume(folder: Path, resume: bool, model, config) -> dict | None:
    path, previous = folder / CHECKPOINT_NAME, folder / PREVIOUS_NAME
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        return None
    if not resume:
        raise ValueError(f"{path} already holds a checkpoint and resume=False; pass resume=True to "
                         "continue it, choose another checkpoint_dir, or delete the file to start over")
    try:
        state = load_checkpoint(path)
    except CheckpointReadError as err:
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous)
        except CheckpointReadError:
            raise err from None
        check_compatible(state, model, config, previous)
        damaged = folder / "checkpoint.damaged.pt"
        os.replace(path, damaged)
        warnings.warn(f"{err}\nResuming from the checkpoint before it, {previous} (epoch {state['epoch']}, batch "
                      f"{state['batch']}); the damaged file was renamed {damaged.name}", RuntimeWarning, stacklevel=3)
        return state
    check_compatible(state, model, config, path)
    return state
