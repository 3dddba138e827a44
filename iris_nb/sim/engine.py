"""Seeds, devices and memory of the batched data engine (:class:`~iris_nb.sim.cmz_model.CMZModel`,
:class:`~iris_nb.data.stream.FieldStream`, ``write_dataset(device=...)``)."""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch

__all__ = ["as_seeds", "torch_seed", "existing_device", "free_memory"]


def torch_seed(sequence: np.random.SeedSequence) -> int:
    words = sequence.generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) % 2**63)


def as_seeds(seeds) -> list[int]:
    if isinstance(seeds, (numbers.Integral, np.integer)) and not isinstance(seeds, bool):
        raise TypeError(f"seeds must be a list of non-negative integers (one per sample), got the single integer "
                        f"{seeds!r}; write [{seeds}]")
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.detach().cpu().reshape(-1).tolist()
    elif isinstance(seeds, np.ndarray):
        seeds = seeds.reshape(-1).tolist()
    if not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a list, tuple, range, numpy array or tensor of non-negative integers, got "
                        f"{type(seeds).__name__}")
    out = []
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
            raise TypeError(f"seed {i} of the list is {seed!r}; every seed must be a non-negative integer")
        out.append(int(seed))
    if not out:
        raise ValueError("seeds is empty; give at least one seed")
    return out


def existing_device(device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists here, or a clear error."""
    try:
        device = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has no CUDA GPU visible to torch; "
                             "use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' asked for, but MPS is not available here; use device='cpu'")
    elif device.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported by the gas model; use 'cpu' or 'cuda'")
    return device


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still give (CUDA: free memory; CPU: available RAM), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None
