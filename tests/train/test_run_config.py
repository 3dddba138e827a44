"""RunConfig: validation, YAML/JSON round trips, pre-flight checks of stores, grids and init models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iris_nb.cli import _parser, main
from iris_nb.grids import SEDIGISM
from iris_nb.model import Reverter
from iris_nb.sim import LitterConfig
from iris_nb.sim.noise import NoiseConfig
from iris_nb.train.config import TrainingConfig
from iris_nb.train.run import RunConfig, RunConfigError, as_run

from toy_stores import G64 as GRID, clump_field, write_store

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_store(tmp_path_factory.mktemp("stores") / "pairs.zarr", 8, model=clump_field)


def full_run(store, tmp_path) -> RunConfig:
    return RunConfig(dataset=[store, store], grid=GRID, checkpoint_dir=str(tmp_path / "ckpt"),
                     training=TrainingConfig(epochs=2, batch_size=2, lr=3e-4, milestones=(1,)),
                     noise=NoiseConfig(sigma=0.5, channel_width=0.25, fade=False), litter={"paths": store, "p": 0.25},
                     reduction="mean", seed=7, debug={"save_state": True})


def test_yaml_json_and_dict_round_trips(store, tmp_path):
    run = full_run(store, tmp_path)
    path = tmp_path / "run.yaml"
    run.to_yaml(path)
    assert RunConfig.from_yaml(path) == run
    assert RunConfig.from_json(run.to_json()) == run
    assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    assert as_run(str(path)) == run
    # a custom grid is written as a dict, a preset by its name
    assert isinstance(run.to_dict()["grid"], dict)
    preset = run.replace(grid="sedigism")
    assert preset.to_dict()["grid"] == "SEDIGISM" and preset.grid == SEDIGISM
    assert RunConfig.from_yaml(preset.to_yaml(tmp_path / "preset.yaml")).grid == SEDIGISM
    # one store is written as a plain string, litter paths as a list
    single = RunConfig(dataset=store)
    assert single.to_dict()["dataset"] == store and single.dataset == (store,)
    assert run.to_dict()["litter"] == {"paths": [store], "p": 0.25}
    two = run.replace(litter={"paths": [store, store], "p": [0.5, 0.1]})
    assert two.litter["p"] == (0.5, 0.1) and RunConfig.from_yaml(two.to_yaml(tmp_path / "two.yaml")) == two
    scaled = run.replace(litter={"paths": [store], "p": 0.5, "scale": 2})
    assert scaled.to_dict()["litter"] == {"paths": [store], "p": 0.5, "scale": 2.0}
    assert RunConfig.from_yaml(scaled.to_yaml(tmp_path / "scaled.yaml")) == scaled
    assert run.replace(litter={"paths": [store], "p": 0.5, "scale": 1}).litter == LitterConfig((store,), p=0.5)
    assert isinstance(two.litter, LitterConfig) and two.litter.p == (0.5, 0.1) and two.litter.paths == (store, store)
    # a LitterConfig is accepted as it is, and still reads like the old dict
    assert run.replace(litter=scaled.litter).litter is scaled.litter and dict(scaled.litter)["scale"] == 2.0
    narrow = run.replace(width=0.25)
    assert RunConfig.from_yaml(narrow.to_yaml(tmp_path / "narrow.yaml")).width == 0.25


def test_width_is_validated(store):
    with pytest.raises(ValueError, match="RunConfig.width"):
        RunConfig(dataset=store, width=0.0)


def test_yaml_written_by_hand_is_read(store, tmp_path):
    text = (f"dataset: {store}\ngrid: null\ncheckpoint_dir: {tmp_path / 'c'}\n"
            "training: {epochs: 3, batch_size: 4}\nnoise: true\n")
    path = tmp_path / "hand.yaml"
    path.write_text(text)
    run = RunConfig.from_yaml(path)
    assert run.training.epochs == 3 and run.training.batch_size == 4
    assert run.noise == NoiseConfig() and run.grid is None and run.litter is None


def test_noise_of_old_run_files_keeps_its_per_pixel_meaning(store, tmp_path):
    """A run file written before channel widths: sigma per grid pixel, white noise, no error."""
    path = tmp_path / "old.yaml"
    path.write_text(f"dataset: {store}\nnoise: {{sigma: 1.0, mean: 0.0, fade: true, correlated_beam: false}}\n")
    run = RunConfig.from_yaml(path)
    assert run.noise == NoiseConfig(sigma=1.0, channel_width="grid", correlated_beam=False)
    assert RunConfig.from_yaml(run.to_yaml(tmp_path / "new.yaml")).noise == run.noise  # now says "grid"
    assert run.to_dict()["noise"]["channel_width"] == "grid"
    assert RunConfig(dataset=store, noise={"sigma": 0.9, "channel_width": 0.25}).noise == NoiseConfig()


def test_seed_overrides_training_seed(store):
    run = RunConfig(dataset=store, training={"seed": 1, "epochs": 1}, seed=5)
    assert run.training.seed == 5
    assert RunConfig.from_dict(run.to_dict()).training.seed == 5


@pytest.mark.parametrize("changes, words", [
    ({"datset": "x"}, ["unknown RunConfig fields", "datset", "dataset"]),
    ({"training": {"lr": -1.0}}, ["lr", "positive"]),
    ({"training": {"epochs": 0}}, ["epochs", ">= 1"]),
    ({"training": {"epoch": 2}}, ["unknown TrainingConfig fields", "epoch"]),
    ({"reduction": "median"}, ["reduction", "mean"]),
    ({"litter": {"paths": ["a"], "p": 1.5}}, ["litter", "[0, 1]"]),
    ({"litter": {"p": 0.5}}, ["litter", "paths"]),
    ({"litter": {"paths": ["a", "b"], "p": [0.5]}}, ["2 paths but 1 probabilities"]),
    ({"litter": {"paths": ["a"], "scale": -1}}, ["litter", "scale", ">= 0"]),
    ({"litter": {"paths": ["a"], "prob": 0.5}}, ["litter", "prob", "known keys"]),
    ({"litter": ["a"]}, ["litter", "LitterConfig", "list"]),
    ({"noise": {"sigma": -1}}, ["sigma", ">= 0"]),
    ({"noise": {"sigma": 0.9, "channel_width": 0}}, ["channel_width", "> 0 km/s"]),
    ({"noise": {"sigma": 0.9, "channel_width": "fine"}}, ["channel_width", "'grid'"]),
    ({"seed": -3}, ["seed", "non-negative"]),
    ({"dataset": []}, ["dataset", "non-empty"]),
    ({"grid": "HUGE"}, ["unknown grid preset", "SMALL"]),
    ({"debug": {"explode": True}}, ["debug", "explode"]),
])
def test_bad_values_are_refused_with_clear_messages(changes, words):
    data = {"dataset": "pairs.zarr", **changes}
    with pytest.raises((ValueError, TypeError)) as info:
        RunConfig.from_dict(data)
    for word in words:
        assert word in str(info.value)


def test_missing_dataset_key_and_non_dict():
    with pytest.raises(RunConfigError, match="needs 'dataset'"):
        RunConfig.from_dict({"grid": "SMALL"})
    with pytest.raises(TypeError, match="dict"):
        RunConfig.from_dict(["pairs.zarr"])


def test_check_returns_the_store_grid(store, tmp_path):
    assert RunConfig(dataset=store).check() == GRID
    assert RunConfig(dataset=[store, store], grid=GRID, litter={"paths": [store]}).check() == GRID


def test_check_missing_store_and_non_store(tmp_path, store):
    with pytest.raises(RunConfigError, match="does not exist.*write_dataset"):
        RunConfig(dataset=str(tmp_path / "nowhere.zarr")).check()
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(RunConfigError, match="not an iris_nb dataset store"):
        RunConfig(dataset=str(other)).check()
    with pytest.raises(RunConfigError, match="does not exist"):
        RunConfig(dataset=store, litter={"paths": [str(tmp_path / "no_litter.zarr")]}).check()


def test_check_grid_mismatch_before_training(store, tmp_path):
    checkpoint = tmp_path / "ckpt"
    with pytest.raises(RunConfigError) as info:
        RunConfig(dataset=store, grid="SMALL", checkpoint_dir=str(checkpoint)).check()
    text = str(info.value)
    assert "SMALL" in text and "differs from the grid of store" in text and "lon" in text
    assert not checkpoint.exists()  # nothing was created


def test_check_stores_on_different_grids(store, tmp_path):
    wider = GRID.replace(velocity=GRID.velocity.__class__(-250.0, 250.0, 64))
    other = tmp_path / "wide.zarr"
    write_store(other, 2, model=clump_field, grid=wider)
    with pytest.raises(RunConfigError, match="different grids.*velocity"):
        RunConfig(dataset=[store, str(other)]).check()


def test_check_reduction_and_init_model(store, tmp_path):
    with pytest.raises(RunConfigError, match="reduced with 'mean'.*reduction: mean"):
        RunConfig(dataset=store, reduction="max").check()
    good = tmp_path / "good.pt"
    Reverter(GRID, input_space="v_density").save(good)
    assert RunConfig(dataset=store, init=str(good)).check() == GRID
    other_grid = tmp_path / "other.pt"
    Reverter(GRID.replace(lon=GRID.lon.__class__(-1.0, 1.0, 64))).save(other_grid)
    with pytest.raises(RunConfigError, match="another grid"):
        RunConfig(dataset=store, init=str(other_grid)).check()
    with pytest.raises(RunConfigError, match="init model file .* does not exist"):
        RunConfig(dataset=store, init=str(tmp_path / "missing.pt")).check()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(RunConfigError, match="init: cannot read model file"):
        RunConfig(dataset=store, init=str(garbage)).check()


def test_resolved_paths_are_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = RunConfig(dataset="pairs.zarr", checkpoint_dir="out", litter={"paths": "near.zarr"}, init="m.pt")
    done = run.resolved()
    assert done.dataset == (str(tmp_path / "pairs.zarr"),)
    assert done.checkpoint_dir == str(tmp_path / "out")
    assert done.litter["paths"] == (str(tmp_path / "near.zarr"),)
    assert done.init == str(tmp_path / "m.pt")
    assert Path(done.init).is_absolute()


def test_cli_has_train_and_keeps_quickstart():
    args = _parser().parse_args(["train", "--config", "run.yaml", "--device", "cpu", "--no-resume"])
    assert (args.command, args.config, args.device, args.no_resume) == ("train", "run.yaml", "cpu", True)
    assert _parser().parse_args(["quickstart", "--seed", "3"]).seed == 3
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--config", "r.yaml", "--device", "tpu"])


def test_cli_train_runs_a_config_and_prints_progress_lines(store, tmp_path, capsys):
    run = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "cli"), test_fraction=0.0,
                    noise={"sigma": 0.05, "channel_width": 0.25},  # beam-correlated on the store's grid
                    training={"epochs": 1, "batch_size": 3, "batches_per_update": 2, "validation_fraction": 0.25})
    config = tmp_path / "run.yaml"
    run.to_yaml(config)
    assert main(["train", "--config", str(config), "--device", "cpu", "--progress", "lines"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("IRIS_PROGRESS ")]
    events = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert [e["event"] for e in events] == ["train_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert events[1]["n_batches"] == 2 and np.isfinite(events[3]["train_loss"])
    written = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert written["run"] == run.to_dict() and written["world_size"] == 1
    assert written["result"]["train_losses"] == [events[3]["train_loss"]]
    model = Reverter.load(tmp_path / "cli" / "model.pt")
    assert model.grid == GRID and model.input_space == "v_density"
    # a second start with --no-resume refuses to overwrite the finished run
    with pytest.raises(ValueError):
        main(["train", "--config", str(config), "--device", "cpu", "--no-resume", "--progress", "none"])


def test_litter_from_stores_reaches_the_inputs(store, tmp_path):
    pytest.importorskip("iris_nb.sim.litter")
    from iris_nb.train.run import run_training

    litter_store = tmp_path / "litter.zarr"
    write_store(litter_store, 3, model=clump_field, seed=99)
    training = {"epochs": 1, "batch_size": 2, "batches_per_update": 1, "validation_fraction": 0.25, "device": "cpu"}
    clean = RunConfig(dataset=store, checkpoint_dir=str(tmp_path / "clean"), training=training)
    littered = clean.replace(checkpoint_dir=str(tmp_path / "litter"),
                             litter={"paths": [str(litter_store), str(litter_store)], "p": [1.0, 0.0]})
    first = []

    def first_batch_then_stop(event, info):
        if event == "batch_end":
            first.append(info["loss"])
            return True  # a clean stop: one batch is all this test needs
        return None

    brighter = littered.replace(checkpoint_dir=str(tmp_path / "brighter"), litter={**littered.litter, "scale": 3.0})
    for run in (clean, littered, brighter):
        assert run_training(run, progress=False, callbacks=[first_batch_then_stop]).stopped
    # same seeded initial weights and samples: only the litter added to every input differs
    assert first[0] != pytest.approx(first[1], rel=1e-6)
    assert first[2] != pytest.approx(first[1], rel=1e-6)  # the litter scale reaches training


def test_in_memory_pairs_are_refused_before_training(tmp_path):
    from iris_nb.train.run import prepare_pairs

    run = RunConfig(dataset="never.zarr", checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="empty"):
        prepare_pairs(run, [])
    with pytest.raises(TypeError, match="sized torch Dataset"):
        prepare_pairs(run, iter([]))
    with pytest.raises(ValueError, match="needs a grid"):
        prepare_pairs(run, [(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))])
