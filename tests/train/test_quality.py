"""Quality of a Reverter trained for a few CPU minutes on SMALL synthetic data.

Data: CMZ fields from the package's gas model (``make_cmz``, every parameter random),
observed once with ``SimpleObserver`` (velocity-resolved H2 column) into memory; no store.
A width-0.5 Reverter (3.6 M parameters) trains 10 epochs on 896 fields and is tested on 96
held-out fields.  On the revised default family (issue 11: ring or stream across the bar,
lopsided, offset in latitude; harder than the first family), measured on 2 cores: 48 s of
data and 76 s of training; held-out ScaledDensityLoss 0.562 of the constant baseline (the
mean training map predicted for every field; the untrained network scores 0.667), Pearson r
of asinh(density / n) 0.803 (untrained: 0.02).  On the first family the same run gave
0.54-0.60 and r about 0.85.

Issue 4 sets the loss bar at 0.5 of that baseline.  It is NOT reached within this budget: on
an H100 (``benchmarks/quality_sweep.py``: the same fields and configuration, tested on fields
6000-6095 rather than 896-991) the ratio is 0.533 with these 896 training fields, 0.506 with
1344, 0.507 with 3000 and 0.467 (r 0.904) with 6000 fields and 10 epochs -- 60 000 sample
passes, about 15 minutes of training on 2 cores.  So on a CPU this test asserts what a few minutes do reach --
correlation above 0.75, loss clearly below the baseline (ratio under 0.7) and below the
untrained network's -- and prints every number (``pytest -s``); where CUDA is available,
``test_quality_bar_on_a_gpu`` trains the 6000-field configuration and asserts the bar itself.
"""

import os
import time

import pytest
import torch
from torch.utils.data import Subset

from iris_nb.data.field_datasets import GasModelDataset, observed_pairs
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter

N_TRAIN, N_TEST, WIDTH = 896, 96, 0.5
CONFIG = TrainingConfig(epochs=10, batch_size=16, batches_per_update=1, lr=1e-3, milestones=(6, 8), gamma=0.3,
                        validation_fraction=0.0, seed=0, device="cpu", channels_last=True)


def train_and_test(n_train: int, n_test: int, width: float, config: TrainingConfig, workers: int = 0) -> dict:
    """Draw and observe the fields, train from seed 0, and return the held-out metrics (with
    the untrained network's) after printing them."""
    start = time.perf_counter()
    fields = GasModelDataset(SMALL, n=n_train + n_test, seed=2024)
    pairs = observed_pairs(fields, SimpleObserver(SMALL), batch_size=16, device=config.device, num_workers=workers)
    train, test = Subset(pairs, range(n_train)), Subset(pairs, range(n_train, n_train + n_test))
    data_seconds = time.perf_counter() - start
    torch.manual_seed(0)
    model = Reverter(SMALL, input_space="v_density", width=width)
    untrained = test_reverter(model, test, config=config, train_dataset=train)
    result = train_reverter(model, train, config=config, progress=False)
    values = test_reverter(model, test, config=config, train_dataset=train)
    print(f"\nquality (SMALL, width {width}, {n_train} training / {n_test} held-out fields, {config.epochs} "
          f"epochs, {config.device}): data {data_seconds:.0f} s, training {sum(result.epoch_times):.0f} s")
    print(f"  held-out ScaledDensityLoss {values['physical_loss']:.4f}, constant baseline "
          f"{values['constant_baseline_loss']:.4f}: ratio {values['loss_ratio']:.3f} (issue bar 0.5); "
          f"untrained ratio {untrained['loss_ratio']:.3f}, correlation {untrained['correlation']:.3f}")
    print(f"  correlation {values['correlation']:.3f} (CPU test bar > 0.75), per map {values['correlation_per_sample']:.3f}, "
          f"mass error {values['mass_error']:.3f}")
    print(f"  train losses {[round(v, 4) for v in result.train_losses]}")
    assert values["n_samples"] == n_test
    return {**values, "untrained_loss": untrained["physical_loss"], "untrained_correlation": untrained["correlation"]}


@pytest.fixture(scope="module")
def metrics():
    return train_and_test(N_TRAIN, N_TEST, WIDTH, CONFIG, workers=2)


@pytest.mark.slow
def test_reverted_maps_correlate_with_the_truth(metrics):
    assert metrics["correlation"] > 0.75 > metrics["untrained_correlation"]


@pytest.mark.slow
def test_held_out_loss_is_well_below_the_constant_baseline(metrics):
    assert metrics["physical_loss"] < 0.7 * metrics["constant_baseline_loss"]
    assert metrics["physical_loss"] < 0.9 * metrics["untrained_loss"]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: 60 000 sample passes, ~3 min on an H100")
def test_quality_bar_on_a_gpu():
    """Issue 4's bar itself, in the configuration that met it on an H100 (0.467, r 0.904;
    ``benchmarks/results/quality_sweep_cuda.json``): 6000 fields, width 0.5, 10 epochs."""
    config = CONFIG.replace(device="cuda")
    values = train_and_test(6000, N_TEST, WIDTH, config, workers=min(14, os.cpu_count() or 1))
    assert values["loss_ratio"] <= 0.5
    assert values["correlation"] > 0.8
