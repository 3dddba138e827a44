"""launch(): port checks, a failing rank, an interrupted or killed run; no process may outlive a
launch; progress in a log file is one clean line per tenth of the run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from iris_nb.train import _procs
from iris_nb.train.launch import LaunchError, PortInUseError, launch, load_run_result
from iris_nb.train.resume import load_checkpoint
from iris_nb.train.run import RunConfig

from toy_stores import write_store

TRAINING = {"epochs": 1, "batch_size": 1, "batches_per_update": 1, "validation_fraction": 0.25}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_store(tmp_path_factory.mktemp("launch") / "pairs.zarr", 8)


_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _processes_before_the_test():
    """Helper processes other tests left running (e.g. multiprocessing/dask trackers) are not ours."""
    _BEFORE.clear()
    _BEFORE.update(_procs.descendants(os.getpid()))
    yield


def own_descendants() -> list[int]:
    """Processes started by this test (and still running) below the pytest process."""
    return [pid for pid in _procs.descendants(os.getpid()) if pid not in _BEFORE]


def test_port_in_use_is_refused_before_anything_starts(store, tmp_path):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"), training=TRAINING)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError) as info:
            launch(run, nproc_per_node=2, master_port=port, device="cpu", progress=False)
    assert isinstance(info.value, ValueError)
    assert str(port) in str(info.value) and "master_port=None" in str(info.value)
    assert not (tmp_path / "ckpt").exists()
    assert own_descendants() == []


def test_bad_launch_arguments(store, tmp_path):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"), training=TRAINING)
    with pytest.raises(ValueError, match="nproc_per_node"):
        launch(run, nproc_per_node=0)
    with pytest.raises(ValueError, match="node_rank must be below nnodes"):
        launch(run, nproc_per_node=1, nnodes=2, node_rank=2)
    with pytest.raises(ValueError, match="master_port"):
        launch(run, nproc_per_node=1, nnodes=2, node_rank=1, master_port=None)
    with pytest.raises(ValueError, match="differs from the grid of store"):
        launch(run.replace(grid="SMALL"), nproc_per_node=1)
    assert own_descendants() == []


@pytest.mark.slow
def test_failing_rank_stops_every_rank_and_reports_its_traceback(store, tmp_path):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"), training=TRAINING,
                    debug={"fail_rank": 1, "fail_after": 2})
    handle = launch(run, nproc_per_node=2, device="cpu", progress=False, echo=False, block=False)
    with pytest.raises(LaunchError) as info:
        handle.wait(timeout=240)
    error = info.value
    assert error.rank == 1
    assert "Traceback" in error.traceback and "rank 1 fails on purpose after reading 2 samples" in error.traceback
    assert "rank 1" in str(error) and error.returncode != 0
    assert sorted(handle.pids) == [0, 1]
    for pid in handle.pids.values():
        assert not _procs.is_alive(pid), f"worker {pid} outlived the failed launch"
    assert handle.alive_pids() == [] and own_descendants() == []
    assert (tmp_path / "ckpt" / "launch" / "traceback_rank1.txt").is_file()


@pytest.mark.slow
def test_interrupt_terminates_all_ranks(store, tmp_path):
    """A KeyboardInterrupt while waiting (the notebook's stop button) ends torchrun and every rank."""
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"),
                    training={**TRAINING, "epochs": 50})
    seen = {}

    def interrupt(event, info):
        if event == "batch_end":
            seen["pids"] = own_descendants()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch(run, nproc_per_node=2, device="cpu", progress=False, echo=False, callbacks=[interrupt], timeout=240)
    assert len(seen["pids"]) >= 3  # torchrun and two ranks at least
    for pid in seen["pids"]:
        assert not _procs.is_alive(pid), f"process {pid} outlived the interrupted launch"
    assert own_descendants() == []


@pytest.mark.slow
def test_callback_requests_a_clean_stop_with_a_checkpoint(store, tmp_path):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"), training={**TRAINING, "epochs": 50})
    events = []

    def stop_at_second_batch(event, info):
        events.append(event)
        return event == "batch_end" and events.count("batch_end") == 2

    result = launch(run, nproc_per_node=2, device="cpu", progress=False, echo=False,
                    callbacks=[stop_at_second_batch], timeout=240)
    # the request reaches rank 0 a batch or two later (output travels through torchrun's pipes)
    assert result.stopped and result.epochs_completed <= 2 and events.count("batch_end") <= 8
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file() and (tmp_path / "ckpt" / "model.pt").is_file()
    assert own_descendants() == []


KILL_TRAINING = {**TRAINING, "epochs": 3, "optimizer": "sgd", "lr": 1e-2, "milestones": [2]}


@pytest.fixture(scope="module")
def straight_in_a_pipe(store, tmp_path_factory):
    """An uninterrupted 2-rank run, launched by a script whose output goes to a pipe (as in CI or
    a batch job's log): ``(output text, checkpoint folder)``."""
    folder = tmp_path_factory.mktemp("straight")
    run = RunConfig(dataset=store, checkpoint_dir=str(folder / "ckpt"), training=KILL_TRAINING, test_fraction=0.0)
    run.to_json(folder / "run.json")
    script = ("import sys; from iris_nb.train import launch; "
              "launch(sys.argv[1], nproc_per_node=2, device='cpu', progress=True, echo=True, timeout=300)")
    done = subprocess.run([sys.executable, "-c", script, str(folder / "run.json")], capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr, folder / "ckpt"


@pytest.mark.slow
def test_progress_of_a_launch_in_a_log_is_clean_lines(straight_in_a_pipe):
    text, _ = straight_in_a_pipe
    assert "\r" not in text
    progress = [line for line in text.splitlines() if line.startswith("training:")]
    assert 3 <= len(progress) <= 11, text  # 9 batches: at most one line per tenth of the run
    assert progress[-1].startswith("training: 9/9 batch (100%)") and "epoch=3/3" in progress[-1]
    rates = [float(rate) for rate in re.findall(r"([\d.]+) batch/s", text)]
    assert rates and max(rates) < 200, progress  # an average since the start, not 1 batch / 0.1 ms
    assert "IRIS_PROGRESS" not in text and "IRIS_RANK" not in text


@pytest.mark.slow
def test_sigkill_of_a_rank_leaves_no_process_and_resume_reaches_the_same_weights(store, tmp_path,
                                                                              straight_in_a_pipe):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "ckpt"), training=KILL_TRAINING, test_fraction=0.0)
    box = {}

    def kill_rank_1(event, info):  # in epoch 2, after the checkpoint of epoch 1
        if event == "batch_end" and info["epoch"] >= 1 and "pids" not in box:
            while "handle" not in box or 1 not in box["handle"].pids:
                time.sleep(0.01)
            box["pids"] = own_descendants()
            os.kill(box["handle"].pids[1], signal.SIGKILL)

    box["handle"] = handle = launch(run, nproc_per_node=2, device="cpu", progress=False, echo=False, block=False,
                                    callbacks=[kill_rank_1])
    with pytest.raises(LaunchError) as info:
        handle.wait(timeout=300)
    assert "pids" in box, info.value
    assert len(box["pids"]) >= 3  # torchrun and two ranks at least
    for pid in [*box["pids"], *handle.pids.values()]:
        assert not _procs.is_alive(pid), f"process {pid} outlived the killed rank"
    assert handle.alive_pids() == [] and own_descendants() == []
    folder = tmp_path / "ckpt"
    assert not (folder / "result.json").exists()  # the run was cut short
    assert load_checkpoint(folder)["epoch"] in (1, 2)

    resumed = launch(run, nproc_per_node=2, device="cpu", progress=False, echo=False, timeout=300)
    assert own_descendants() == []
    straight = load_run_result(straight_in_a_pipe[1])
    assert resumed.train_losses == pytest.approx(straight.train_losses, rel=1e-6)
    assert resumed.history["updates"] == straight.history["updates"]
    for (name, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=0, atol=1e-6), name
