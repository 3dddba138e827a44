"""Torch datasets over dataset stores: seeded splits, unit conversion, concatenation.

::

    train = PreObservedDataset("pairs.zarr", split="train")          # 70 % of the samples
    valid = PreObservedDataset("pairs.zarr", split="validation")     # 20 %
    observation, target = train[0]       # (1, lon, velocity), (1, distance, lon), float32
    loader = DataLoader(train, batch_size=8, sampler=ChunkShuffleSampler(train), num_workers=2)

Each DataLoader worker opens the zarr store itself on first use and keeps a few decoded
chunks in a small cache, so reading in chunk order (:class:`ChunkShuffleSampler`) decodes
every chunk once per epoch.
"""

from __future__ import annotations

import bisect
import copy
import math
import os
from collections import OrderedDict
from pathlib import Path

import astropy.units as u
import numpy as np
import torch

from ..units import density_scale, parse_unit
from .layout import info_from_group, open_group
from .samplers import ChunkShuffleSampler

__all__ = ["PreObservedDataset", "ConcatDataset", "ChunkShuffleSampler", "split_indices",
           "observation_scale"]

SPLITS = ("train", "validation", "test")


def observation_scale(from_unit, to_unit) -> float:
    """Factor ``f`` with ``value_in_to = f * value_in_from`` for observations (K, mK, vrho units)."""
    src = parse_unit(from_unit, "observation")
    dst = parse_unit(to_unit, "observation")
    try:
        return float((1.0 * src).to_value(dst))
    except u.UnitConversionError:
        raise ValueError(f"cannot convert observations from {src} to {dst}: they measure different things "
                         "(e.g. a brightness temperature and a velocity-resolved column density); "
                         "use stores made with the same kind of observer") from None


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {type(value).__name__} {value!r}")
    if not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return float(value)


def split_indices(n: int, done: np.ndarray, split: str, validation_fraction: float = 0.2,
                  test_fraction: float = 0.1, seed: int = 0, where: str = "the store") -> np.ndarray:
    """Sample indices (ascending int64) of one split of a store of ``n`` samples.

    A permutation of ``range(n)`` drawn from ``seed`` is cut into test (first
    ``round(test_fraction * n)``), validation (next ``round(validation_fraction * n)``) and
    train (the rest); only indices in ``done`` are kept.  A sample's split therefore depends
    on ``(n, seed, fractions)`` only, not on how much of the store is written yet, and the
    three splits are disjoint and cover every done sample.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not known; choose one of {list(SPLITS)}")
    vf = _check_fraction("validation_fraction", validation_fraction)
    tf = _check_fraction("test_fraction", test_fraction)
    if vf + tf >= 1.0:
        raise ValueError(f"validation_fraction {vf:g} and test_fraction {tf:g} leave no training samples; "
                         "keep their sum below 1 (e.g. 0.2 and 0.1)")
    n_test = int(math.floor(tf * n + 0.5))
    n_val = int(math.floor(vf * n + 0.5))
    if split == "train" and n - n_test - n_val < 1:
        raise ValueError(f"validation_fraction {vf:g} and test_fraction {tf:g} leave no training samples "
                         f"of the {n} in {where}; lower them or write more samples")
    perm = np.random.default_rng(int(seed)).permutation(n)
    bounds = {"test": (0, n_test), "validation": (n_test, n_test + n_val), "train": (n_test + n_val, n)}
    lo, hi = bounds[split]
    chosen = np.intersect1d(perm[lo:hi], np.asarray(done, dtype=np.int64))
    if chosen.size == 0:
        fraction = {"test": "test_fraction", "validation": "validation_fraction"}.get(split)
        hint = (f"raise {fraction} (it selects {hi - lo} of {n} samples)" if fraction and hi - lo == 0
                else "write more of the store (write_dataset continues it)")
        raise ValueError(f"the {split} split of {where} is empty ({len(done)} of {n} samples are written); "
                         f"{hint}")
    return chosen.astype(np.int64)


def pair_unit_factors(store_units: dict, units) -> tuple[dict, float, float]:
    wanted = dict(store_units)
    if units is not None:
        if not isinstance(units, dict):
            raise TypeError(f"units must be a dict like {{'observation': 'mK', 'target': 'g/cm3'}}, "
                            f"got {type(units).__name__}")
        unknown = set(units) - {"observation", "target"}
        if unknown:
            raise ValueError(f"units has unknown keys {sorted(unknown)}; use 'observation' and/or 'target'")
        wanted.update({key: str(value) for key, value in units.items()})
    obs = observation_scale(store_units["observation"], wanted["observation"])
    tgt = density_scale(store_units["target"], wanted["target"])
    return wanted, obs, tgt


class PreObservedDataset(torch.utils.data.Dataset):
    """Training pairs of a dataset store, one split of them.

    Parameters
    ----------
    path:
        Store folder written by :func:`~iris_nb.data.store.write_dataset`.
    split:
        ``"train"``, ``"validation"`` or ``"test"`` (see :func:`split_indices`).
    validation_fraction, test_fraction, seed:
        The seeded split; the same values give the same split in every process.
    units:
        Optional ``{"observation": ..., "target": ...}`` astropy units to convert to
        (e.g. ``"mK"``, ``"g / cm3"``, ``"cm-3"`` for H2 number density); default the
        store's units.
    in_memory:
        Read this split's samples into memory once (fast epochs for stores that fit in RAM).
    cache_chunks:
        Decoded chunks each process keeps (reading in chunk order needs 1-2).

    Items are ``(observation, target)``: float32 tensors ``(1, lon, velocity)`` in
    ``units["observation"]`` and ``(1, distance, lon)`` in ``units["target"]`` (with
    ``velocity=True``, ``(2, distance, lon)``: the density, then the store's velocity map in
    km/s, for two-output models).  Only completely written chunks count.

    Attributes
    ----------
    grid, units, observer (description dict), reduction, indices (store sample index of each
    item), info (:class:`~iris_nb.data.layout.StoreInfo`), path, split.
    """

    def __init__(self, path, split: str = "train", validation_fraction: float = 0.2, test_fraction: float = 0.1,
                 seed: int = 0, units: dict | None = None, in_memory: bool = False, cache_chunks: int = 4,
                 velocity: bool = False):
        self.path = Path(path)
        group = open_group(self.path)
        self.info = info_from_group(group, self.path)
        self.split = split
        self.grid = self.info.grid
        self.reduction = self.info.reduction
        self.observer = self.info.observer
        self.chunk_size = self.info.chunk_size
        self.indices = split_indices(self.info.n_samples, self.info.done_samples(), split,
                                     validation_fraction, test_fraction, seed, where=repr(str(self.path)))
        self.units, self._obs_scale, self._target_scale = pair_unit_factors(self.info.units, units)
        if velocity and not self.info.velocity:
            raise ValueError(f"store {str(self.path)!r} holds no velocity maps; write it with "
                             "write_dataset(..., velocity=True) to train two-output models on it")
        self.velocity = bool(velocity)
        if isinstance(cache_chunks, bool) or not isinstance(cache_chunks, int) or cache_chunks < 1:
            raise ValueError(f"cache_chunks must be a positive integer, got {cache_chunks!r}")
        self.cache_chunks = cache_chunks
        self._arrays = None
        self._pid = None
        self._cache: OrderedDict = OrderedDict()
        self._memory = self._read_all(group) if in_memory else None

    # ------------------------------------------------------------------ reading
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"], state["_pid"], state["_cache"] = None, None, OrderedDict()
        return state

    def _open(self):
        if self._arrays is None or self._pid != os.getpid():
            group = open_group(self.path)
            self._arrays = (group["observation"], group["target"]) + (
                (group["target_velocity"],) if self.velocity else ())
            self._pid = os.getpid()
            self._cache = OrderedDict()
        return self._arrays

    def _chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        block = self._cache.get(chunk)
        if block is None:
            arrays = self._open()
            start = chunk * self.chunk_size
            stop = min(self.info.n_samples, start + self.chunk_size)
            block = tuple(array[start:stop] for array in arrays)
            self._cache[chunk] = block
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(chunk)
        return block

    def _read_all(self, group) -> tuple:
        arrays = [group["observation"], group["target"]] + ([group["target_velocity"]] if self.velocity else [])
        out = [np.empty((len(self.indices),) + a.shape[1:], dtype=a.dtype) for a in arrays]
        chunks = self.indices // self.chunk_size
        for chunk in np.unique(chunks):
            start = int(chunk) * self.chunk_size
            stop = min(self.info.n_samples, start + self.chunk_size)
            rows = np.flatnonzero(chunks == chunk)
            local = self.indices[rows] - start
            for array, values in zip(arrays, out):
                values[rows] = array[start:stop][local]
        return tuple(out)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``item``: observation ``(1, lon, velocity)``, target ``(1, distance, lon)``, float32."""
        if isinstance(item, torch.Tensor):
            item = int(item)
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} is out of range for a split of {len(self)} samples")
        item = item % len(self)
        if self._memory is not None:
            values = [array[item] for array in self._memory]
        else:
            sample = int(self.indices[item])
            chunk = sample // self.chunk_size
            block = self._chunk(chunk)
            row = sample - chunk * self.chunk_size
            values = [array[row] for array in block]
        observation = torch.tensor(values[0], dtype=torch.float32)
        target = torch.tensor(values[1], dtype=torch.float32)
        if self._obs_scale != 1.0:
            observation.mul_(self._obs_scale)
        if self._target_scale != 1.0:
            target.mul_(self._target_scale)
        if self.velocity:  # (2, distance, lon): density, then velocity in km/s
            return observation.unsqueeze(0), torch.stack([target, torch.tensor(values[2], dtype=torch.float32)])
        return observation.unsqueeze(0), target.unsqueeze(0)

    # ------------------------------------------------------------------ helpers
    def chunk_ids(self) -> np.ndarray:
        """Store chunk of each item, ``(len,)`` int64 (used by :class:`ChunkShuffleSampler`)."""
        return self.indices // self.chunk_size

    def with_units(self, units: dict) -> "PreObservedDataset":
        """The same split, with items converted to ``units`` (a shallow copy)."""
        other = copy.copy(self)
        other.units, other._obs_scale, other._target_scale = pair_unit_factors(self.info.units, units)
        other._cache = OrderedDict()
        return other

    def __repr__(self) -> str:
        return (f"PreObservedDataset({str(self.path)!r}, split={self.split!r}: {len(self)} of "
                f"{self.info.n_samples} samples, observation (1, {self.grid.lon.steps}, "
                f"{self.grid.velocity.steps}) in {self.units['observation']!r}, target "
                f"(1, {self.grid.distance.steps}, {self.grid.lon.steps}) in {self.units['target']!r})")


class ConcatDataset(torch.utils.data.ConcatDataset):
    """Several pair datasets as one, in the units of the first.

    ``datasets`` are :class:`PreObservedDataset` s (or other pair datasets with ``grid``,
    ``units``, ``reduction`` and ``with_units``, such as
    :func:`~iris_nb.data.reference.read_iris_dataset`); all must share the grid and the
    latitude reduction.  Observations are converted with astropy (e.g. K vs mK), targets
    with :func:`iris_nb.units.density_scale`.
    """

    def __init__(self, datasets):
        datasets = list(datasets)
        if not datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        for i, dataset in enumerate(datasets):
            missing = [a for a in ("grid", "units", "reduction", "with_units") if not hasattr(dataset, a)]
            if missing:
                raise TypeError(f"dataset {i} ({type(dataset).__name__}) lacks {missing}; concatenate "
                                "PreObservedDataset or read_iris_dataset objects")
        first = datasets[0]
        for i, dataset in enumerate(datasets[1:], start=1):
            if dataset.grid != first.grid:
                raise ValueError(f"dataset {i} is on {dataset.grid!r} but dataset 0 is on {first.grid!r}; "
                                 "concatenate stores made on the same grid")
            if dataset.reduction != first.reduction:
                raise ValueError(f"dataset {i} was reduced over latitude with {dataset.reduction!r} but dataset 0 "
                                 f"with {first.reduction!r}; concatenate stores with the same reduction")
        converted = [first] + [d.with_units(first.units) for d in datasets[1:]]
        super().__init__(converted)
        self.grid = first.grid
        self.units = dict(first.units)
        self.reduction = first.reduction

    def chunk_ids(self) -> np.ndarray:
        """Chunk id of each item, distinct across the member datasets."""
        out, offset = [], 0
        for dataset in self.datasets:
            ids = (np.asarray(dataset.chunk_ids(), dtype=np.int64) if hasattr(dataset, "chunk_ids")
                   else np.arange(len(dataset), dtype=np.int64))
            out.append(ids + offset)
            offset += int(ids.max()) + 1 if ids.size else 0
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def with_units(self, units: dict) -> "ConcatDataset":
        """The same concatenation converted to ``units``."""
        return ConcatDataset([d.with_units(units) for d in self.datasets])

    def dataset_of(self, item: int) -> int:
        """Index of the member dataset that holds ``item``."""
        return bisect.bisect_right(self.cumulative_sizes, item)
