"""Checks that ``train_reverter`` runs before any training (config, callbacks, model,
checkpoint folder), and small environment helpers."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import TrainingConfig
from .distributed import is_distributed, rank

__all__ = ["as_config", "check_callbacks", "check_model", "open_checkpoint", "env_world_size",
           "no_buffer_broadcast"]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or unreadable)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def no_buffer_broadcast() -> dict:
    """DistributedDataParallel keyword that turns off the per-step buffer broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # newer torch; buffers are still synced once at start
    return {"broadcast_buffers": False}


def as_config(config) -> TrainingConfig:
    """A TrainingConfig from ``None`` (paper defaults), a dict or a config."""
    if config is None:
        return TrainingConfig()
    if isinstance(config, dict):
        return TrainingConfig.from_dict(config)
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig (or a dict of its fields), got {type(config).__name__}")
    return config


def check_callbacks(callbacks) -> tuple:
    """A tuple of callables (one callable alone is accepted too)."""
    if callbacks is None:
        return ()
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables cb(event, info), got {type(callback).__name__}")
    return callbacks


def check_model(model) -> None:
    """Refuse anything but a trainable Reverter."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "grid") or not hasattr(model, "input_scale"):
        raise TypeError(f"train_reverter needs an iris_nb Reverter, got {type(model).__name__}")
    if getattr(model, "inference_only", False):
        raise TypeError("this model was made by optimize_for_inference and cannot be trained; train the original")


def open_checkpoint(checkpoint_dir, resume: bool, model, config):
    """The checkpoint folder and the state to resume from (rank 0 reads, others receive)."""
    if checkpoint_dir is None:
        return None, None
    folder = Path(checkpoint_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {folder} is a file; give a folder")
    state, error = None, None
    if rank() == 0:
        path = folder / ckpt.CHECKPOINT_NAME
        try:
            if path.exists():
                if not resume:
                    raise ValueError(f"{path} already holds a checkpoint and resume=False; pass resume=True to "
                                     "continue it, choose another checkpoint_dir, or delete the file to start over")
                state = ckpt.load_checkpoint(path)
                ckpt.check_compatible(state, model, config, path)
            else:
                folder.mkdir(parents=True, exist_ok=True)
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
