"""Objects a :class:`~iris_nb.train.run.RunConfig` turns into (datasets, noise, litter, model),
and the debug hooks of a run (a rank that fails on purpose, weight dumps with their hash).

``result.json``, the other file a run leaves behind, is written and read by
:mod:`iris_nb.train.result`, beside :class:`~iris_nb.train.result.TrainingResult`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..grids import Grid
from .._files import write_text_atomic
from ._run_io import RunConfigError


def build_inputs(run, grid: Grid, device: torch.device) -> dict:
    """Everything :func:`~iris_nb.train.loop.train_reverter` needs for ``run``.

    Each store is split by :class:`~iris_nb.data.datasets.PreObservedDataset` with
    ``run.training.validation_fraction``, ``run.test_fraction`` and the split seed (the test
    split is never touched); several stores are concatenated in the first one's units.
    Returns ``{"model", "dataset", "noise", "litter", "config", "extra"}``; ``extra`` holds
    further keyword arguments for ``train_reverter`` (``validation=``).
    """
    from . import distributed

    train = _split(run, "train")
    fraction = run.training.validation_fraction
    validation = _split(run, "validation") if fraction > 0 else None
    fail_rank = run.debug.get("fail_rank")
    if fail_rank is not None and distributed.rank() == fail_rank:
        train = FailingDataset(train, run.debug.get("fail_after", 0), fail_rank)
    noise = None
    if run.noise is not None:
        from ..sim.noise import Noise

        noise = Noise.from_config(run.noise, grid=grid)
    litter = build_litter(run, train.units) if run.litter is not None else None
    model = build_model(run, grid, train.units["observation"])
    config = run.training.replace(device=str(device))
    return {"model": model, "dataset": train, "noise": noise, "litter": litter, "config": config,
            "extra": {"validation": validation}}


def build_pairs_inputs(run, dataset, model=None) -> dict:
    """``{"model", "noise", "litter"}`` to train in-memory ``dataset`` with the settings of ``run``.

    ``model`` is used as given (its grid must be ``run.grid`` when the run names one); without
    it a fresh Reverter is built like :func:`build_model` on ``run.grid`` (else
    ``dataset.grid``) in ``dataset.units["observation"]``.  Litter images are converted to the
    dataset's observation unit (else the model's input unit).  Raises ValueError/TypeError.
    """
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(f"dataset must be a sized torch Dataset of (observation, target) pairs, got "
                        f"{type(dataset).__name__}") from None
    if n == 0:
        raise ValueError("the in-memory dataset is empty; give at least a few (observation, target) pairs")
    units = dict(getattr(dataset, "units", None) or {})
    if model is None:
        grid = run.grid or getattr(dataset, "grid", None)
        if grid is None or "observation" not in units:
            raise ValueError("without model= a Reverter is built from the dataset, which needs a grid "
                             "(set the run's grid, or use a dataset with .grid) and .units['observation'] "
                             "(e.g. iris_nb.data.field_datasets.observed_pairs); or pass model=Reverter(...)")
        model = build_model(run, grid, units["observation"])
    elif run.grid is not None and model.grid != run.grid:
        raise ValueError(f"the run's grid {run.grid.name!r} differs from the model's grid {model.grid.name!r}; "
                         "set the run's grid to None (take the model's) or pass a model on that grid")
    noise = None
    if run.noise is not None:
        from ..sim.noise import Noise

        noise = Noise.from_config(run.noise, grid=model.grid)
    litter = None
    if run.litter is not None:
        litter = build_litter(run, {"observation": units.get("observation") or str(model.input_unit)})
    return {"model": model, "noise": noise, "litter": litter}


def _split(run, split: str):
    from ..data.datasets import ConcatDataset, PreObservedDataset

    parts = [PreObservedDataset(path, split=split, validation_fraction=run.training.validation_fraction,
                                test_fraction=run.test_fraction, seed=run.training.effective_split_seed)
             for path in run.dataset]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_litter(run, units: dict):
    """One :class:`~iris_nb.sim.litter.Litter` over every litter store (all of each store's
    samples, observations converted to the training data's unit), each with its own ``p``."""
    from ..data.datasets import PreObservedDataset
    from ..sim.litter import Litter

    parts = [PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0)
             .with_units({"observation": units["observation"]}) for path in run.litter.paths]
    p = run.litter.p
    return Litter(parts, p=list(p) if isinstance(p, tuple) else p, scale=run.litter.scale)


def build_model(run, grid: Grid, observation_units: str):
    """A fresh ``Reverter`` matching the store's units, or the ``init`` model file."""
    from .. import units as _units
    from ..model import Reverter

    unit = _units.parse_unit(observation_units, "store observation")
    if unit.is_equivalent(_units.SI_UNITS["temperature"]):
        input_space = space = "temperature"
    elif unit.is_equivalent(_units.SI_UNITS["v_density"]):
        input_space = space = "v_density"
    else:
        raise RunConfigError(f"store {run.dataset[0]} holds observations in {observation_units!r}, neither a "
                             "brightness temperature nor a velocity-resolved column density; "
                             "write it with SimpleObserver or LineObserver")
    if run.init is not None:
        model = Reverter.load(run.init, grid=grid)
        if model.input_space != input_space:
            raise RunConfigError(f"init model {run.init} takes input_space {model.input_space!r} but the store "
                                 f"holds {input_space!r} observations ({observation_units}); choose a model "
                                 "trained on the same observer")
        return model
    # initial weights drawn from training.seed: the same run starts from the same model everywhere
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.training.seed)
        return Reverter(grid, reduction=run.reduction, input_space=input_space, width=run.width,
                        units={space: observation_units, "density": "solMass / pc3"},
                        provenance={"dataset": list(run.dataset), "run": run.to_dict()})


class FailingDataset(torch.utils.data.Dataset):
    """Debug wrapper: reads ``after`` items of ``dataset`` normally, then raises RuntimeError."""

    def __init__(self, dataset, after: int, rank: int) -> None:
        self.dataset, self.after, self.rank, self.reads = dataset, int(after), rank, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if self.reads >= self.after:
            raise RuntimeError(f"debug.fail_rank: rank {self.rank} fails on purpose after reading "
                               f"{self.reads} samples")
        self.reads += 1
        return self.dataset[index]

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def save_debug_state(model, checkpoint_dir, rank: int) -> Path:
    """Write this rank's final weights and their hash to ``<checkpoint_dir>/debug/rank<k>_state.pt``."""
    module = getattr(model, "module", model)
    state = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    folder = Path(checkpoint_dir) / "debug"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank{rank}_state.pt"
    torch.save(state, path)
    write_text_atomic(folder / f"rank{rank}_state.sha256", state_hash(state) + "\n")
    return path


def state_hash(state_dict) -> str:
    """SHA-256 over the names and exact bytes of a state dict's tensors (CPU, contiguous)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
