"""Datasets of fields made on the fly: ``GasModelDataset``, and pairs observed from it in memory.

``GasModelDataset`` holds physical fields drawn by a gas model on demand, no store needed.

Item ``i`` is the gas model's field for seed ``sample_seed(seed, i)`` (the same per-sample
seed as :func:`iris_nb.data.store.write_dataset`, so a store written with ``seed`` holds
the same gas as this dataset), as a dict of ``(distance, lon, lat)`` float32 tensors.
Given to :func:`~iris_nb.train.loop.train_reverter` with an ``observer``, each batch is
observed on the training device on the fly: a GPU trains on as many fresh fields as ``n``
asks for (e.g. ``n=100_000`` and ``epochs=1``) without writing anything to disk.
"""

from __future__ import annotations

import numbers

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..cube import REDUCTIONS
from .._progress import progress_iter
from ..grids import Grid, get_grid
from .store import sample_seed

__all__ = ["GasModelDataset", "InMemoryPairs", "observed_pairs"]


def _default_model():
    from ..sim.cmz import make_cmz

    return make_cmz


def _field_tensors(field) -> dict:
    from ..sim.fields import field_tensors

    return field_tensors(field)


class GasModelDataset(Dataset):
    """Map-style dataset of gas-model fields: item ``i`` is a dict of field tensors.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` (or preset name) to draw the fields on.
    n:
        Number of samples (items ``0 .. n-1``).
    model:
        Gas model ``model(grid, seed=int, **model_kwargs) -> xarray.Dataset`` (a physical
        field, DESIGN.md section 3); default :func:`iris_nb.sim.cmz.make_cmz`.  Must be a
        module-level function when DataLoader workers are used (it is pickled).
    seed:
        Dataset seed; sample ``i`` uses the gas seed ``sample_seed(seed, i)``.
    model_kwargs:
        Fixed keyword arguments for ``model``.
    augment:
        A :class:`~iris_nb.sim.augment.FieldAugmentation` (or a dict of its fields) applied to
        every field with the seed ``augmentation_seed(sample_seed(seed, i))``, as
        :func:`~iris_nb.data.store.write_dataset` does (a store written with the same ``seed``
        and ``augment`` holds the same gas); default None.

    Items: ``{"density": (distance, lon, lat) solMass/pc3, "velocity_los": km/s,
    "temperature": K, "x_h2", "x_tracer": dimensionless[, "temperature_dust": K]}``,
    float32 CPU tensors; the default collate stacks them to ``(B, distance, lon, lat)``.
    The same ``(seed, i)`` always gives the same field.
    """

    def __init__(self, grid: Grid | str, n: int, model=None, seed: int = 0, model_kwargs: dict | None = None,
                 augment=None):
        from ..sim.augment import as_augmentation

        self.grid = get_grid(grid)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"GasModelDataset n must be a positive integer (number of samples), got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"GasModelDataset seed must be a non-negative integer, got {seed!r}")
        if model is not None and not callable(model):
            raise TypeError(f"model must be a gas model function model(grid, seed=..., **kwargs), got "
                            f"{type(model).__name__}")
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict of keyword arguments, got {type(model_kwargs).__name__}")
        self.n = int(n)
        self.seed = int(seed)
        self.model = model if model is not None else _default_model()
        self.model_kwargs = dict(model_kwargs or {})
        self.augment = as_augmentation(augment)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        extra = "" if self.augment is None else f", augment={self.augment!r}"
        return f"GasModelDataset({name}, n={self.n}, seed={self.seed}, grid={self.grid.name!r}{extra})"

    def _index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"GasModelDataset index must be an integer, got {type(index).__name__}")
        i = int(index) + (self.n if index < 0 else 0)
        if not 0 <= i < self.n:
            raise IndexError(f"index {index} out of range for a GasModelDataset of {self.n} samples")
        return i

    def sample_seed(self, index: int) -> int:
        """Gas seed of item ``index``."""
        return sample_seed(self.seed, self._index(index))

    def field(self, index: int):
        """Item ``index`` as an xarray field Dataset (distance, lon, lat), augmented if asked."""
        seed = self.sample_seed(index)
        field = self.model(self.grid, seed=seed, **self.model_kwargs)
        import xarray as xr

        if not isinstance(field, xr.Dataset):
            raise TypeError(f"the gas model returned a {type(field).__name__}, expected an xarray.Dataset field")
        if self.augment is not None:
            from ..sim.augment import augmentation_seed

            field = self.augment(field, seed=augmentation_seed(seed))
        return field

    def __getitem__(self, index) -> dict:
        tensors = _field_tensors(self.field(index))
        return {name: value[0].to(torch.float32).contiguous() for name, value in tensors.items()}


class InMemoryPairs(TensorDataset):
    """Observed pairs held in memory: items ``(observation (1, lon, v), target (1, distance, lon))``.

    Attributes ``grid``, ``reduction`` and ``units`` (``{"observation": observer unit,
    "target": "solMass / pc3"}``) let ``train_reverter`` check the grid and convert the pairs
    to a model's units, as for a store's ``PreObservedDataset``.
    """

    def __init__(self, observations: torch.Tensor, targets: torch.Tensor, grid: Grid, units: dict,
                 reduction: str = "mean"):
        super().__init__(observations, targets)
        self.grid = grid
        self.units = dict(units)
        self.reduction = reduction


def observed_pairs(fields: Dataset, observer, reduction: str = "mean", batch_size: int = 8, device=None,
                   progress: bool = False, num_workers: int = 0, velocity: bool = False) -> InMemoryPairs:
    """Observe every field of ``fields`` once and keep the pairs in memory (no store).

    ``fields`` yields dicts of ``(distance, lon, lat)`` tensors (e.g. a
    :class:`GasModelDataset`); ``observer`` is an observer module (``SimpleObserver``,
    ``LineObserver``) on the same grid, run on ``device`` (default CPU) in batches of
    ``batch_size``.  Observations are the latitude ``reduction`` (``"mean"`` or ``"max"``) of
    the cubes, ``(n, 1, lon, v)`` in ``observer.units``; targets the latitude-averaged H2 mass
    density ``(n, 1, distance, lon)`` in solMass / pc3.  Both float32 on the CPU.
    ``num_workers`` DataLoader processes draw the fields in parallel (the gas model runs on
    the CPU; with a GPU observer this is what keeps the GPU busy).  ``fields`` may also be a
    :class:`~iris_nb.data.stream.FieldStream` (drawn on ``device`` by its torch gas model).
    ``velocity=True`` adds the H2-weighted velocity map (km/s) as a second target channel,
    ``(n, 2, distance, lon)``, for two-output models.
    """
    from ..sim.columnize import columnize_tensors, columnize_velocity_tensors
    from .stream import FieldStream

    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
    grid = getattr(fields, "grid", None) or getattr(observer, "grid", None)
    observer_grid = getattr(observer, "grid", None)
    if observer_grid is not None and grid is not None and observer_grid != grid:
        raise ValueError(f"the observer is on grid {observer_grid!r} but the fields on {grid!r}; use one grid")
    device = torch.device(device or "cpu")
    observer = observer.to(device)
    observations, targets = [], []
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
    stream = fields if isinstance(fields, FieldStream) else None
    loader = DataLoader(fields, batch_size=batch_size, shuffle=False,
                        num_workers=0 if stream is not None else int(num_workers))
    if progress:
        loader = progress_iter(loader, len(loader) if hasattr(loader.dataset, "__len__") else None, "observing")
    with torch.no_grad():
        for batch in loader:
            batch = stream.draw(batch, device) if stream is not None else {k: v.to(device) for k, v in batch.items()}
            cube = observer(batch)  # (B, lon, lat, v)
            pv = cube.mean(dim=2) if reduction == "mean" else cube.amax(dim=2)
            observations.append(pv.unsqueeze(1).float().cpu())
            target = columnize_tensors(batch).unsqueeze(1)
            if velocity:
                target = torch.cat([target, columnize_velocity_tensors(batch).unsqueeze(1)], dim=1)
            targets.append(target.float().cpu())
    units = {"observation": str(getattr(observer, "units", "")), "target": "solMass / pc3"}
    return InMemoryPairs(torch.cat(observations), torch.cat(targets), grid, units, reduction)
