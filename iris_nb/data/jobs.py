"""Chunk jobs of :func:`iris_nb.data.store.write_dataset`: make pairs, run them in parallel.

A job makes every sample of one chunk and returns plain numpy arrays; only the calling
process writes to the store (workers need no access to its disk, so the same job runs in
a local process pool or on a ``dask.distributed`` cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import re
import sys

import numpy as np
import torch

from .._progress import progress_bar
from ..grids import Grid
from ..sim.augment import augmentation_seed
from ..sim.cmz_model import CMZModel
from ..sim.columnize import columnize_tensors, columnize_velocity_tensors
from ..sim.fields import field_tensors, validate_field
from ..units import input_space_name
from .layout import parameter_variable, write_chunk

__all__ = ["JobConfig", "compute_chunk", "run_jobs", "describe_observer", "model_name",
           "make_field", "probe_parameters", "flatten_parameters"]

FLOAT16_MAX = 65504.0
_GAS_BATCH_CELLS = 1 << 25  # cells drawn and observed at once by the batched gas model (one SEDIGISM field)


@dataclasses.dataclass
class JobConfig:
    """Everything a chunk job needs (pickled once per worker).

    ``parameters`` maps flattened gas-model parameter keys to store variable names;
    ``augment`` is a :class:`~iris_nb.sim.augment.FieldAugmentation` or None.
    """

    grid: Grid
    model: object
    model_kwargs: dict
    observer: object
    reduction: str
    dtype: str
    seed: int
    n: int
    chunk_size: int
    parameters: dict
    device: str | None = None
    augment: object = None
    velocity: bool = False  # also make the velocity target


def model_name(model) -> str:
    """``module.qualname`` of a gas-model function, or of the class of a callable object."""
    target = model if hasattr(model, "__qualname__") else type(model)
    module = getattr(target, "__module__", None)
    return f"{module}.{target.__qualname__}" if module else target.__qualname__


def describe_observer(observer) -> dict:
    """JSON-ready description of an observer: class, units, input space and settings."""
    cls = type(observer)
    settings = getattr(observer, "config", None)
    if callable(settings):
        settings = settings()
    if not isinstance(settings, dict):
        settings = observer.extra_repr() if hasattr(observer, "extra_repr") else ""
    space = str(getattr(observer, "input_space", "") or "")
    description = {"class": f"{cls.__module__}.{cls.__qualname__}", "units": str(observer.units),
                   "input_space": input_space_name(space, "the observer's input_space") if space else "",
                   "settings": settings}
    return json.loads(json.dumps(description, sort_keys=True, default=str))


def _clean_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(key)) or "_"


def flatten_parameters(params, prefix: str = "") -> dict:
    """Numeric scalars of a (nested) parameter dict as ``{"a_b": float}``; other values skipped."""
    out = {}
    if not isinstance(params, dict):
        return out
    for key, value in params.items():
        name = f"{prefix}{_clean_key(key)}"
        if isinstance(value, dict):
            out.update(flatten_parameters(value, prefix=f"{name}_"))
        elif isinstance(value, (bool, int, float, np.integer, np.floating)):
            out[name] = float(value)
    return out


def _field_parameters(field) -> dict:
    text = field.attrs.get("parameters", "{}")
    try:
        params = json.loads(text) if isinstance(text, str) else dict(text)
    except (ValueError, TypeError):
        return {}
    return flatten_parameters(params)


def make_field(model, grid: Grid, seed: int, model_kwargs: dict, augment=None):
    """``model(grid, seed=seed, **model_kwargs)``, augmented with ``augmentation_seed(seed)``."""
    field = model(grid, seed=seed, **model_kwargs)
    if augment is not None:
        field = augment(field, seed=augmentation_seed(seed))
    return field


def probe_parameters(model, grid: Grid, seed: int, model_kwargs: dict, augment=None) -> dict:
    """Run the gas model (and augmentation) once; map its numeric parameter keys to store variable names."""
    if isinstance(model, CMZModel):
        keys = flatten_parameters(model.parameters([seed])[0])
    else:
        keys = _field_parameters(make_field(model, grid, seed, model_kwargs, augment))
    return {key: parameter_variable(key) for key in sorted(keys)}


@contextlib.contextmanager
def _torch_threads(count: int):
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_pair(config: JobConfig, index: int, seed: int, pv: np.ndarray, target: np.ndarray) -> None:
    for name, values in (("observation", pv), ("target", target)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"sample {index} (gas seed {seed}) has non-finite {name} values; "
                             "check the gas model parameters")
        if config.dtype == "float16" and float(np.max(np.abs(values), initial=0.0)) > FLOAT16_MAX:
            raise ValueError(f"sample {index} has {name} values up to {np.max(np.abs(values)):.4g}, beyond the "
                             f"float16 range ({FLOAT16_MAX:g}); write with dtype='float32'")


def _observe(config: JobConfig, observer, tensors: dict) -> tuple[np.ndarray, np.ndarray]:
    """PV images ``(B, lon, velocity)`` and targets ``(B, distance, lon)`` of a batch of field tensors
    (``(B, 2, distance, lon)``, density then velocity, when ``config.velocity``)."""
    cube = observer(tensors)
    lon, lat, vel = config.grid.ppv_shape
    batch = tensors["density"].shape[0]
    if tuple(cube.shape) != (batch, lon, lat, vel):
        raise ValueError(f"the observer returned shape {tuple(cube.shape)}; expected (batch, lon, lat, velocity) "
                         f"= {(batch, lon, lat, vel)} for the store grid")
    pv = cube.mean(dim=2) if config.reduction == "mean" else cube.amax(dim=2)
    target = columnize_tensors(tensors)
    if config.velocity:
        target = torch.stack([target, columnize_velocity_tensors(tensors)], dim=1)
    return pv.detach().to("cpu", torch.float32).numpy(), target.detach().to("cpu", torch.float32).numpy()


def _batched_chunk(config: JobConfig, indices: range, observer) -> tuple[list, list, list, list]:
    """The samples ``indices`` drawn by the batched torch gas model and observed on ``config.device``."""
    from .store import sample_seed  # (store imports this module)

    gas = config.model
    seeds = [sample_seed(config.seed, index) for index in indices]
    cells = int(np.prod(gas.shape))
    step = max(1, min(len(seeds), _GAS_BATCH_CELLS // cells))
    pvs, targets = [], []
    for start in range(0, len(seeds), step):
        tensors = gas.sample(seeds[start:start + step], device=config.device or "cpu")
        with _torch_threads(1), torch.no_grad():
            pv, target = _observe(config, observer, tensors)
        del tensors
        for offset in range(pv.shape[0]):
            _check_pair(config, indices[start + offset], seeds[start + offset], pv[offset], target[offset])
        pvs.extend(pv)
        targets.extend(target)
    return seeds, pvs, targets, [flatten_parameters(p) for p in gas.parameters(seeds)]


def _one_sample(config: JobConfig, observer, index: int):
    """Observation ``(lon, velocity)`` and target ``(distance, lon)`` of sample ``index``."""
    from .store import sample_seed  # (store imports this module)

    seed = sample_seed(config.seed, index)
    field = make_field(config.model, config.grid, seed, config.model_kwargs, config.augment)
    validate_field(field, config.grid)
    tensors = field_tensors(field, device=config.device, validate=False)
    pv, target = _observe(config, observer, tensors)
    _check_pair(config, index, seed, pv[0], target[0])
    return seed, pv[0], target[0], _field_parameters(field)


def compute_chunk(config: JobConfig, chunk: int, observer=None) -> dict:
    """Make the samples of chunk ``chunk``; torch runs single-threaded (reproducible bytes).

    Returns ``observation (m, lon, velocity)``, ``target (m, distance, lon)`` float32 arrays
    (observer units and solMass / pc3), ``sample_seed (m,)`` int64 and ``parameters``
    (key -> ``(m,)`` float64).
    """
    if observer is None:
        observer = config.observer.to(config.device or "cpu").eval()
    start = chunk * config.chunk_size
    indices = range(start, min(config.n, start + config.chunk_size))
    seeds, pvs, targets, params = [], [], [], []
    if isinstance(config.model, CMZModel):
        seeds, pvs, targets, params = _batched_chunk(config, indices, observer)
    else:
        with _torch_threads(1), torch.no_grad():
            for index in indices:
                seed, pv, target, values = _one_sample(config, observer, index)
                seeds.append(seed)
                pvs.append(pv)
                targets.append(target)
                params.append(values)
    columns = {key: np.array([p.get(key, math.nan) for p in params], dtype=np.float64)
               for key in config.parameters}
    targets = np.stack(targets)
    out = {"observation": np.stack(pvs), "target": targets[:, 0] if config.velocity else targets,
           "sample_seed": np.array(seeds, dtype=np.int64), "parameters": columns}
    if config.velocity:
        out["target_velocity"] = targets[:, 1]
    return out


# --------------------------------------------------------------------------- workers
_WORKER: dict = {}


def _dumps(obj) -> bytes:
    try:
        import cloudpickle  # functions defined in a notebook travel by value

        return cloudpickle.dumps(obj)
    except ImportError:  # pragma: no cover
        return pickle.dumps(obj)


def check_picklable(obj) -> None:
    """TypeError when ``obj`` (model, observer, kwargs) cannot be sent to worker processes."""
    try:
        _dumps(obj)
    except Exception as err:
        raise TypeError(f"the model, observer, model_kwargs or augment cannot be sent to worker processes ({err}); "
                        "define the model as a module-level function, or use workers=0") from None


def _init_worker(payload: bytes) -> None:
    torch.set_num_threads(1)
    config = pickle.loads(payload)
    _WORKER["config"] = config
    _WORKER["observer"] = config.observer.to(config.device or "cpu").eval()


def _worker_chunk(chunk: int) -> dict:
    return compute_chunk(_WORKER["config"], chunk, observer=_WORKER["observer"])


def _chunk_from_payload(payload: bytes, chunk: int) -> dict:
    config = pickle.loads(payload) if isinstance(payload, bytes) else payload
    return compute_chunk(config, chunk)


@contextlib.contextmanager
def _spawnable_main():
    """Let spawned workers start when ``__main__`` is no file they can re-run (``python - < script``).

    A spawned child re-runs the parent's ``__main__.__file__``; for a script piped on stdin that is
    ``<stdin>``, which does not exist, and every worker dies.  The jobs travel by value
    (cloudpickle), so the children do not need ``__main__``: hide the name while they start.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _run_pool(config, pending, workers, finish) -> None:
    with _spawnable_main():
        _run_pool_spawned(config, pending, workers, finish)


def _run_pool_spawned(config, pending, workers, finish) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    queue = iter(pending)
    running = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(_dumps(config),))
    try:
        def submit() -> None:
            chunk = next(queue, None)
            if chunk is not None:
                running[pool.submit(_worker_chunk, chunk)] = chunk

        for _ in range(2 * workers):
            submit()
        while running:
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                chunk = running.pop(future)
                finish(chunk, future.result())
                submit()
    except BrokenProcessPool as err:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(
            "a write_dataset worker process died; worker processes are spawned, so a script that calls "
            "write_dataset must do so under `if __name__ == \"__main__\":`; a worker may also have run out "
            "of memory (try fewer workers). Chunks finished so far are kept: call write_dataset again to "
            "continue, or use workers=0 to run in this process") from err
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_dask(config, pending, client, finish) -> None:
    try:
        from distributed import as_completed
    except ImportError:
        raise ValueError("client= needs the dask.distributed package (pip install distributed); "
                         "or leave client=None to use local processes") from None
    payload = client.scatter(_dumps(config), broadcast=True)
    queue = iter(pending)
    in_flight = 2 * max(1, len(client.scheduler_info().get("workers", {})) or 1)
    futures = {}
    for _ in range(in_flight):
        chunk = next(queue, None)
        if chunk is not None:
            futures[client.submit(_chunk_from_payload, payload, chunk, pure=False)] = chunk
    iterator = as_completed(list(futures))
    for future in iterator:
        chunk = futures.pop(future)
        finish(chunk, future.result())
        nxt = next(queue, None)
        if nxt is not None:
            new = client.submit(_chunk_from_payload, payload, nxt, pure=False)
            futures[new] = nxt
            iterator.add(new)


def run_jobs(group, config: JobConfig, pending: list, *, workers: int, client=None, progress: bool = True,
             already_done: int = 0) -> None:
    """Compute the ``pending`` chunks and write each to ``group`` as it finishes."""
    bar = progress_bar(config.n, "write_dataset", unit="sample", initial=already_done, disable=not progress)

    def finish(chunk: int, result: dict) -> None:
        write_chunk(group, chunk, config.chunk_size, result, config.parameters)
        bar.update(len(result["sample_seed"]))

    try:
        if not pending:
            return
        if client is not None:
            _run_dask(config, pending, client, finish)
        elif workers <= 1:
            observer = config.observer.to(config.device or "cpu").eval()
            for chunk in pending:
                finish(chunk, compute_chunk(config, chunk, observer=observer))
        else:
            _run_pool(config, pending, min(workers, len(pending)), finish)
    finally:
        bar.close()
