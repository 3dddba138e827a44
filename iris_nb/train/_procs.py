"""Process and port bookkeeping for :mod:`iris_nb.train.launch`: errors, process-count and
rendezvous port checks, finding, checking and ending worker processes, reading torchrun's summary.

PIDs are remembered together with their start time (``/proc/<pid>/stat`` field 22 on
Linux) so that a PID reused by an unrelated process after a worker ended is never signalled.
On systems without ``/proc`` the start time is unknown and only the PID is checked.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

_PROC = Path("/proc")


class LaunchError(RuntimeError):
    """A launched run failed, timed out or could not start.

    Attributes: ``rank`` (the first failing global rank, or ``None``), ``traceback`` (that
    rank's traceback text, or the tail of its output), ``returncode`` (torchrun's exit
    status), ``log_dir`` (folder with every rank's ``stdout.log`` / ``stderr.log``).
    """

    def __init__(self, message: str, rank: int | None = None, traceback: str = "",
                 returncode: int | None = None, log_dir: str | None = None) -> None:
        super().__init__(message)
        self.rank, self.traceback, self.returncode, self.log_dir = rank, traceback, returncode, log_dir


class PortInUseError(LaunchError, ValueError):
    """The rendezvous port is taken on this machine; pick another ``master_port`` or ``None``."""


def choose_port(port: int | None) -> int:
    """A free port (``None``) or ``port`` after checking that it can be bound here."""
    if port is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("", 0))
            return int(probe.getsockname()[1])
    port = require_port(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as err:
            raise PortInUseError(f"master_port {port} is already in use on this machine ({err.strerror}); "
                                 "pass another master_port, or master_port=None to pick a free one") from None
    return port


def require_port(port) -> int:
    """``port`` if it is a valid TCP port number, else ValueError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"master_port must be an integer port 1..65535 (the same on every node), got {port!r}")
    return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    return [text[: text.index("(")].strip()] + ["comm"] + text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or ``None`` when unknown."""
    fields = _stat_fields(pid)
    return fields[21] if fields and len(fields) > 21 else None


def is_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as gone) and, if given, still has start time ``started``."""
    fields = _stat_fields(pid)
    if fields is not None:
        if fields[2] in ("Z", "X"):
            return False
        return started is None or fields[21] == started
    if _PROC.is_dir():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> list[int]:
    """PIDs of all living descendants of ``pid`` (Linux; empty elsewhere)."""
    if not _PROC.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 4:
            continue
        children.setdefault(int(fields[3]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (ignored when it is gone)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all(known: dict[int, str | None], wait: float = 5.0) -> list[int]:
    """SIGKILL every living process in ``known`` (pid -> start time) and its process group if it
    leads one; wait up to ``wait`` seconds for them to disappear; returns those still alive."""
    for pid, started in known.items():
        if not is_alive(pid, started):
            continue
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    alive = [pid for pid, started in known.items() if is_alive(pid, started)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if is_alive(pid, known[pid])]
    return alive


def check_counts(nproc, nnodes, node_rank, device) -> int:
    """The number of processes on this node (``None``: one per visible GPU, else 1), after
    checking ``nnodes``, ``node_rank`` and ``device``."""
    for name, value, low in (("nnodes", nnodes, 1), ("node_rank", node_rank, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if node_rank >= nnodes:
        raise ValueError(f"node_rank must be below nnodes ({nnodes}), got {node_rank}; number nodes 0..nnodes-1")
    if device is not None and str(device).split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if nproc is None:
        import torch

        gpus = torch.cuda.device_count() if device is None or str(device).startswith("cuda") else 0
        return max(gpus, 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc_per_node must be a positive integer (processes on this machine), got {nproc!r}")
    return nproc


def root_cause_rank(launcher_lines: list[str]) -> int | None:
    """The failing rank named in torchrun's "Root Cause" summary, or ``None``."""
    seen = False
    for text in launcher_lines:
        if "Root Cause" in text:
            seen = True
        elif seen and text.strip().startswith("rank") and ":" in text:
            try:
                return int(text.split(":", 1)[1].split()[0])
            except (ValueError, IndexError):
                return None
    return None


def exit_when_parent_dies(interval: float = 1.0) -> None:
    """Start a daemon thread that ends this process (exit status 1) once its parent is gone
    (a worker whose torchrun was killed would otherwise run on as an orphan)."""
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="iris-parent-watch").start()
