"""Ensembles: the same training with several seeds, for reversion uncertainties.

The paper notes that reversions of real data differ between training runs; training ``n``
members that differ only in their seed (initial weights, sample order, noise and litter
draws) and reverting with all of them (``cube.iris.revert([m1, m2, ...])`` gives the mean
and standard deviation) measures that spread.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainingConfig
from .loop import train_reverter

__all__ = ["train_ensemble", "member_folder"]


def member_folder(checkpoint_dir, index: int, seed: int) -> Path:
    """Checkpoint subfolder of member ``index``: ``<checkpoint_dir>/member_{index:02d}_seed_{seed}``."""
    return Path(checkpoint_dir) / f"member_{index:02d}_seed_{seed}"


def _fresh_model(model_or_factory, seed: int, reinitialize: bool):
    if callable(model_or_factory) and not isinstance(model_or_factory, torch.nn.Module):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_or_factory(seed)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model_factory(seed) must return a Reverter, got {type(model).__name__}")
        return model
    template = model_or_factory
    if not isinstance(template, torch.nn.Module) or not hasattr(template, "grid"):
        raise TypeError(f"train_ensemble needs a Reverter or a factory seed -> Reverter, got {type(template).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = type(template)(grid=template.grid, reduction=template.reduction, units=template.units,
                               input_space=template.input_space, provenance=template.provenance,
                               width=getattr(template, "width", 1.0))
    if not reinitialize:
        model.load_state_dict(template.state_dict())
    return model


def train_ensemble(n: int, model, dataset, noise=None, litter=None, observer=None,
                   config: TrainingConfig | None = None, checkpoint_dir=None, resume: bool = True, callbacks=(), *,
                   seeds=None, validation=None, reinitialize: bool = True, progress: bool = True,
                   return_results: bool = False, bootstrap: bool = False):
    """Train ``n`` Reverters one after the other, each with its own seed; return them.

    Parameters
    ----------
    n:
        Number of members (>= 1).
    model:
        A :class:`~iris_nb.model.Reverter` used as a template (same grid, reduction, units,
        input space; fresh weights drawn from the member's seed unless
        ``reinitialize=False``, which starts every member from the template's weights), or a
        factory ``model(seed) -> Reverter``.  The template itself is not trained.
    dataset, noise, litter, observer, validation, callbacks, progress:
        As in :func:`~iris_nb.train.loop.train_reverter`.
    config:
        Shared :class:`~iris_nb.train.config.TrainingConfig`; each member gets
        ``config.replace(seed=seeds[i], split_seed=...)`` with the split seed kept fixed
        (``config.split_seed`` or ``config.seed``) so that every member sees the same
        validation set.
    checkpoint_dir:
        Parent folder; member ``i`` checkpoints into :func:`member_folder` (so an
        interrupted ensemble resumes member by member).
    seeds:
        ``n`` distinct non-negative integers (default ``config.seed + i``).
    return_results:
        Also return the list of :class:`~iris_nb.train.result.TrainingResult`.
    bootstrap:
        Train each member on its own bootstrap resample of the training samples (as many
        draws with replacement, from the member's seed; the validation samples stay the same
        for all): with data order and initialisation, the third source of spread, so that the
        ensemble std reflects how much the answer depends on the training set (Efron's
        bootstrap).  A :class:`~iris_nb.data.stream.FieldStream` is resampled by field.

    What varies between members: the initialisation (``reinitialize``), the data order and
    the noise and litter draws (each member's ``config.seed``) and, with ``bootstrap``, the
    training samples.  ``test_reverter(models, ...)`` then reports the ensemble's
    spread-skill ratio and interval coverage.

    Returns
    -------
    list of trained Reverters (or ``(models, results)``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"train_ensemble needs n >= 1 members, got {n!r}")
    config = TrainingConfig.from_dict(config) if isinstance(config, dict) else (config or TrainingConfig())
    if seeds is None:
        seeds = [config.seed + i for i in range(n)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != n or len(set(seeds)) != n or min(seeds) < 0:
        raise ValueError(f"seeds must be {n} distinct non-negative integers, got {seeds}")
    split_seed = config.effective_split_seed
    train_set, val_set = dataset, validation
    if bootstrap and validation is None:
        from .batches import split_dataset

        train_set, val_set = split_dataset(dataset, config.validation_fraction, split_seed)
    models, results = [], []
    for index, seed in enumerate(seeds):
        member_config = config.replace(seed=seed, split_seed=split_seed)
        member = _fresh_model(model, seed, reinitialize)
        folder = None if checkpoint_dir is None else member_folder(checkpoint_dir, index, seed)
        member_data = _bootstrap(train_set, seed) if bootstrap else dataset
        result = train_reverter(member, member_data, noise=noise, litter=litter, observer=observer,
                                config=member_config, checkpoint_dir=folder, resume=resume, callbacks=callbacks,
                                validation=val_set if bootstrap else validation, progress=progress)
        result.model.provenance = {**result.model.provenance,
                                   "ensemble": {"member": index, "members": n, "seed": seed,
                                                **({"bootstrap": True} if bootstrap else {})}}
        models.append(result.model)
        results.append(result)
    return (models, results) if return_results else models


def _bootstrap(dataset, seed: int):
    """A resample with replacement of ``dataset``'s samples (a FieldStream's fields), from ``seed``."""
    import numpy as np
    from torch.utils.data import Subset

    from ..data.stream import FieldStream

    rng = np.random.default_rng([int(seed), 0xB007])
    if isinstance(dataset, FieldStream):
        fields = rng.choice(dataset.fields, size=len(dataset.fields), replace=True)
        return FieldStream(dataset.grid, dataset.n, dataset.seed, dataset.model, dataset.replay, _fields=fields)
    return Subset(dataset, rng.integers(0, len(dataset), size=len(dataset)).tolist())
