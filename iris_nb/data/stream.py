"""``FieldStream``: fresh gas fields drawn and observed on the training device, batch by batch.

Given to :func:`~iris_nb.train.loop.train_reverter` with an ``observer``, a stream makes
every training batch on the training device: the batched torch gas model
(:class:`~iris_nb.sim.cmz_model.CMZModel`) draws the fields of the batch's seeds, the observer
observes them and the model's latitude reduction makes the PV images.  Nothing is written to
disk and no CPU worker is involved, so a GPU is fed at its own speed::

    stream = FieldStream(grid, n=100_000, seed=0, replay=2)
    train_reverter(model, stream, observer=LineObserver(grid), litter=litter, noise=noise,
                   config=TrainingConfig(epochs=1, device="cuda"), checkpoint_dir="run")

Reproducible and resumable
--------------------------
Item ``i`` of a stream is a *field id*; field ``f`` is the gas of seed
``sample_seed(seed, f)`` (the seed ``write_dataset`` and ``GasModelDataset`` give sample
``f``), and :class:`~iris_nb.sim.cmz_model.CMZModel` makes the same field for the same seed
on the same kind of device whatever the batch.  The training order comes from the usual
seeded samplers and the noise and litter from per-batch generators, so a run stopped and
resumed from its checkpoint ends with the same weights as an uninterrupted one.

Replay
------
When drawing a batch takes longer than a training step, ``replay=k`` uses every fresh batch
of fields ``k`` times in a row (consecutive steps, each with its own noise and litter draws):
the stream holds ``n * k`` items, the :class:`ReplaySampler` orders them, and the trainer
keeps the last batch's clean PV images and targets (a replay buffer of one batch on the
device, a few MB) instead of drawing again.  ``TrainingResult.history`` counts
``fields_drawn`` and ``fields_reused``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..grids import Grid, get_grid
from .store import sample_seed

__all__ = ["FieldStream", "ReplaySampler"]


class FieldStream(Dataset):
    """Field ids of fresh gas fields, drawn on demand on any device (see the module).

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` (or preset name) of the fields.
    n:
        Number of distinct fields (the epoch size before replay).
    seed:
        Stream seed (int >= 0): field ``f`` has the gas seed ``sample_seed(seed, f)``.
    model:
        A :class:`~iris_nb.sim.cmz_model.CMZModel` on ``grid`` (default ``CMZModel(grid)``:
        the default family); give ``CMZModel(grid, **fixed)`` to hold parameters fixed.
    replay:
        Integer >= 1: times each fresh field is used in a row, with independent noise and
        litter (default 1: every training sample is a new field).

    Items are 0-d int64 tensors (the field ids); :meth:`draw` turns a batch of ids into the
    observers' dict of ``(B, distance, lon, lat)`` tensors.
    """

    def __init__(self, grid: Grid | str, n: int, seed: int = 0, model=None, replay: int = 1, *, _fields=None):
        from ..sim.cmz_model import CMZModel

        self.grid = get_grid(grid)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"FieldStream n must be a positive integer (number of fields), got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"FieldStream seed must be a non-negative integer, got {seed!r}")
        if isinstance(replay, bool) or not isinstance(replay, numbers.Integral):
            raise TypeError(f"replay must be an integer >= 1 (uses of each fresh field), got {replay!r}")
        if replay < 1:
            raise ValueError(f"replay={replay}: each field must be used at least once; give replay >= 1")
        if model is None:
            model = CMZModel(self.grid)
        if not isinstance(model, CMZModel):
            raise TypeError(f"FieldStream model must be an iris_nb.sim.CMZModel (the batched torch gas model), got "
                            f"{type(model).__name__}; for a numpy gas model use GasModelDataset")
        if model.grid != self.grid:
            raise ValueError(f"the gas model is on grid {model.grid.name!r} but the stream on {self.grid.name!r}; "
                             "build CMZModel with the stream's grid")
        self.n, self.seed, self.model, self.replay = int(n), int(seed), model, int(replay)
        self.fields = np.arange(self.n, dtype=np.int64) if _fields is None else np.asarray(_fields, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.fields) * self.replay

    def __repr__(self) -> str:
        extra = f", replay={self.replay}" if self.replay > 1 else ""
        part = "" if len(self.fields) == self.n else f", {len(self.fields)} of its fields"
        return f"FieldStream({self.model!r}, n={self.n}, seed={self.seed}{extra}{part})"

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, bool) or not isinstance(index, (numbers.Integral, np.integer)):
            raise TypeError(f"FieldStream index must be an integer, got {type(index).__name__}")
        i = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for a FieldStream of {len(self)} items")
        return torch.tensor(int(self.fields[i // self.replay]))

    def sample_seed(self, field: int) -> int:
        """Gas seed of field id ``field``."""
        return sample_seed(self.seed, int(field))

    def draw(self, fields, device=None) -> dict:
        """The gas of the field ids ``fields`` (a batch of items) as ``(B, distance, lon, lat)`` tensors on ``device``."""
        ids = torch.as_tensor(fields).reshape(-1).tolist()
        return self.model.sample([self.sample_seed(f) for f in ids], device=device)

    def split(self, fraction: float, seed: int) -> tuple["FieldStream", "FieldStream | None"]:
        """Seeded ``(train, validation)`` split by field (a field never lands in both); the
        validation stream has ``replay=1``.  ``fraction`` 0 gives ``(self, None)``."""
        if fraction <= 0:
            return self, None
        m = len(self.fields)
        n_val = int(round(fraction * m))
        if n_val == 0 or n_val >= m:
            raise ValueError(f"validation_fraction={fraction} of {m} fields leaves an empty "
                             f"{'validation' if n_val == 0 else 'training'} split; use more fields or another fraction")
        order = torch.randperm(m, generator=torch.Generator().manual_seed(int(seed))).numpy()
        train, val = np.sort(self.fields[order[n_val:]]), np.sort(self.fields[order[:n_val]])
        return (FieldStream(self.grid, self.n, self.seed, self.model, self.replay, _fields=train),
                FieldStream(self.grid, self.n, self.seed, self.model, 1, _fields=val))


def find_stream(dataset) -> FieldStream | None:
    """The :class:`FieldStream` ``dataset`` is or wraps (through ``Subset``), or ``None``."""
    while dataset is not None:
        if isinstance(dataset, FieldStream):
            return dataset
        dataset = getattr(dataset, "dataset", None) if isinstance(dataset, torch.utils.data.Subset) else None
    return None


class ReplaySampler(Sampler):
    """Training order of a :class:`FieldStream` with replay: batches of fresh fields, each batch ``k`` times.

    Every epoch the stream's fields are shuffled (seeded by ``seed`` and the epoch), padded
    to a multiple of ``num_replicas`` by repeating the first ones (as ``DistributedSampler``
    does) and dealt out to the ranks; each rank's fields are grouped into batches of
    ``batch_size`` (a short last group is filled up with the rank's first fields, so batches
    stay aligned) and every group is yielded ``replay`` times in a row (item indices of the
    stream): consecutive batches hold the same fields.
    """

    def __init__(self, stream: FieldStream, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.stream, self.batch_size, self.seed = stream, int(batch_size), int(seed)
        self.num_replicas, self.rank, self.epoch = int(num_replicas), int(rank), 0
        self.per_rank = int(math.ceil(len(stream.fields) / self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(math.ceil(self.per_rank / self.batch_size)) * self.batch_size * self.stream.replay

    def __iter__(self):
        m, k, b = len(self.stream.fields), self.stream.replay, self.batch_size
        order = torch.randperm(m, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        total = self.per_rank * self.num_replicas
        order = (order * int(math.ceil(total / m)))[:total]
        mine = order[self.rank:total:self.num_replicas]
        mine = mine + (mine * b)[:(-len(mine)) % b]  # a last short group is filled up: batches stay aligned
        for start in range(0, len(mine), b):
            group = mine[start:start + b]
            for r in range(k):
                yield from (position * k + r for position in group)
