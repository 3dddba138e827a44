"""Resuming: an interrupted run (epoch boundary or a callback stop) ends exactly like an
uninterrupted one; foreign or incompatible checkpoints are refused and left untouched."""

import hashlib
import os

import pytest
import torch
from torch.utils.data import TensorDataset

from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.model.model_file import ModelFileError
from iris_nb.train.launch import load_run_result
from iris_nb.train.resume import CheckpointMismatchError, CheckpointReadError, atomic_torch_save, load_checkpoint
from iris_nb.train.config import TrainingConfig
from iris_nb.train.loop import train_reverter

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")
# 5 training samples in batches of 2 -> 3 batches per epoch; groups of 2 batches -> a partial group
CONFIG = TrainingConfig(epochs=3, batch_size=2, batches_per_update=2, validation_fraction=0.2, milestones=(2,),
                        gamma=0.5, device="cpu", seed=11)


def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 64, 64, generator=gen)
    return TensorDataset(x, 2.0 * x.transpose(2, 3) ** 2)


def model(seed):
    torch.manual_seed(seed)
    return Reverter(GRID)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 3-epoch run."""
    net = model(0)
    result = train_reverter(net, data(), config=CONFIG, checkpoint_dir=tmp_path_factory.mktemp("straight"),
                            progress=False)
    return net, result


def assert_same_run(net, result, reference_net, reference):
    assert result.train_losses == pytest.approx(reference.train_losses, rel=1e-6, abs=0)
    assert result.validation_losses == pytest.approx(reference.validation_losses, rel=1e-6)
    assert result.learning_rates == reference.learning_rates
    assert result.history["updates"] == reference.history["updates"]
    for (name, a), b in zip(net.state_dict().items(), reference_net.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=0, atol=1e-6), name


def test_resume_after_two_epochs_matches_straight_run(tmp_path, straight):
    first = train_reverter(model(0), data(), config=CONFIG.replace(epochs=2), checkpoint_dir=tmp_path,
                           progress=False)
    assert len(first.train_losses) == 2
    before = digest(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="more than epochs"):
        train_reverter(model(0), data(), config=CONFIG.replace(epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert digest(tmp_path / "checkpoint.pt") == before
    resumed_net = model(123)  # a different initialisation: everything must come from the checkpoint
    resumed = train_reverter(resumed_net, data(), config=CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert_same_run(resumed_net, resumed, *straight)
    assert resumed.learning_rates == pytest.approx([1e-3, 1e-3, 5e-4])
    # a finished run resumes to itself without training
    again_net = model(7)
    again = train_reverter(again_net, data(), config=CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert_same_run(again_net, again, *straight)


def test_resume_after_callback_stop_inside_a_group_matches_straight_run(tmp_path, straight):
    def stop(event, info):  # epoch 2, after its first batch: inside an accumulation group
        return event == "batch_end" and info["epoch"] == 1 and info["batch"] == 0

    stopped = train_reverter(model(0), data(), config=CONFIG, checkpoint_dir=tmp_path, callbacks=[stop],
                             progress=False)
    assert stopped.stopped and len(stopped.train_losses) == 1
    state = load_checkpoint(tmp_path)
    assert (state["epoch"], state["batch"]) == (1, 1) and state["pending_gradients"]
    resumed_net = model(99)
    resumed = train_reverter(resumed_net, data(), config=CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert not resumed.stopped
    assert_same_run(resumed_net, resumed, *straight)


def test_foreign_or_incompatible_checkpoints_are_refused_untouched(tmp_path):
    config = CONFIG.replace(epochs=1, validation_fraction=0.0)
    train_reverter(model(0), data(), config=config, checkpoint_dir=tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    before = digest(path), digest(tmp_path / "model.pt")
    other_grid = GRID.replace(lat=GRID.lat.with_steps(4))
    with pytest.raises(CheckpointMismatchError, match="another model"):
        x = torch.rand(2, 1, 64, 64)
        train_reverter(Reverter(other_grid), TensorDataset(x, x), config=config, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="lr"):
        train_reverter(model(0), data(), config=config.replace(lr=0.1, epochs=2), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="resume=False"):
        train_reverter(model(0), data(), config=config, checkpoint_dir=tmp_path, resume=False)
    assert (digest(path), digest(tmp_path / "model.pt")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.pt"]


def test_broken_checkpoint_and_failed_save_leave_files_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match="cannot read"):
        train_reverter(model(0), data(), config=CONFIG, checkpoint_dir=tmp_path)
    assert path.read_bytes() == b"not a torch file"
    torch.save({"format": "something else"}, path)
    with pytest.raises(CheckpointMismatchError, match="not an iris_nb training checkpoint"):
        load_checkpoint(tmp_path)
    before = digest(path)
    with pytest.raises(Exception):
        atomic_torch_save({"bad": lambda: None}, path)  # cannot be pickled: fails half-way
    assert digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    config = CONFIG.replace(epochs=2)
    net = model(0)
    train_reverter(net, data(), config=config, checkpoint_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.previous.pt")["epoch"] == 1  # kept by the second save
    final = Reverter.load(tmp_path / "model.pt")
    truncate(tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointReadError, match="checkpoint.pt: the file is truncated or damaged"):
        load_checkpoint(tmp_path)
    with pytest.warns(RuntimeWarning, match="(?s)truncated.*Resuming from .*checkpoint.previous.pt .epoch 1"):
        resumed = train_reverter(model(5), data(), config=config, checkpoint_dir=tmp_path, progress=False)
    assert resumed.epochs_completed == 2 and not resumed.stopped
    for (name, a), b in zip(resumed.model.state_dict().items(), final.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=0, atol=1e-6), name
    assert (tmp_path / "checkpoint.damaged.pt").is_file() and load_checkpoint(tmp_path)["epoch"] == 2


def test_truncated_files_name_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    atomic_torch_save({"format": "iris_nb.training_checkpoint", "weights": torch.zeros(10_000)},
                      folder / "checkpoint.pt")
    truncate(folder / "checkpoint.pt")
    with pytest.raises(CheckpointReadError, match="run/checkpoint.pt: the file is truncated.*move the file away"):
        train_reverter(model(0), data(), config=CONFIG, checkpoint_dir=folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]  # no previous: nothing moved
    model(0).save(folder / "model.pt")
    truncate(folder / "model.pt")
    with pytest.raises(ModelFileError, match="run/model.pt: the file is truncated or damaged"):
        Reverter.load(folder / "model.pt")
    (folder / "result.json").write_text('{"format": "iris_nb.run_result", "res')
    with pytest.raises(ValueError, match="result.json is not complete JSON"):
        load_run_result(folder)


class _Payload:
    """Unpickling it would create a marker file: code run from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_files_holding_code_are_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save({"format": "iris_nb.training_checkpoint", "format_version": 1, "model": _Payload(marker)},
               folder / "checkpoint.pt")
    with pytest.raises(CheckpointReadError, match="checkpoint.pt: it holds pickled Python objects.*refused"):
        train_reverter(model(0), data(), config=CONFIG, checkpoint_dir=folder, progress=False)
    torch.save({"format": "iris_nb.reverter", "format_version": 1, "state_dict": {"w": _Payload(marker)},
                "metadata": {}}, folder / "model.pt")
    with pytest.raises(ModelFileError, match="model.pt: it holds pickled Python objects.*refused"):
        Reverter.load(folder / "model.pt")
    with pytest.raises(ModelFileError, match="pickled Python objects"):
        Reverter.load(folder / "checkpoint.pt")
    assert not marker.exists()
