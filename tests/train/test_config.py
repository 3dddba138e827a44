"""TrainingConfig: paper defaults, validation, JSON/YAML round trips, optimiser and scheduler."""

import json

import pytest
import torch

from iris_nb.train.config import TrainingConfig


def test_paper_defaults():
    cfg = TrainingConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.batches_per_update) == (32, 8, 16)
    assert cfg.validation_fraction == 0.2 and cfg.loss == "scaled_density"
    assert cfg.density_normalization == 1e-19 and cfg.optimizer == "adam" and cfg.lr == 1e-3
    assert cfg.scheduler == "multistep" and cfg.milestones == (16, 17, 18) and cfg.gamma == 0.5
    assert cfg.precision == "fp32" and cfg.num_workers == 0 and cfg.device is None


def test_json_and_yaml_round_trip(tmp_path):
    cfg = TrainingConfig(epochs=3, batch_size=2, milestones=[1, 2], lr=5e-4, device="cpu", precision="bf16",
                         split_seed=7, loss="mse")
    assert cfg.milestones == (1, 2)
    assert TrainingConfig.from_json(cfg.to_json()) == cfg
    assert TrainingConfig.from_yaml(cfg.to_yaml()) == cfg
    cfg.to_json(tmp_path / "c.json")
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainingConfig.from_json(tmp_path / "c.json") == cfg
    assert TrainingConfig.from_yaml(str(tmp_path / "c.yaml")) == cfg
    assert json.loads(cfg.to_json())["milestones"] == [1, 2]
    assert TrainingConfig.from_yaml("epochs: 4\nlr: 0.01\n") == TrainingConfig(epochs=4, lr=0.01)
    assert "epochs=3" in repr(cfg)


@pytest.mark.parametrize("field, value, kind", [
    ("lr", -1e-3, ValueError), ("lr", 0.0, ValueError), ("epochs", 0, ValueError),
    ("batch_size", 0, ValueError), ("batches_per_update", -2, ValueError),
    ("validation_fraction", 1.0, ValueError), ("validation_fraction", -0.1, ValueError),
    ("loss", "huber", ValueError), ("optimizer", "lbfgs", ValueError), ("precision", "fp8", ValueError),
    ("scheduler", "plateau", ValueError), ("gamma", 0.0, ValueError), ("milestones", (3, 2), ValueError),
    ("device", "gpu0", ValueError), ("epochs", 2.5, TypeError), ("lr", "fast", TypeError),
    ("density_normalization", float("nan"), ValueError), ("num_workers", -1, ValueError),
    ("checkpoint_every", 0, ValueError), ("seed", -3, ValueError),
])
def test_bad_values_name_the_field(field, value, kind):
    with pytest.raises(kind, match=field):
        TrainingConfig(**{field: value})


def test_unknown_keys_and_bad_text(tmp_path):
    with pytest.raises(ValueError, match="unknown TrainingConfig fields"):
        TrainingConfig.from_dict({"epochs": 2, "learning_rate": 0.1})
    with pytest.raises(FileNotFoundError, match="neither YAML text nor an existing YAML file"):
        TrainingConfig.from_yaml("not-a-file.yaml")
    with pytest.raises(ValueError, match="must hold a mapping"):
        TrainingConfig.from_yaml("- a list\n- not a mapping\n")
    with pytest.raises(FileNotFoundError):
        TrainingConfig.from_json(tmp_path / "missing.json")


def test_optimizer_and_multistep_schedule():
    cfg = TrainingConfig(milestones=(2, 3), gamma=0.5, lr=1e-2)
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = cfg.make_optimizer(params)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-2
    sched = cfg.make_scheduler(opt)
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([1e-2, 1e-2, 5e-3, 2.5e-3, 2.5e-3])
    sgd = TrainingConfig(optimizer="sgd", scheduler="constant").make_optimizer(params)
    assert isinstance(sgd, torch.optim.SGD)


def test_incompatible_changes_ignore_resumable_fields():
    base = TrainingConfig(epochs=2)
    assert base.incompatible_changes(base.replace(epochs=5, num_workers=2, device="cpu")) == {}
    assert set(base.incompatible_changes(base.replace(lr=0.1, seed=3))) == {"lr", "seed"}
    assert base.replace(split_seed=None).effective_split_seed == base.seed
