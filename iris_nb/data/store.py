"""Write training pairs (PV observation, top-down target) to a resumable zarr dataset store.

::

    from iris_nb.data.store import write_dataset
    write_dataset("pairs.zarr", n=1000, grid=iris_nb.SMALL)        # local processes
    write_dataset("pairs.zarr", n=1000, grid=iris_nb.SMALL)        # again: continues / no-op
    xarray.open_zarr("pairs.zarr")                                 # named dims and units

Sample ``i`` is made from the gas seed :func:`sample_seed` ``(seed, i)`` only, so the bytes
of a store do not depend on how many workers wrote it, in which order, or whether it was
interrupted and resumed.  The layout is described in :mod:`iris_nb.data.layout`.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..cube import REDUCTIONS
from ..grids import Grid, get_grid
from ..sim.augment import as_augmentation
from ..sim.cmz import make_cmz
from .jobs import JobConfig, check_picklable, describe_observer, model_name, probe_parameters, run_jobs
from .layout import (StoreInfo, auto_chunk_size, check_compression, create_store, info_from_group,
                     is_store, open_store, remove_partial_files, store_info)

__all__ = ["sample_seed", "write_dataset", "open_store", "store_info", "StoreInfo", "is_store", "StoreBusyError"]

_SEED_LIMIT = 2**63


def sample_seed(seed: int, index: int) -> int:
    """Gas-model seed of sample ``index`` of a store written with ``seed``.

    Derived with :class:`numpy.random.SeedSequence` (entropy ``seed``, spawn key
    ``(index,)``), so every sample gets an independent, well-mixed stream and the value
    depends on nothing but ``(seed, index)``.  Returns an int in ``[0, 2**63)``.
    """
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"sample_seed {name} must be an integer, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"sample_seed {name} must be >= 0, got {value}")
    words = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) % _SEED_LIMIT)


def _default_observer(grid: Grid):
    from ..sim.observers import LineObserver

    return LineObserver(grid)


def _check_arguments(n, seed, workers, dtype, reduction, chunk_size, model, observer, grid) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of samples) must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 0):
        raise ValueError(f"workers must be None (automatic), 0 or 1 (in this process) or a positive "
                         f"number of processes, got {workers!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype {dtype!r} is not supported; use 'float32' or 'float16' "
                         "(half the disk, values must stay below 65504)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not known; use 'mean' or 'max' over latitude")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be None (automatic) or a positive integer, got {chunk_size!r}")
    if not callable(model):
        raise TypeError(f"model must be a function model(grid, seed=int, **model_kwargs) -> field, "
                        f"got {type(model).__name__}")
    if not callable(observer) or not hasattr(observer, "units"):
        raise TypeError(f"observer must be an observer module with a `units` attribute (e.g. "
                        f"SimpleObserver(grid)), got {type(observer).__name__}")
    own_grid = getattr(observer, "grid", None)
    if isinstance(own_grid, Grid) and own_grid != grid:
        raise ValueError(f"the observer was built for {own_grid!r} but the store grid is {grid!r}; "
                         "build the observer on the same grid")


def _compare(existing: StoreInfo, wanted: dict, path) -> None:
    """Raise when an existing store was written with other arguments."""
    have = {"grid": existing.grid.to_dict(), "n": existing.n_samples, "dtype": existing.dtype,
            "reduction": existing.reduction, "seed": existing.seed, "model": existing.model,
            "model_kwargs": existing.model_kwargs, "observer": existing.observer,
            "chunk_size": existing.chunk_size, "compression": existing.compression,
            "augment": existing.augment, "velocity": existing.velocity}
    diffs = [key for key in wanted
             if (wanted[key] is not None or key in ("compression", "augment")) and have[key] != wanted[key]]
    if diffs:
        lines = "; ".join(f"{key}: store has {have[key]!r}, asked for {wanted[key]!r}" for key in diffs)
        raise ValueError(f"the store at {str(path)!r} was written with other arguments ({lines}); "
                         "pass the same arguments to continue it, or write to a new path")


class StoreBusyError(RuntimeError):
    """Another ``write_dataset`` call (this or another process) is writing the same store."""


def lock_path(path) -> Path:
    """The hidden lock file beside the store at ``path`` (``.<name>.lock``; kept, a few bytes)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextmanager
def store_lock(path):
    """Hold the store at ``path`` for one writer: raise :class:`StoreBusyError` when another holds it.

    An advisory ``flock`` on :func:`lock_path`: the operating system drops it when its process
    ends (also when killed), so a crashed writer never leaves the store locked.  On systems
    without ``fcntl`` (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    where = lock_path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise StoreBusyError(f"the store {str(path)!r} is being written by {owner}; wait for that "
                                 "write_dataset call to finish (calling again then continues the store), or "
                                 "write to another path") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(path, *, grid: Grid, n: int, chunk_size, dtype: str, observation_units: str,
                  wanted: dict, attrs: dict, parameters_fn, compression="lz4"):
    """Open a matching store at ``path`` (resuming) or create a new one; return the zarr group.

    ``wanted`` holds the arguments an existing store must match; ``parameters_fn()`` gives
    the parameter key -> variable mapping of a new store (it may run the gas model once).
    """
    path = Path(path)
    if path.is_file():
        raise ValueError(f"{str(path)!r} is a file, not a dataset store; choose a new folder path")
    if path.is_dir() and is_store(path):
        import zarr

        group = zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)
        existing = info_from_group(group, path)
        _compare(existing, dict(wanted, chunk_size=chunk_size, compression=compression), path)
        remove_partial_files(path)
        return group
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{str(path)!r} is a folder that holds other files and is not an iris_nb dataset "
                         "store; choose a new or empty folder")
    if chunk_size is None:
        chunk_size = auto_chunk_size(grid, n, dtype)
    return create_store(path, grid=grid, n=n, chunk_size=int(chunk_size), dtype=dtype,
                        observation_units=observation_units, parameters=parameters_fn(), attrs=attrs,
                        compression=compression)


def _gas_engine(model, model_kwargs: dict, grid: Grid, device, workers, client, augment):
    """``(model, model_kwargs, engine)``: the batched torch gas model (``engine`` its device type)
    for a ``CMZModel`` or for ``make_cmz`` on a non-CPU device; else the model as given and None."""
    from ..sim.cmz_model import CMZModel
    from ..sim.engine import existing_device

    wants_device = device is not None and str(device) != "cpu"
    if not isinstance(model, CMZModel) and not (model is make_cmz and wants_device):
        return model, model_kwargs, None
    if isinstance(model, CMZModel):
        if model_kwargs:
            raise ValueError("model_kwargs cannot be combined with a CMZModel; give the fixed parameters to "
                             "CMZModel(grid, **fixed)")
        if model.grid != grid:
            raise ValueError(f"the CMZModel is on grid {model.grid.name!r} but the store on {grid.name!r}; build it "
                             "on the store's grid")
    else:
        model = CMZModel(grid, **model_kwargs)
    if augment is not None:
        raise ValueError("augment= needs the numpy gas model (it transforms xarray fields); write with "
                         "model=make_cmz on the CPU, or without augment")
    if client is not None or (workers is not None and workers > 1):
        raise ValueError("the batched gas model draws and observes in this process on its device; drop "
                         "client= and workers= (or use model=make_cmz for CPU workers or a dask cluster)")
    return model, dict(model.fixed), existing_device(device).type


def write_dataset(path, n: int, grid, model=make_cmz, observer=None, seed: int = 0, workers: int | None = None,
                  client=None, dtype: str = "float32", reduction: str = "mean", chunk_size: int | None = None,
                  model_kwargs: dict | None = None, progress: bool = True, device=None,
                  compression: str | None = "lz4", augment=None, velocity: bool = False) -> Path:
    """Make ``n`` training pairs and write them to a zarr dataset store at ``path``.

    Each sample ``i``: ``field = model(grid, seed=sample_seed(seed, i), **model_kwargs)``,
    then ``field = augment(field, seed=augmentation_seed(sample_seed(seed, i)))`` when
    ``augment`` is given; ``cube = observer(field_tensors(field))`` ``(1, lon, lat, velocity)``;
    the observation is the ``reduction`` (mean or max) of the cube over latitude, ``(lon, velocity)`` in
    ``observer.units``; the target is the latitude-averaged H2 mass density
    ``(distance, lon)`` in solMass / pc3 (:func:`iris_nb.sim.columnize.columnize_tensors`).

    Parameters
    ----------
    path:
        Folder of the store (created; an existing store written with the same arguments is
        continued: only chunks not yet done are made, and the result is byte-identical to an
        uninterrupted run).
    n:
        Number of samples.
    grid:
        :class:`~iris_nb.grids.Grid` or preset name of every pair.
    model:
        Gas model ``model(grid, seed=int, **model_kwargs) -> field`` (default
        :func:`iris_nb.sim.cmz.make_cmz`; ``None`` means the same).
    observer:
        Observer module (default ``LineObserver(grid)``: 13CO(2-1) brightness in K with non-LTE
        excitation, the input :class:`~iris_nb.model.Reverter` expects by default; pass
        ``SimpleObserver(grid)`` for velocity-resolved column "vrho" pairs); its ``units``
        become the observation units.
    seed:
        Store seed (int >= 0); sample seeds are ``sample_seed(seed, i)``.
    workers:
        ``None``: ``min(cpu_count, chunks to do)`` local processes (spawned); 0 or 1: in this
        process; k: k processes.  Every job runs torch single-threaded so that results do not
        depend on the worker count.
    client:
        A ``dask.distributed.Client``; when given, chunks run as its tasks (``workers`` is
        ignored) and their arrays come back here to be written, so no shared disk is needed.
        Give its workers one thread each (``threads_per_worker=1``): jobs set torch's thread
        count.
    dtype:
        Storage dtype, ``"float32"`` or ``"float16"`` (ValueError when a value overflows it).
    reduction:
        ``"mean"`` or ``"max"`` over latitude.
    chunk_size:
        Samples per zarr chunk and per job (default about 8 MiB of data, at most 256).
    model_kwargs:
        Extra keyword arguments for ``model`` (JSON-serialisable; recorded in the store).
    progress:
        Show a tqdm progress bar.
    device:
        Torch device for the observer (default CPU).  With the default gas model and a GPU
        (``device="cuda"``) the fields are drawn there too, by the batched
        :class:`~iris_nb.sim.cmz_model.CMZModel` (same parameter draws as ``make_cmz``, the
        turbulence from torch generators), and written from this process; pass
        ``model=CMZModel(grid)`` to use it on the CPU as well.  The store records the engine
        and its device type (``CMZModel@cuda``): it continues only with the same.
    compression:
        Chunk codec: ``"lz4"`` (default: about 1.6-1.8x smaller than raw on PV images, fast
        to decode), ``"zstd"`` (a little smaller, slower to decode) or None (raw bytes,
        fastest to read when the store is in the page cache).
    augment:
        A :class:`~iris_nb.sim.augment.FieldAugmentation` (or a dict of its fields) applied to
        every field before it is observed, with a seed derived from the sample's gas seed
        (:func:`~iris_nb.sim.augment.augmentation_seed`), so the store stays reproducible and
        independent of the worker count.  Recorded in the store (attr ``augment``): continuing
        a store with another augmentation, or none, is refused.  Its per-sample draws (e.g.
        ``augment_size``) become parameter variables.  Default None: no augmentation.
    velocity:
        Also store ``target_velocity`` ``(n, distance, lon)``, the H2-weighted line-of-sight
        velocity map in km/s (:func:`~iris_nb.sim.columnize.columnize_velocity`), the second
        target of two-output models (read it with ``PreObservedDataset(..., velocity=True)``).

    Returns
    -------
    pathlib.Path
        The store path; open it with ``xarray.open_zarr`` or
        :class:`~iris_nb.data.datasets.PreObservedDataset`.
    """
    grid = get_grid(grid)
    model = make_cmz if model is None else model
    observer = _default_observer(grid) if observer is None else observer
    model_kwargs = dict(model_kwargs or {})
    augment = as_augmentation(augment)
    model, model_kwargs, engine = _gas_engine(model, model_kwargs, grid, device, workers, client, augment)
    _check_arguments(n, seed, workers, dtype, reduction, chunk_size, model, observer, grid)
    check_compression(compression)
    try:
        kwargs_json = json.loads(json.dumps(model_kwargs, sort_keys=True))
    except TypeError as err:
        raise TypeError(f"model_kwargs must be JSON-serialisable to be recorded in the store ({err})") from None
    from .. import __version__

    if engine is None and (client is not None or workers is None or workers > 1):
        check_picklable((model, observer, model_kwargs, augment))
    obs_desc = describe_observer(observer)
    name = model_name(model) if engine is None else f"{model_name(model)}@{engine}"
    wanted = {"grid": grid.to_dict(), "n": int(n), "dtype": dtype, "reduction": reduction, "seed": int(seed),
              "model": name, "model_kwargs": kwargs_json, "observer": obs_desc,
              "augment": None if augment is None else augment.to_dict(), "velocity": bool(velocity)}
    attrs = {"seed": int(seed), "reduction": reduction, "model": wanted["model"],
             "model_kwargs": json.dumps(kwargs_json, sort_keys=True),
             "observer": json.dumps(obs_desc, sort_keys=True),
             "augment": json.dumps(wanted["augment"], sort_keys=True),
             "iris_nb_version": __version__,
             "sample_seeds": "sample i was made with iris_nb.data.store.sample_seed(seed, i)",
             "velocity_target": int(bool(velocity))}
    with store_lock(path):  # one writer per store at a time
        group = prepare_store(path, grid=grid, n=int(n), chunk_size=chunk_size, dtype=dtype,
                              observation_units=str(observer.units), wanted=wanted, attrs=attrs,
                              compression=compression,
                              parameters_fn=lambda: probe_parameters(model, grid, sample_seed(int(seed), 0),
                                                                     model_kwargs, augment))
        info = info_from_group(group, path)
        config = JobConfig(grid=grid, model=model, model_kwargs=model_kwargs, observer=observer,
                           reduction=reduction, dtype=dtype, seed=int(seed), n=info.n_samples,
                           chunk_size=info.chunk_size, parameters=json.loads(info.attrs["parameter_keys"]),
                           device=None if device is None else str(device), augment=augment, velocity=bool(velocity))
        pending = [k for k in range(info.n_chunks) if not info.done[k]]
        if engine is not None:
            workers = 0  # the batched gas model draws on the device, in this process
        elif workers is None:
            workers = 0 if (config.device or "cpu").startswith("cuda") else min(os.cpu_count() or 1, len(pending))
        run_jobs(group, config, pending, workers=workers, client=client, progress=progress,
                 already_done=info.n_done)
    return Path(path)


def estimate_store_bytes(n: int, grid, dtype: str = "float32") -> int:
    """Uncompressed bytes of ``n`` pairs on ``grid`` (an upper bound for the disk use)."""
    grid = get_grid(grid)
    per_sample = np.dtype(dtype).itemsize * (grid.lon.steps * grid.velocity.steps
                                             + grid.distance.steps * grid.lon.steps)
    return int(n) * int(per_sample)
