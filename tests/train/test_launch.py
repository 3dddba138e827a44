"""launch(): port checks, a failing rank, an interrupted run; no process may outlive a launch."""

from __future__ import annotations

import os
import socket

import pytest

from iris_nb.train import _procs
from iris_nb.train.launch import LaunchError, PortInUseError, launch
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
