"""``benchmarks/evaluate_pretrained.py`` on a tiny configuration: an untrained SMALL Reverter,
two in-family fields, one out-of-family snapshot (written as AREPO HDF5, read by from_arepo)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import iris_nb

from ._scripts import load_script

pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def evaluation():
    return load_script("evaluate_pretrained")


def test_training_excitation_reads_provenance(evaluation):
    assert evaluation.training_excitation({"trained_on": "fields observed with LineObserver (lte)"})[0] == "lte"
    assert evaluation.training_excitation({"trained_on": "LineObserver 13CO(2-1) (escape) on SMALL"})[0] == "escape"
    assert evaluation.training_excitation({"trained_on": "LineObserver 13CO(2-1) on SMALL"})[0] == "lte"  # pre-non-LTE
    assert evaluation.training_excitation({})[0] is None


def test_tiny_evaluation_is_finite_and_complete(evaluation, tmp_path):
    torch.manual_seed(0)
    model = iris_nb.Reverter(iris_nb.SMALL, width=0.25)
    result = evaluation.evaluate(model, n=2, snapshots=1, n_baseline=2, particles=60_000, log=lambda *_: None)
    text = json.dumps(result, default=float)
    assert json.loads(text)["grid"] == "SMALL"
    assert result["excitation"] == "escape"  # an untrained model's provenance says nothing
    for label, count in (("in_family", 2), ("out_of_family", 1)):
        block = result[label]
        assert len(block["fields"]) == count and block["aggregate"]["n"] == count
        for key in ("loss", "baseline_loss", "loss_ratio", "loss_ratio_median", "correlation", "mass_error_mean",
                    "mass_error_median", "ood_fraction", "seconds_per_field"):
            assert math.isfinite(block["aggregate"][key]), (label, key)
        for row in block["fields"]:
            for key in ("loss", "baseline_loss", "loss_ratio", "correlation", "mass_true_msun", "mass_reverted_msun",
                        "mass_error"):
                assert math.isfinite(row[key]), (label, key)
            assert isinstance(row["ood_warning"], bool)
    snapshot = result["out_of_family"]["fields"][0]
    assert snapshot["mass_true_msun"] > 1e5 and snapshot["cube_peak_k"] > 1.0  # gas inside the window, seen
    assert set(snapshot["parameters"]) == set(evaluation.BAR_PARAMETERS)
    assert "in_family" in evaluation.table(result) and "out_of_family" in evaluation.table(result)


def test_snapshot_round_trip_puts_gas_in_the_window(evaluation, tmp_path):
    field, params = evaluation.snapshot_field(evaluation.SNAPSHOT_SEED, iris_nb.SMALL, tmp_path, particles=60_000)
    truth = iris_nb.sim.columnize(field)
    mass = evaluation.window_mass(truth.values, iris_nb.SMALL)
    assert 1e6 < mass < 1e8  # Msun of H2: a CMZ's worth, not everything and not nothing
    assert float(np.abs(field["velocity_los"]).max()) < 400.0
    assert not list(tmp_path.iterdir())  # the snapshot file is removed after reading
