"""Process-group helpers for training under ``torchrun`` (or alone).

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU (or per CPU
slot) and gives each the environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``.  :func:`init_from_env` reads them, joins the process
group (NCCL on GPUs, gloo on CPUs) and returns the device this process should train on.
Without those variables (a notebook, a plain script) everything here degrades to a
single process: ``rank() == 0``, ``world_size() == 1``, ``barrier()`` does nothing.
"""

from __future__ import annotations

import datetime as _dt
import os

import torch
import torch.distributed as dist

__all__ = ["DistributedSetupError", "init_from_env", "resolve_device", "is_distributed", "rank",
           "local_rank", "world_size", "is_main_process", "barrier", "cleanup", "all_reduce_sum",
           "broadcast_flag", "env_world_size", "no_buffer_broadcast"]


class DistributedSetupError(ValueError):
    """The process group could not be set up from the environment (port in use, missing
    variables, unreachable master)."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} must be an integer") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or unreadable)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def no_buffer_broadcast() -> dict:
    """DistributedDataParallel keyword that turns off the per-step buffer broadcast."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # newer torch; buffers are still synced once at start
    return {"broadcast_buffers": False}


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``; 0 without torchrun)."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the process that logs and writes files."""
    return rank() == 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The training device: ``None`` -> CUDA when available (``cuda:LOCAL_RANK`` under
    torchrun) else CPU; ``"cuda"`` -> ``cuda:LOCAL_RANK``; anything else as given."""
    if isinstance(device, torch.device):
        chosen = device
    elif device is None:
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            chosen = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or None") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(chosen)!r} was asked for but CUDA is not available here; "
                             "use device='cpu' (or None for automatic)")
        if chosen.index is None:
            index = local_rank() if _env_int("WORLD_SIZE", 1) > 1 else torch.cuda.current_device()
            chosen = torch.device("cuda", index % max(torch.cuda.device_count(), 1))
    return chosen


def init_from_env(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group described by torchrun's environment; return this rank's device.

    When ``WORLD_SIZE > 1`` and no group exists yet, the group is initialised from
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` with the NCCL backend for
    CUDA devices and gloo for CPU.  ``device`` as in :func:`resolve_device`.  A port already
    in use, or missing variables, raise :class:`DistributedSetupError` naming the fix.
    """
    chosen = resolve_device(device)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        return chosen
    if not dist.is_available():
        raise DistributedSetupError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise DistributedSetupError(
            f"WORLD_SIZE={world} but {missing} are not set; start the script with torchrun "
            "(python -m torch.distributed.run --nproc-per-node N ...) or unset WORLD_SIZE"
        )
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    try:
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=_dt.timedelta(seconds=float(timeout_s)))
    except Exception as err:  # torch raises DistNetworkError / RuntimeError / ValueError here
        address = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        text = str(err)
        if "address already in use" in text.lower() or "EADDRINUSE" in text:
            raise DistributedSetupError(
                f"cannot start the {backend} process group: port {address} is already in use; choose "
                "another MASTER_PORT (torchrun --master-port PORT) or stop the process holding it"
            ) from err
        raise DistributedSetupError(
            f"cannot join the {backend} process group at {address} as rank {os.environ.get('RANK')} of "
            f"{world}: {type(err).__name__}: {text.splitlines()[0] if text else ''}"
        ) from err
    return chosen


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one is initialised (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks in place and return it (unchanged in a single process).

    ``values`` must live on a device the backend supports (CUDA for NCCL, CPU for gloo).
    """
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "a callback asked to stop")."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())
