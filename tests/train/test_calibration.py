"""Calibrated ensembles (spread-skill, coverage), bootstrap members and column consistency."""

import numpy as np
import pytest
import torch

from iris_nb.data import FieldStream
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.model.consistency import column_consistent
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.batches import BatchPreparer
from iris_nb.train.config import TrainingConfig
from iris_nb.train.ensemble import train_ensemble
from iris_nb.train.evaluate import ensemble_calibration
from iris_nb.train.evaluate import test_reverter as evaluate

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")
OBSERVER = SimpleObserver(GRID)


def test_calibration_of_a_synthetic_ensemble_with_known_errors():
    rng = np.random.default_rng(0)
    pixels, members = 20_000, 400
    truth = np.zeros(pixels)
    centre = rng.normal(0.0, 1.0, pixels)  # the ensemble mean's error: N(0, 1) ...
    calibrated = centre + rng.normal(0.0, 1.0, (members, pixels))  # ... and a spread of 1: calibrated
    result = ensemble_calibration(calibrated, truth)
    assert result["spread_skill"] == pytest.approx(1.0, abs=0.02)
    assert result["coverage_1sigma"] == pytest.approx(0.683, abs=0.015)
    assert result["coverage_2sigma"] == pytest.approx(0.954, abs=0.01)
    confident = centre + rng.normal(0.0, 0.5, (members, pixels))  # half the spread it should have
    over = ensemble_calibration(confident, truth)
    assert over["spread_skill"] == pytest.approx(0.5, abs=0.02)
    assert over["coverage_1sigma"] == pytest.approx(0.383, abs=0.015)  # P(|N(0,1)| < 0.5)
    with pytest.raises(ValueError, match="members"):
        ensemble_calibration(calibrated[:, :10], truth)
    asinh = ensemble_calibration(np.sinh(calibrated) * 2.0, np.sinh(truth) * 2.0, n=2.0)
    assert asinh["spread_skill"] == pytest.approx(result["spread_skill"], rel=1e-9)


def test_bootstrap_ensemble_is_scored_with_its_spread(tmp_path):
    model = Reverter(GRID, input_space="v_density", width=0.25)
    config = TrainingConfig(epochs=1, batch_size=4, device="cpu", validation_fraction=0.25, seed=3)
    stream = FieldStream(GRID, n=16, seed=1)
    members, results = train_ensemble(3, model, stream, observer=OBSERVER, config=config, bootstrap=True,
                                      return_results=True, progress=False)
    assert all(m.provenance["ensemble"].get("bootstrap") for m in members)
    assert all(r.history["fields_drawn"] == 12 for r in results)  # 12 training fields each, drawn with repeats
    metrics = evaluate(members, FieldStream(GRID, n=4, seed=7), observer=OBSERVER, config=config)
    assert metrics["n_members"] == 3 and metrics["spread_skill"] > 0
    assert 0 <= metrics["coverage_1sigma"] <= metrics["coverage_2sigma"] <= 1
    single = evaluate(members[0], FieldStream(GRID, n=4, seed=7), observer=OBSERVER, config=config)
    assert "spread_skill" not in single


def test_column_consistency_restores_each_longitude_column():
    model = Reverter(GRID, input_space="v_density", width=0.25)
    stream = FieldStream(GRID, n=2, seed=4)
    inputs, targets = BatchPreparer(model, "stream", torch.device("cpu"), observer=OBSERVER, dataset=stream)(
        torch.arange(2))
    # the truth is column-consistent already: sum_d rho dr = sum_v pv dv where the window keeps all gas
    fixed = column_consistent(model, targets, inputs)
    observed = inputs.double().sum(-1) * GRID.velocity.step
    assert torch.allclose(fixed.double().sum(-2) * GRID.distance.step, observed, rtol=1e-4)
    halved = column_consistent(model, 0.5 * targets, inputs)
    assert torch.allclose(halved, fixed, rtol=1e-5)  # a uniformly wrong mass is put right
    with pytest.raises(ValueError, match="v_density"):
        column_consistent(Reverter(GRID, width=0.25), targets, inputs)
    metrics = evaluate(model, stream, observer=OBSERVER, config=TrainingConfig(device="cpu", batch_size=2),
                       column_consistent=True)
    assert metrics["column_consistent"] and np.isfinite(metrics["mass_error"])
