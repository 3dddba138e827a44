"""TrainingPanel with real widgets and real trainings on a tiny store written in a temp folder."""

import math
import time

import numpy as np
import pytest
import yaml

from iris_nb.data.field_datasets import GasModelDataset, observed_pairs
from iris_nb.sim.noise import NoiseConfig
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.run import RunConfig
from iris_nb.widgets.training import TrainingPanel

from toy_stores import G64 as GRID, ring_field, write_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRAINING = {"epochs": 2, "batch_size": 3, "batches_per_update": 1, "validation_fraction": 0.25, "device": "cpu"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_store(tmp_path_factory.mktemp("panel") / "pairs.zarr", 8)


def make_run(store, folder, **training) -> RunConfig:
    return RunConfig(dataset=store, checkpoint_dir=str(folder / "ckpt"), width=0.25, test_fraction=0.0,
                     training={**TRAINING, **training})


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the training"
        time.sleep(0.02)


def test_start_trains_in_the_background_with_live_plot(store, tmp_path):
    panel = TrainingPanel(make_run(store, tmp_path))
    images = []
    panel.live.plot.observe(lambda change: images.append(bytes(change["new"])), names="value")
    assert panel.live.plot.layout.display == "none" and bytes(panel.live.plot.value) == b""

    begin = time.perf_counter()
    assert panel.start() is True
    assert time.perf_counter() - begin < 2.0  # returns at once: the training runs in a thread
    assert panel.running and panel.result is None
    result = panel.wait(timeout=120)

    assert not panel.running and panel.result is result
    assert result.epochs_completed == 2 and not result.stopped
    assert all(math.isfinite(x) for x in result.train_losses + result.validation_losses)
    assert len(images) == 2 and images[0] != images[1]  # redrawn at each epoch end
    assert all(png.startswith(PNG_MAGIC) for png in images) and panel.live.plot.layout.display is None
    np.testing.assert_allclose(panel.live.history["train_losses"], result.train_losses)
    assert panel.live.history["epochs"] == [1, 2]
    batches = len(result.history["batch_losses"][0])
    assert batches == 2  # 6 training samples (8 - 2 validation) in batches of 3
    assert panel.live.progress.value == panel.live.progress.max == 2 * batches
    assert panel.live.status_text.startswith("finished 2 epochs")
    for name in ("checkpoint.pt", "model.pt", "result.json"):
        assert (tmp_path / "ckpt" / name).is_file()


def test_stop_ends_early_keeps_checkpoint_and_start_resumes(store, tmp_path):
    panel = TrainingPanel(make_run(store, tmp_path, epochs=50), plot_every=1)
    assert panel.start()
    assert panel.start() is False  # a second start while it runs is refused inline
    assert "already running" in panel.error.text
    wait_for(lambda: panel.live.progress.value >= 2)
    panel.stop()
    assert "stopping" in panel.live.status_text
    result = panel.wait(timeout=120)
    assert result.stopped and result.epochs_completed < 50
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file() and (tmp_path / "ckpt" / "model.pt").is_file()
    assert panel.live.status_text.startswith("stopped after") and "resumes" in panel.live.status_text
    assert panel.live.plot_updates >= 1  # plot_every=1 draws the unfinished epoch

    done = result.epochs_completed
    panel.epochs_input.value = done + 1  # extend to one more epoch and resume from the checkpoint
    assert panel.value.training.epochs == done + 1
    assert panel.start()
    resumed = panel.wait(timeout=120)
    assert resumed.epochs_completed == done + 1 and not resumed.stopped
    assert resumed.history["samples_seen"] == 6 * (done + 1)  # no sample seen twice across the stop


def test_bad_settings_show_a_message_and_start_nothing(store, tmp_path):
    panel = TrainingPanel(make_run(store, tmp_path))
    before = panel.value
    panel.lr_input.value = -0.01
    assert "lr must be positive" in panel.error.text and panel.error.widget.layout.display is None
    assert panel.value == before
    assert panel.start() is False and panel.job is None
    assert "not started" in panel.error.text

    panel.lr_input.value = 1e-3
    assert panel.error.text == ""
    panel.epochs_input.value = 0
    assert "epochs must be >= 1" in panel.error.text
    panel.epochs_input.value = 2
    panel.milestones_input.value = "3, x"
    assert "milestones must be whole epochs" in panel.error.text
    panel.milestones_input.value = "1"
    assert panel.value.training.milestones == (1,) and panel.error.text == ""

    panel.store_input.value = str(tmp_path / "missing.zarr")  # a valid config, but no such store
    assert panel.value.dataset == (str(tmp_path / "missing.zarr"),)
    assert panel.start() is False and panel.job is None
    assert "does not exist" in panel.error.text
    panel.store_input.value = ""
    assert "at least one dataset store" in panel.error.text
    assert not (tmp_path / "ckpt").exists()
    panel.stop()  # nothing running: a message, no error
    assert "nothing is running" in panel.error.text


def test_yaml_round_trip_and_controls_follow_value(store, tmp_path):
    panel = TrainingPanel(make_run(store, tmp_path))
    panel.epochs_input.value = 7
    panel.lr_input.value = 5e-4
    panel.scheduler_input.value = "cosine"
    panel.precision_input.value = "bf16"
    panel.grid_input.value = None
    panel.reduction_picker.value = "max"
    panel.noise_picker.value = NoiseConfig(sigma=0.5, channel_width=0.25, fade=False)
    assert panel.error.text == ""
    run = panel.value
    assert (run.training.epochs, run.training.lr, run.training.scheduler, run.training.precision) == (
        7, 5e-4, "cosine", "bf16")
    assert run.reduction == "max" and run.noise == NoiseConfig(sigma=0.5, channel_width=0.25, fade=False) and run.grid is None
    assert panel.milestones_input.disabled  # milestones only mean something for the multistep schedule

    assert panel.to_dict() == run.to_dict()
    path = panel.save_yaml(tmp_path / "run.yaml")
    assert RunConfig.from_yaml(path) == run  # what `iris-nb train --config run.yaml` reads
    assert yaml.safe_load(path.read_text()) == run.to_dict()
    assert TrainingPanel.from_yaml(path).value == run
    assert TrainingPanel.from_dict(panel.to_dict()).value == run
    assert panel.cli_command("run.yaml") == "iris-nb train --config run.yaml"
    panel.mode_input.value = "distributed"
    panel.nproc_input.value = 4
    assert panel.cli_command("run.yaml").startswith("torchrun --nproc-per-node 4 ")

    changed = run.replace(width=0.5, training=run.training.replace(batch_size=2, device=None), noise=None)
    panel.value = changed  # a programmatic change moves the controls
    assert panel.width_input.value == 0.5 and panel.batch_input.value == 2
    assert panel.device_input.value is None and panel.noise_picker.value is None
    panel.value = "not a run"  # refused inline, value kept
    assert panel.value == changed and "RunConfig" in panel.error.text


def test_in_memory_pairs_train_without_a_store(tmp_path):
    pairs = observed_pairs(GasModelDataset(GRID, 8, model=ring_field), SimpleObserver(GRID))
    run = RunConfig(dataset=str(tmp_path / "never_written.zarr"), checkpoint_dir=str(tmp_path / "ckpt"),
                    width=0.25, training={**TRAINING, "epochs": 1})
    panel = TrainingPanel(run, dataset=pairs, mode="distributed")
    assert panel.start() is False and "in-memory dataset" in panel.error.text  # torchrun needs a store
    panel.mode_input.value = "local"
    assert panel.start()
    result = panel.wait(timeout=120)
    assert result.epochs_completed == 1 and math.isfinite(result.train_losses[0])
    assert result.model.grid == GRID and result.model.width == 0.25
    assert not (tmp_path / "never_written.zarr").exists() and (tmp_path / "ckpt" / "model.pt").is_file()


@pytest.mark.slow
def test_distributed_mode_trains_on_two_processes(store, tmp_path):
    panel = TrainingPanel(make_run(store, tmp_path, epochs=1), mode="distributed", nproc=2)
    assert panel.start()
    assert panel.job.handle is not None and panel.running
    result = panel.wait(timeout=150)
    assert result.epochs_completed == 1 and result.history["world_size"] == 2
    assert math.isfinite(result.train_losses[0])
    assert panel.live.history["epochs"] == [1] and bytes(panel.live.plot.value).startswith(PNG_MAGIC)
    assert panel.live.status_text.startswith("finished 1 epochs") and "2 processes" not in panel.error.text
    assert panel.job.handle.alive_pids() == []
