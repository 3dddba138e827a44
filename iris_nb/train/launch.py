"""Start a training run on several processes through ``torchrun``, from a notebook or a script.

:func:`launch` writes the run's YAML next to its checkpoints, starts
``python -m torch.distributed.run ... -m iris_nb.cli train --config run.yaml`` in its own
process group, streams each rank's output back prefixed ``[rank k]``, drives one progress
bar (:func:`~iris_nb.train.progress.progress_bar`: plain lines when the output is not shown
live) from the ``IRIS_PROGRESS`` lines that rank 0 prints, and returns
the :class:`~iris_nb.train.result.TrainingResult` (model read from ``<checkpoint_dir>/model.pt``,
histories from ``result.json``).  When a rank fails, every rank is stopped (torchrun's
process group, then any surviving worker by PID) and :class:`LaunchError` carries that rank's
traceback.  ``block=False`` returns a :class:`LaunchHandle` (``poll``, ``wait``, ``stop``).

The worker side of the protocol (:func:`worker_main`, called by ``iris-nb train``) announces
each rank's PID, writes a traceback file when the rank fails, and exits if torchrun dies.
POSIX only (process groups and signals).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

from . import _procs
from ._procs import LaunchError, PortInUseError, choose_port, require_port
from .progress import PROGRESS_PREFIX, progress_bar
from .run import as_run

__all__ = ["launch", "LaunchHandle", "LaunchError", "PortInUseError", "worker_main", "load_run_result"]

RANK_PREFIX = "IRIS_RANK "
ENV_LAUNCH_DIR = "IRIS_NB_LAUNCH_DIR"
ENV_WATCH_PARENT = "IRIS_NB_WATCH_PARENT"
STOP_FILE = "STOP"
"""Created in ``<checkpoint_dir>/launch`` by :meth:`LaunchHandle.request_stop`; rank 0 then stops
the run cleanly after its current batch, with a checkpoint."""
_RANK_LINE = re.compile(r"^\[([A-Za-z_]*)(\d+)\]:(.*)$")
_EOF = object()


def launch(run, nproc_per_node: int | None = None, nnodes: int = 1, node_rank: int = 0,
           master_addr: str = "127.0.0.1", master_port: int | None = None, device: str | None = None,
           timeout: float | None = None, progress: bool = True, resume: bool = True, block: bool = True,
           echo: bool = True, callbacks=()):
    """Run a training job on ``nnodes x nproc_per_node`` processes with ``torchrun``.

    Parameters
    ----------
    run:
        :class:`~iris_nb.train.run.RunConfig`, a dict of its fields, or a YAML path.  Its paths
        are made absolute and it is checked (stores, grid, init model) before anything starts.
    nproc_per_node:
        Processes on this machine; ``None``: one per visible GPU (device ``None``/``"cuda"``),
        else 1.
    nnodes, node_rank, master_addr, master_port:
        Multi-node setup; call ``launch`` on every node with its ``node_rank``.  On node 0 the
        port is checked by binding it (``None`` picks a free one); other nodes need the port.
    device:
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available), passed to every rank.
    timeout:
        Seconds before the run is stopped and :class:`LaunchError` raised (``None``: no limit).
    progress, echo:
        Show a progress bar (a ``tqdm.auto`` bar on a terminal or in a notebook, else a plain
        line every 10% of the run); print every rank's output lines (``[rank k] ...``).
    resume:
        Continue from ``<checkpoint_dir>/checkpoint.pt`` if it exists.
    block:
        ``True``: wait and return the ``TrainingResult``; ``False``: return a :class:`LaunchHandle`.
    callbacks:
        Callables ``cb(event, info)`` called here with rank 0's progress events
        (``"batch_end"``, ``"epoch_end"``, ...), e.g. for live plots; returning ``True``
        requests a clean stop (:meth:`LaunchHandle.request_stop`).
    """
    run = as_run(run).resolved()
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' (each rank takes cuda:LOCAL_RANK) or None, got {device!r}")
    nproc = _procs.check_counts(nproc_per_node, nnodes, node_rank,
                                device if device is not None else run.training.device)
    run.check()
    existing = Path(run.checkpoint_dir) / "checkpoint.pt"
    if not resume and existing.exists():
        raise ValueError(f"resume=False but {existing} exists and would be overwritten; resume it (resume=True), "
                         "choose another checkpoint_dir, or delete the file")
    port = choose_port(master_port) if node_rank == 0 else require_port(master_port)
    folder = Path(run.checkpoint_dir) / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("traceback_rank*.txt"), folder / STOP_FILE]:
        stale.unlink(missing_ok=True)
    config_path = folder / "run.yaml"
    run.to_yaml(config_path)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
               f"--master_port={port}", "--max_restarts=0", "--tee=3", f"--log-dir={folder / 'logs'}",
               "-m", "iris_nb.cli", "train", "--config", str(config_path)]
    command += ["--device", device] if device is not None else []
    command += [] if resume else ["--no-resume"]
    handle = LaunchHandle(run, command, folder, rank_offset=node_rank * nproc, progress=progress,
                          echo=echo, callbacks=callbacks, background=not block)
    return handle.wait(timeout) if block else handle


class LaunchHandle:
    """A running :func:`launch`: ``poll()`` (exit code or ``None``), ``wait(timeout)``
    (the ``TrainingResult``, or :class:`LaunchError`), ``stop()`` (end every rank).

    ``pids`` maps global rank to worker PID once each rank has started; ``lines`` keeps the
    last output lines as ``(rank, text)`` (rank ``None`` for torchrun's own lines);
    ``last_progress`` is rank 0's latest progress event as a dict.
    """

    def __init__(self, run, command, folder: Path, rank_offset: int, progress: bool, echo: bool,
                 callbacks, background: bool) -> None:
        self.run, self.command, self.folder = run, command, Path(folder)
        self.log_dir = str(self.folder / "logs")
        self.pids: dict[int, int] = {}
        self.lines: deque = deque(maxlen=2000)
        self.last_progress: dict | None = None
        self._tails: dict = {}
        self._known: dict[int, str] = {}
        self._offset, self._echo, self._callbacks = rank_offset, echo, tuple(callbacks)
        self._bar, self._show_bar, self._queue, self._origin = None, progress, queue.Queue(), (0, 0)
        self._started, self._done, self._result, self._error = time.monotonic(), False, None, None
        env = {**os.environ, ENV_LAUNCH_DIR: str(self.folder), ENV_WATCH_PARENT: "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        bufsize=1, env=env, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True, name="iris-launch-reader")
        self._reader.start()
        self._pump, self._pump_error, self._eof = None, None, False
        if background:
            self._pump = threading.Thread(target=self._pump_main, daemon=True, name="iris-launch-pump")
            self._pump.start()

    # ------------------------------------------------------------------ public
    def poll(self) -> int | None:
        """torchrun's exit status, or ``None`` while the run goes on."""
        return self.process.poll()

    def wait(self, timeout: float | None = None):
        """Block until the run ends; return its ``TrainingResult`` or raise :class:`LaunchError`.

        ``KeyboardInterrupt`` (the notebook's stop button), a timeout or an error in a callback
        stop every rank before the exception propagates.
        """
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        try:
            if self._pump is None:
                self._consume(deadline)
            else:
                while self._pump.is_alive():
                    self._pump.join(0.2)
                    if deadline is not None and time.monotonic() > deadline:
                        raise _Timeout
                if self._pump_error is not None:
                    raise self._pump_error
        except _Timeout:
            self.stop()
            raise LaunchError(f"the run did not finish within {timeout} s; all ranks were stopped "
                              f"(logs in {self.log_dir}); raise timeout= or resume the run later",
                              returncode=self.process.returncode, log_dir=self.log_dir) from None
        except BaseException:
            self.stop()
            raise
        return self._finish()

    def request_stop(self) -> None:
        """Ask for a clean stop: rank 0 sees it after its current batch, every rank stops, a
        checkpoint is written and :meth:`wait` returns a result with ``stopped=True``
        (``resume=True`` continues it later).  :meth:`stop` ends the processes at once instead."""
        (self.folder / STOP_FILE).touch()

    def stop(self, grace: float = 10.0) -> None:
        """End the run: SIGTERM to torchrun's process group, SIGKILL after ``grace`` seconds,
        then SIGKILL to any worker still alive.  Safe to call more than once."""
        self._refresh_known()
        if self.process.poll() is None:
            _procs.signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                _procs.signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _procs.kill_all(self._known)
        self._close_bar()

    def alive_pids(self) -> list[int]:
        """Worker and helper PIDs of this run that still exist (empty once it is over)."""
        self._refresh_known()
        return [pid for pid, start in self._known.items() if _procs.is_alive(pid, start)]

    # ------------------------------------------------------------------ output
    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(_EOF)

    def _pump_main(self) -> None:
        try:
            self._consume(None)
        except BaseException as err:  # noqa: BLE001 - handed to wait(), after stopping the ranks
            self._pump_error = err
            self.stop()

    def _consume(self, deadline) -> None:
        last_scan = 0.0
        while not self._eof:
            if time.monotonic() - last_scan > 1.0:
                self._refresh_known()
                last_scan = time.monotonic()
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise _Timeout from None
                continue
            if line is _EOF:
                self._eof = True
                break
            self._handle(line)
        self.process.wait()

    def _handle(self, line: str) -> None:
        match = _RANK_LINE.match(line)
        if match is None:
            self.lines.append((None, line))
            return
        rank, text = self._offset + int(match.group(2)), match.group(3)
        if text.startswith(PROGRESS_PREFIX):
            self._progress(json.loads(text[len(PROGRESS_PREFIX):]))
            return
        if text.startswith(RANK_PREFIX):
            info = json.loads(text[len(RANK_PREFIX):])
            self.pids[int(info["rank"])] = int(info["pid"])
            self._known.setdefault(int(info["pid"]), _procs.start_time(int(info["pid"])))
            return
        self.lines.append((rank, text))
        self._tails.setdefault(rank, deque(maxlen=200)).append(text)
        if self._echo:
            print(f"[rank {rank}] {text}", flush=True)

    def _progress(self, info: dict) -> None:
        self.last_progress = info
        event = info.get("event")
        if self._show_bar and event in ("train_begin", "batch_end"):
            self._update_bar(event, info)
        elif event == "epoch_end" and self._bar is not None:
            self._bar.set_postfix({k: f"{info[k]:.4g}" for k in ("train_loss", "validation_loss")
                                   if info.get(k) is not None})
        if any([callback(event, info) is True for callback in self._callbacks]):
            self.request_stop()

    def _update_bar(self, event: str, info: dict) -> None:
        """One bar over the whole run (batches of every epoch), moved with ``update`` so its
        rate is the true average, as ``train_reverter`` shows it in one process."""
        if event == "train_begin":
            self._close_bar()
            self._origin = (int(info.get("start_epoch", 0)), int(info.get("start_batch", 0)))
            per_epoch = int(info.get("n_batches") or 0)
            total = max(0, (int(info.get("epochs", 0)) - self._origin[0]) * per_epoch - self._origin[1])
            self._bar = progress_bar(total, "training", unit="batch")
            return
        if self._bar is None:  # the train_begin line was missed: count from the first batch seen
            self._origin = (int(info.get("epoch", 0)), int(info.get("batch", 0)))
            total = (self.run.training.epochs - self._origin[0]) * int(info.get("n_batches") or 0) - self._origin[1]
            self._bar = progress_bar(total, "training", unit="batch")
        done = (int(info["epoch"]) - self._origin[0]) * int(info.get("n_batches") or 0) + int(info["batch"]) + 1
        done -= self._origin[1]
        postfix = {"epoch": f"{int(info['epoch']) + 1}/{self.run.training.epochs}"}
        if info.get("loss") is not None:
            postfix["loss"] = f"{info['loss']:.4g}"
        self._bar.set_postfix(postfix, refresh=False)
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _refresh_known(self) -> None:
        for pid in _procs.descendants(self.process.pid):
            self._known.setdefault(pid, _procs.start_time(pid))

    # ------------------------------------------------------------------ end
    def _finish(self):
        if self._done:
            if self._error is not None:
                raise self._error
            return self._result
        self._done = True
        self._close_bar()
        code = self.process.wait()
        _procs.kill_all(self._known)
        if code == 0:
            self._result = load_run_result(self.run.checkpoint_dir)
            return self._result
        rank, text = self._failure()
        if rank is not None:
            head, what = f"training failed on rank {rank} (torchrun exit status {code})", f"traceback of rank {rank}"
        else:
            cause = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            head, what = f"torchrun ended ({cause}) without a rank reporting an error", "last output of torchrun"
        self._error = LaunchError(f"{head}; all ranks were stopped. Logs: {self.log_dir}\n--- {what} ---\n{text}",
                                  rank=rank, traceback=text, returncode=code, log_dir=self.log_dir)
        raise self._error

    def _failure(self) -> tuple[int | None, str]:
        files = sorted(self.folder.glob("traceback_rank*.txt"), key=lambda p: p.stat().st_mtime_ns)
        if files:
            rank = int(files[0].stem.replace("traceback_rank", ""))
            return rank, files[0].read_text()
        rank = _procs.root_cause_rank([text for _, text in self.lines])
        if rank is None and self._tails:
            rank = min(self._tails)
        tail = list(self._tails.get(rank, ())) or [text for r, text in self.lines if r is None]
        return rank, "\n".join(tail[-60:])


class _Timeout(Exception):
    pass


def load_run_result(checkpoint_dir):
    """The ``TrainingResult`` of a finished run: histories from ``result.json``, model from
    ``model.pt`` (on the CPU)."""
    from ..model import Reverter
    from .result import read_result

    folder = Path(checkpoint_dir)
    for name in ("result.json", "model.pt"):
        if not (folder / name).is_file():
            raise LaunchError(f"the run ended without writing {folder / name}; see the logs in {folder / 'launch'}")
    result = read_result(folder / "result.json")
    result.model = Reverter.load(folder / "model.pt")
    return result


# ---------------------------------------------------------------------- worker side


def worker_main(config, device: str | None = None, resume: bool = True, progress: str = "auto"):
    """Body of ``iris-nb train`` on each rank: run the config, showing progress on rank 0.

    ``progress``: ``"bar"`` (tqdm; a plain line every 10% when the output is a log file),
    ``"lines"`` (``IRIS_PROGRESS {json}`` per batch and epoch), ``"none"``, or ``"auto"`` (lines
    under :func:`launch`, else a bar).  Under :func:`launch` (environment ``IRIS_NB_LAUNCH_DIR``
    set) the rank also prints its PID, exits when torchrun dies, and on failure writes
    ``traceback_rank<k>.txt`` before re-raising.
    """
    from .progress import progress_printer
    from .run import run_training

    if progress not in ("auto", "bar", "lines", "none"):
        raise ValueError(f"progress must be 'auto', 'bar', 'lines' or 'none', got {progress!r}")
    rank = int(os.environ.get("RANK", "0"))
    folder = os.environ.get(ENV_LAUNCH_DIR)
    if progress == "auto":
        progress = "lines" if folder else "bar"
    if folder:
        print(RANK_PREFIX + json.dumps({"rank": rank, "pid": os.getpid(), "host": socket.gethostname()}), flush=True)
    if os.environ.get(ENV_WATCH_PARENT) == "1":
        _procs.exit_when_parent_dies()
    try:
        callbacks = [progress_printer()] if progress == "lines" and rank == 0 else []
        if folder:
            callbacks.append(_stop_file_callback(Path(folder) / STOP_FILE))
        return run_training(config, device=device, resume=resume, callbacks=callbacks, progress=progress == "bar")
    except Exception:
        if folder:
            try:
                (Path(folder) / f"traceback_rank{rank}.txt").write_text(traceback.format_exc())
            except OSError:
                pass
        raise


def _stop_file_callback(path: Path):
    def callback(event: str, info: dict):
        return event == "batch_end" and path.exists()

    return callback

