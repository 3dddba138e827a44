"""``TrainingResult``: what a training run returns (and what its history looks like), and
``result.json``, the file in which :func:`~iris_nb.train.run.run_training` leaves it for
:func:`~iris_nb.train.launch.launch` and later readers (:func:`write_result`, :func:`read_result`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .._files import write_text_atomic
from .config import TrainingConfig

__all__ = ["TrainingResult", "RESULT_NAME", "read_result", "write_result"]

RESULT_FORMAT = "iris_nb.run_result"
RESULT_NAME = "result.json"


@dataclasses.dataclass
class TrainingResult:
    """Outcome of :func:`~iris_nb.train.loop.train_reverter` (and of every entry point built on it).

    Attributes
    ----------
    model:
        The trained :class:`~iris_nb.model.Reverter` (eval mode, on the training device);
        ``None`` after :meth:`from_dict` unless one is given.
    train_losses, validation_losses:
        One value per completed epoch, dimensionless (the configured loss; training loss
        averaged over the epoch's samples, validation loss after the epoch).
        ``validation_losses`` holds ``None`` when there is no validation split.
    learning_rates:
        Learning rate used during each epoch.
    epoch_times:
        Wall-clock seconds of each epoch (training plus validation).
    peak_memory:
        Peak memory in bytes: CUDA ``max_memory_allocated`` on a GPU, the process's peak
        resident set size on CPU.
    stopped:
        ``True`` when a callback stopped the run before ``config.epochs`` epochs.
    config:
        The :class:`~iris_nb.train.config.TrainingConfig` of the run.
    history:
        Everything else per epoch: ``batch_losses`` (list per epoch), ``updates``
        (optimiser steps so far), ``samples_seen``, ``world_size``...
    checkpoint_dir:
        Folder of ``checkpoint.pt`` and ``model.pt`` (``None`` when not checkpointing).
    """

    model: object
    train_losses: list
    validation_losses: list
    learning_rates: list
    epoch_times: list
    peak_memory: int
    stopped: bool
    config: TrainingConfig
    history: dict
    checkpoint_dir: str | None = None

    @property
    def epochs_completed(self) -> int:
        """Number of completed epochs."""
        return len(self.train_losses)

    def to_dict(self) -> dict:
        """JSON-ready dict of everything but the model."""
        return {
            "train_losses": list(self.train_losses),
            "validation_losses": list(self.validation_losses),
            "learning_rates": list(self.learning_rates),
            "epoch_times": list(self.epoch_times),
            "peak_memory": int(self.peak_memory),
            "stopped": bool(self.stopped),
            "config": self.config.to_dict(),
            "history": self.history,
            "checkpoint_dir": self.checkpoint_dir,
        }

    @classmethod
    def from_dict(cls, data: dict, model=None) -> "TrainingResult":
        """Rebuild a result from :meth:`to_dict` output (attach ``model`` if given)."""
        fields = dict(data)
        fields["config"] = TrainingConfig.from_dict(fields["config"])
        return cls(model=model, **fields)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    def __repr__(self) -> str:
        last = (f", last train loss {self.train_losses[-1]:.4g}" if self.train_losses else "")
        val = self.validation_losses[-1] if self.validation_losses else None
        last += f", validation {val:.4g}" if val is not None else ""
        return (f"TrainingResult({self.epochs_completed}/{self.config.epochs} epochs{last}, "
                f"stopped={self.stopped})")


def write_result(result: TrainingResult, run, device) -> Path:
    """Write ``<run.checkpoint_dir>/result.json`` atomically: the result's histories, the
    :class:`~iris_nb.train.run.RunConfig`, the world size and the device."""
    from . import distributed

    payload = {"format": RESULT_FORMAT, "result": result.to_dict(), "run": run.to_dict(),
               "world_size": distributed.world_size(), "device": str(device)}
    return write_text_atomic(Path(run.checkpoint_dir) / RESULT_NAME, json.dumps(payload, indent=2))


def read_result(path, model=None) -> TrainingResult:
    """The ``TrainingResult`` stored in ``result.json`` at ``path``, with ``model`` attached."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not complete JSON ({err}); it was not written by run_training, or was cut "
                         "short; run the training again (it resumes from its checkpoint)") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a run result written by run_training (format {found!r})")
    return TrainingResult.from_dict(data["result"], model=model)
