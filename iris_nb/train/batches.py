"""From dataset items to network inputs and targets, on the training device.

Two kinds of datasets feed training (see :func:`~iris_nb.train.loop.train_reverter`):

* **pairs**: items ``(observation (1, lon, v), target (1, distance, lon))`` float32, already
  in the model's input and density units (e.g. ``PreObservedDataset`` or a
  ``TensorDataset``);
* **fields**: items are dicts of ``(distance, lon, lat)`` tensors (a physical field in the
  units of :func:`iris_nb.sim.fields.field_tensors`); an observer turns each batch into PPV
  cubes on the training device, the model's latitude reduction makes PV images, and the
  target is the latitude-averaged H2 mass density (``columnize_tensors``).

Noise and litter are applied to the inputs only, with a ``torch.Generator`` that
:func:`batch_generator` derives from ``(seed, stream, epoch, batch, rank)``, so the draws of
every batch are reproducible and independent of how the run was interrupted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler, Sampler, Subset

from .. import units as _units
from ..data.stream import FieldStream, find_stream

__all__ = ["BatchPreparer", "IndexList", "inspect_dataset", "split_dataset", "batch_generator", "dataset_grid",
           "n_batches", "dataset_units", "pair_scales", "training_sampler"]

STREAMS = {"train": 0, "validation": 1, "test": 2}


def batch_generator(seed: int, stream: str, epoch: int, batch: int, rank: int = 0,
                    device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from ``(seed, stream, epoch, batch, rank)`` alone."""
    entropy = [int(seed), STREAMS[stream], int(epoch), int(batch), int(rank)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    value = (int(state[0]) << 32 | int(state[1])) % (2**63)
    return torch.Generator(device=device).manual_seed(value)


def _declared(dataset, accept):
    """The first attribute value ``accept(dataset)`` finds on ``dataset`` or, through ``Subset``
    and ``ConcatDataset`` (its first part), on the dataset it wraps; ``None`` if none."""
    while dataset is not None:
        value = accept(dataset)
        if value is not None:
            return value
        if isinstance(dataset, Subset):
            dataset = dataset.dataset
        elif isinstance(dataset, ConcatDataset) and dataset.datasets:
            dataset = dataset.datasets[0]
        else:
            return None
    return None


def dataset_grid(dataset):
    """The :class:`~iris_nb.grids.Grid` a dataset declares (``.grid``, looking through
    ``Subset`` and ``ConcatDataset``), or ``None``."""
    return _declared(dataset, lambda item: getattr(item, "grid", None))


def _check_len(dataset, what: str) -> int:
    if not isinstance(dataset, Dataset) and not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{what} must be a torch Dataset (items by index), got {type(dataset).__name__}")
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(f"{what} must have a length (a map-style Dataset), got {type(dataset).__name__}") from None


def inspect_dataset(dataset, model, observer=None, what: str = "dataset") -> str:
    """Check ``dataset`` against ``model`` before any training; return ``"pairs"``, ``"fields"``
    or ``"stream"`` (a :class:`~iris_nb.data.stream.FieldStream`, drawn on the device).

    Raises ``ValueError`` for an empty dataset, another grid (declared ``.grid`` or item
    shapes), non-finite values in the first item, a field dataset without an observer, or a
    pair dataset with one.
    """
    n = _check_len(dataset, what)
    if n == 0:
        raise ValueError(f"{what} is empty; give at least one sample")
    grid = model.grid
    stream = find_stream(dataset)
    if stream is not None:
        if stream.grid != grid:
            raise ValueError(f"{what} is a FieldStream on grid {stream.grid!r} but the model is on {grid!r}; build the "
                             "stream on the model's grid")
        _check_observer(observer, grid, what)
        return "stream"
    declared = dataset_grid(dataset)
    if declared is not None and declared != grid:
        raise ValueError(f"{what} is on grid {declared!r} but the model is on {grid!r}; build the model with "
                         f"Reverter(grid=...) of the data's grid, or make data on the model's grid")
    item = dataset[0]
    d, lon, lat, v = grid.distance.steps, grid.lon.steps, grid.lat.steps, grid.velocity.steps
    if isinstance(item, dict):
        missing = [k for k in ("density", "x_h2") if k not in item]
        if missing:
            raise ValueError(f"{what} items are dicts (physical fields) without {missing}; expected the variables "
                             "of iris_nb.sim.fields.field_tensors")
        for key, value in item.items():
            if key == "turbulent_b" and isinstance(value, torch.Tensor) and tuple(value.shape) == (1, 1, 1):
                continue  # one line width per field
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (d, lon, lat):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{what} field variable {key!r} has shape {shape}, expected (distance, lon, lat) = "
                                 f"{(d, lon, lat)} for the model's grid {grid.name}; regrid or rebuild the data")
            _check_finite(value, f"{what} item 0 variable {key!r}")
        _check_observer(observer, grid, what)
        return "fields"
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise TypeError(f"{what} items must be (observation, target) pairs or dicts of field tensors, got "
                        f"{type(item).__name__}")
    channels = len(getattr(model, "outputs", ("density",)))
    observation, target = item[0], item[1]
    if channels == 2 and isinstance(target, torch.Tensor) and target.dim() == 3 and target.shape[0] == 1:
        raise ValueError(f"{what} holds (observation, density) pairs, but the model also predicts velocity; give "
                         "targets (2, distance, lon) with the velocity map (observed_pairs(..., velocity=True)) or "
                         "train on physical fields (GasModelDataset or FieldStream with observer=)")
    target_axes = "(1, distance, lon)" if channels == 1 else "(2, distance, lon): density and velocity"
    for name, value, expected, axes in (("observation", observation, (1, lon, v), "(1, lon, v)"),
                                        ("target", target, (channels, d, lon), target_axes)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what} {name}s must be torch tensors, got {type(value).__name__}")
        if tuple(value.shape) != expected:
            raise ValueError(f"{what} {name}s have shape {tuple(value.shape)}, expected {axes} = {expected} for "
                             f"the model's grid {grid.name}; use data made on the model's grid")
        _check_finite(value, f"{what} item 0 {name}")
    if observer is not None:
        raise ValueError(f"{what} already holds observed (observation, target) pairs; drop observer= or give "
                         "a dataset of physical fields")
    return "pairs"


def _check_observer(observer, grid, what: str) -> None:
    if observer is None:
        raise ValueError(f"{what} holds physical fields (dict items or a FieldStream): pass observer= (e.g. "
                         "SimpleObserver(grid) or LineObserver(grid)) so that train_reverter can observe them")
    observer_grid = getattr(observer, "grid", None)
    if observer_grid is not None and observer_grid != grid:
        raise ValueError(f"the observer is on grid {observer_grid!r} but the model on {grid!r}; build the "
                         "observer with the model's grid")


def _check_finite(value: torch.Tensor, what: str) -> None:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} holds NaN or infinite values; clean the data (e.g. torch.nan_to_num) first")


def split_dataset(dataset, fraction: float, seed: int, what: str = "dataset"):
    """Seeded random ``(train, validation)`` split; ``validation`` is ``None`` for fraction 0.

    ``round(fraction * len)`` samples go to validation.  Raises ``ValueError`` when either
    part would be empty.
    """
    if isinstance(dataset, FieldStream):  # split by field, so that no field is in both parts
        return dataset.split(fraction, seed)
    n = len(dataset)
    if fraction <= 0:
        return dataset, None
    n_val = int(round(fraction * n))
    if n_val == 0 or n_val >= n:
        raise ValueError(
            f"validation_fraction={fraction} of {n} samples leaves an empty "
            f"{'validation' if n_val == 0 else 'training'} split; use more samples, another fraction, "
            "validation_fraction=0 (no validation) or pass validation= explicitly"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return Subset(dataset, sorted(order[n_val:])), Subset(dataset, sorted(order[:n_val]))


def _pair_units(dataset):
    units = getattr(dataset, "units", None)
    return units if isinstance(units, dict) and "observation" in units and "target" in units else None


def dataset_units(dataset):
    """The ``{"observation": unit, "target": unit}`` a pair dataset declares (``.units``,
    looking through ``Subset`` and ``ConcatDataset``), or ``None``."""
    return _declared(dataset, _pair_units)


def _input_space(value, what: str):
    """``(unit, space)`` of an observation unit: space ``"temperature"``, ``"v_density"`` or ``"intensity"``."""
    unit = _units.parse_unit(value, what)
    space = next((kind for kind in ("temperature", "v_density", "intensity")
                  if unit.is_equivalent(_units.SI_UNITS[kind])), None)
    if space is None:
        raise ValueError(f"{what} are in {unit}, which is neither a brightness temperature, an intensity nor a "
                         "velocity-resolved column density")
    return unit, space


def _check_litter_units(litter, model) -> None:
    units = getattr(litter, "units", None)
    if not isinstance(units, str) or not units:
        return
    unit, space = _input_space(units, "litter images")
    try:
        factor = model.input_scale(unit, space)
    except ValueError as err:
        raise ValueError(f"litter images hold {space!r} in {unit}, unusable for a model with input_space="
                         f"{model.input_space!r} ({err})") from None
    if not math.isclose(factor, 1.0, rel_tol=1e-6):
        raise ValueError(f"litter images are in {unit} but the model's inputs are in {model.input_unit}; open the "
                         f"litter store with units={{'observation': '{model.input_unit}'}}")


def pair_scales(dataset, model) -> tuple[float, float]:
    """Factors taking a pair dataset's declared units to the model's input and density units
    (``(1.0, 1.0)`` when the dataset declares none: its pairs are taken as in model units)."""
    units = dataset_units(dataset)
    if units is None:
        return 1.0, 1.0
    unit, space = _input_space(units["observation"], "dataset observations")
    try:
        input_scale = model.input_scale(unit, space)
    except ValueError as err:
        raise ValueError(f"the dataset holds {space!r} observations in {unit} but the model expects input_space="
                         f"{model.input_space!r}; build the model with Reverter(grid, input_space={space!r}) "
                         f"({err})") from None
    return input_scale, _units.density_scale(units["target"], model.density_unit)


def _columnize_tensors(fields: dict) -> torch.Tensor:
    from ..sim.columnize import columnize_tensors

    return columnize_tensors(fields)


class BatchPreparer:
    """Turns a collated batch into ``(inputs (B, 1, lon, v), targets (B, 1, distance, lon))``.

    Inputs are in the model's input unit, targets in its density unit, both float32 on
    ``device``: pairs of a ``dataset`` that declares ``units`` (``{"observation": ...,
    "target": ...}``, as ``PreObservedDataset`` does) are converted, other pairs are taken
    as already in the model's units; fields are converted from the observer's units.
    ``noise`` (``Noise``-like: ``noise(x, mode="pv", reduction=..., n_lat=..., generator=...)``)
    and ``litter`` (``litter(x, generator=...)``) touch the inputs only: litter first, then
    noise (the telescope sees the litter too).  Both act in the model's input unit (for a
    brightness model, K).
    """

    def __init__(self, model, kind: str, device: torch.device, observer=None, noise=None, litter=None,
                 dataset=None):
        self.kind = kind
        self.device = device
        self.reduction = model.reduction
        self.n_lat = model.grid.lat.steps
        _check_litter_units(litter, model)
        self.noise = noise.to(device) if hasattr(noise, "to") else noise
        self.litter = litter.to(device) if hasattr(litter, "to") else litter
        self.observer = observer.to(device) if hasattr(observer, "to") else observer
        self.input_scale = 1.0
        self.density_scale = 1.0
        if kind == "pairs" and dataset is not None:
            self.input_scale, self.density_scale = pair_scales(dataset, model)
        if kind in ("fields", "stream"):
            units, space = getattr(observer, "units", None), getattr(observer, "input_space", None)
            if units and space:
                try:
                    self.input_scale = model.input_scale(units, space)
                except ValueError as err:
                    raise ValueError(f"the observer gives {space!r} in {units} but the model expects input_space="
                                     f"{model.input_space!r}: build the model with Reverter(grid, input_space="
                                     f"{space!r}) or use an observer of its kind ({err})") from None
            self.density_scale = _units.density_scale("solMass / pc3", model.density_unit)
        self.with_velocity = len(getattr(model, "outputs", ("density",))) == 2
        self.stream = find_stream(dataset) if kind == "stream" else None
        if kind == "stream" and self.stream is None:
            raise ValueError("a 'stream' batch preparer needs the FieldStream as dataset=")
        self._replay = None  # (field ids, clean inputs, targets) of the last drawn batch
        self.fields_drawn = self.fields_reused = 0

    def _fields(self, batch) -> dict:
        if self.kind == "stream":
            return self.stream.draw(batch, self.device)
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, torch.float32, non_blocking=non_blocking) for k, v in batch.items()}

    def _observe(self, batch):
        """Clean inputs and targets of a field or stream batch (a replayed stream batch from the buffer)."""
        key = tuple(torch.as_tensor(batch).reshape(-1).tolist()) if self.kind == "stream" else None
        if key is not None and self._replay is not None and self._replay[0] == key:
            self.fields_reused += len(key)
            return self._replay[1].clone(), self._replay[2]
        fields = self._fields(batch)
        cube = self.observer(fields)  # (B, lon, lat, v)
        pv = cube.mean(dim=2) if self.reduction == "mean" else cube.amax(dim=2)
        inputs = (pv * self.input_scale).unsqueeze(1).float()
        targets = self._field_targets(fields)
        if key is not None:
            self.fields_drawn += len(key)
            self._replay = (key, inputs.clone(), targets) if self.stream.replay > 1 else None
        return inputs, targets

    def _field_targets(self, fields: dict) -> torch.Tensor:
        """``(B, 1, distance, lon)`` densities in the model's unit, then (two-output models) the
        H2-weighted velocity map in km/s as a second channel."""
        targets = (_columnize_tensors(fields) * self.density_scale).unsqueeze(1).float()
        if self.with_velocity:
            from ..sim.columnize import columnize_velocity_tensors

            targets = torch.cat([targets, columnize_velocity_tensors(fields).unsqueeze(1).float()], dim=1)
        return targets

    def targets(self, batch) -> torch.Tensor:
        """Only the targets of a batch: ``(B, outputs, distance, lon)`` in the model's units."""
        with torch.no_grad():
            if self.kind in ("stream", "fields"):
                return self._field_targets(self._fields(batch))
            targets = batch[1].to(self.device, torch.float32)
            return torch.cat([targets[:, :1] * self.density_scale, targets[:, 1:]], dim=1)

    def __call__(self, batch, generator: torch.Generator | None = None, augment: bool = True):
        """Prepare one batch; ``augment=False`` skips noise and litter."""
        non_blocking = self.device.type == "cuda"
        with torch.no_grad():
            if self.kind in ("fields", "stream"):
                inputs, targets = self._observe(batch)
            else:
                inputs = batch[0].to(self.device, torch.float32, non_blocking=non_blocking)
                targets = batch[1].to(self.device, torch.float32, non_blocking=non_blocking)
                if self.input_scale != 1.0:
                    inputs = inputs * self.input_scale
                if self.density_scale != 1.0:  # densities only; a velocity channel stays in km/s
                    targets = torch.cat([targets[:, :1] * self.density_scale, targets[:, 1:]], dim=1)
            if augment and self.litter is not None:
                inputs = self.litter(inputs, generator=generator)
            if augment and self.noise is not None:
                inputs = self.noise(inputs, mode="pv", reduction=self.reduction, n_lat=self.n_lat,
                                    generator=generator)
        return inputs, targets


def n_batches(n_samples: int, batch_size: int) -> int:
    """Number of batches (the last one may be smaller)."""
    return int(math.ceil(n_samples / batch_size))


def training_sampler(train_set, kind: str, config, world: int, rank: int):
    """The sampler giving this rank's training order: seeded, ``set_epoch`` every epoch.

    A ``DistributedSampler`` (``num_replicas=1`` alone); for a store (items with ``chunk_ids``) a
    strided :class:`~iris_nb.data.samplers.ChunkShuffleSampler`, so each chunk is decoded once
    per epoch; for a field stream with ``replay`` > 1 a
    :class:`~iris_nb.data.stream.ReplaySampler` (fresh batches, each used ``replay`` times).
    """
    from ..data.samplers import ChunkShuffleSampler, chunk_ids_of
    from ..data.stream import ReplaySampler

    stream = find_stream(train_set) if kind == "stream" else None
    if stream is not None and stream.replay > 1:
        return ReplaySampler(stream, config.batch_size, seed=config.seed, num_replicas=world, rank=rank)
    if chunk_ids_of(train_set) is None:
        return DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                  drop_last=False)
    return ChunkShuffleSampler(train_set, seed=config.seed, num_workers=config.num_workers,
                               batch_size=config.batch_size, num_replicas=world, rank=rank, strided=True)


class IndexList(Sampler):
    """A sampler over a list of indices that the trainer replaces every epoch."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)
