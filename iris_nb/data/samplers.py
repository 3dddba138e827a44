"""A chunk-aware random sampler for datasets read from chunked stores.

Samples of a store are independent draws (each has its own gas seed), so visiting them
chunk by chunk, in a random chunk order and a random order inside each chunk, is as good a
shuffle for training as a full permutation, while each chunk is decoded once per epoch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ChunkShuffleSampler", "chunk_ids_of"]


def chunk_ids_of(dataset) -> np.ndarray | None:
    """Store chunk of each item of ``dataset`` (``(len,)`` int64), looking through
    ``torch.utils.data.Subset``; ``None`` when the dataset is not read from chunks."""
    if isinstance(dataset, torch.utils.data.Subset):
        parent = chunk_ids_of(dataset.dataset)
        return None if parent is None else parent[np.asarray(dataset.indices, dtype=np.int64)]
    chunk_ids = getattr(dataset, "chunk_ids", None)
    return np.asarray(chunk_ids(), dtype=np.int64) if callable(chunk_ids) else None


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class ChunkShuffleSampler(torch.utils.data.Sampler):
    """Random item order that reads a chunked store one chunk at a time.

    Parameters
    ----------
    data_source:
        A dataset with ``chunk_ids()`` (``(len,)`` chunk of each item), e.g.
        :class:`~iris_nb.data.datasets.PreObservedDataset`, its ``ConcatDataset`` or a
        ``Subset`` of either; any other dataset is treated as one item per chunk (a plain
        shuffle).
    seed:
        Seed of the order; epoch ``e`` uses ``(seed, e)``.
    num_workers, batch_size:
        The DataLoader's; batch ``k`` goes to worker ``k % num_workers``, so the order is
        built from ``num_workers`` streams of whole chunks interleaved batch by batch, and no
        two workers decode the same chunk.
    num_replicas, rank:
        For distributed training: each rank gets a contiguous, equally long share of the
        epoch (wrapping around to pad).
    strided:
        Share the epoch as ``DistributedSampler`` does instead: rank ``r`` gets items ``r,
        r + num_replicas, ...`` of the (padded) order, so ``num_replicas`` ranks with batch
        ``b`` see together the samples of one process with batch ``num_replicas * b``, and
        all ranks read the same chunk at the same time.
    shuffle:
        False keeps store order (chunks and items ascending).

    ``set_epoch(e)`` fixes the epoch; otherwise each ``iter()`` starts the next epoch.
    """

    def __init__(self, data_source, seed: int = 0, num_workers: int = 0, batch_size: int = 1,
                 num_replicas: int = 1, rank: int = 0, shuffle: bool = True, strided: bool = False):
        ids = chunk_ids_of(data_source)
        ids = np.arange(len(data_source)) if ids is None else ids
        if ids.shape != (len(data_source),):
            raise ValueError(f"chunk_ids() gave shape {ids.shape} for a dataset of {len(data_source)} items")
        self.seed = _positive_int("seed", seed, 0)
        self.num_workers = _positive_int("num_workers", num_workers, 0)
        self.batch_size = _positive_int("batch_size", batch_size, 1)
        self.num_replicas = _positive_int("num_replicas", num_replicas, 1)
        self.rank = _positive_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank {rank} must be below num_replicas {num_replicas}")
        self.shuffle = bool(shuffle)
        self.strided = bool(strided)
        self.epoch = 0
        self._epoch_fixed = False
        self._ids = ids
        order = np.argsort(ids, kind="stable")
        self._groups = np.split(order, np.flatnonzero(np.diff(ids[order])) + 1) if ids.size else []

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` for the next iterations."""
        self.epoch = _positive_int("epoch", epoch, 0)
        self._epoch_fixed = True

    def __len__(self) -> int:
        total = sum(len(g) for g in self._groups)
        return math.ceil(total / self.num_replicas) if total else 0

    def _order(self, rng) -> np.ndarray:
        if not self._groups:
            return np.zeros(0, dtype=np.int64)
        if not self.shuffle:
            return np.concatenate(self._groups)
        chunks = rng.permutation(len(self._groups))
        return np.concatenate([rng.permutation(self._groups[c]) for c in chunks])

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self._epoch_fixed:
            self.epoch += 1
        order = self._order(rng)
        per_rank = len(self)
        if per_rank == 0:
            return iter(())
        padded = np.resize(order, per_rank * self.num_replicas)
        if self.strided:
            mine = padded[self.rank::self.num_replicas]
        else:
            mine = padded[self.rank * per_rank:(self.rank + 1) * per_rank]
        if self.num_workers > 1:
            mine = self._interleave(mine)
        return iter(int(i) for i in mine)

    def _interleave(self, order: np.ndarray) -> np.ndarray:
        """Cut the chunk-ordered epoch into ``num_workers`` contiguous streams of whole batches
        (as equal as possible) and alternate them batch by batch, matching the DataLoader's
        round-robin dispatch: each worker reads its own chunks, and at most
        ``num_workers - 1`` chunks (at stream boundaries) are read by two workers."""
        n_batches = math.ceil(len(order) / self.batch_size)
        pieces = [p for p in np.array_split(np.arange(n_batches), self.num_workers) if p.size]
        batches = []
        for piece in pieces:
            stream = order[piece[0] * self.batch_size:(piece[-1] + 1) * self.batch_size]
            batches.append([stream[i:i + self.batch_size] for i in range(0, len(stream), self.batch_size)])
        return np.concatenate([b[r] for r in range(len(batches[0])) for b in batches if r < len(b)])
