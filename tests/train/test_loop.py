"""train_reverter / test_reverter on tiny grids: averaging, kinds of data, callbacks, checks, DDP."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from iris_nb.data.field_datasets import GasModelDataset
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.columnize import columnize_tensors
from iris_nb.sim.fields import field_tensors
from iris_nb.sim.litter import Litter
from iris_nb.sim.noise import Noise
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.batches import BatchPreparer, batch_generator
from iris_nb.train.config import TrainingConfig
from iris_nb.train.ensemble import train_ensemble
from iris_nb.train.evaluate import test_reverter
from iris_nb.train.loop import train_reverter
from iris_nb.train.losses import ScaledDensityLoss
from iris_nb.train.result import TrainingResult

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")


def pairs(n=6, seed=0):
    """Observed pairs whose target is a smooth function of the input (learnable, non-negative)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 64, 64, generator=gen)
    y = 3.0 * torch.nn.functional.avg_pool2d(x, 5, 1, 2).transpose(2, 3) ** 2
    return TensorDataset(x, y)


def model(seed=0, grid=GRID, input_space="temperature"):
    torch.manual_seed(seed)
    return Reverter(grid, input_space=input_space)


def quick(**changes):
    base = dict(epochs=1, batch_size=2, batches_per_update=1, validation_fraction=0.0, device="cpu")
    return TrainingConfig(**{**base, **changes})


class AddPV:
    """A litter stand-in with the Litter API: adds a fixed PV image to every input."""

    def __init__(self, image):
        self.image = image
        self.calls = 0

    def __call__(self, x, generator=None):
        self.calls += 1
        return x + self.image.to(x.device)


def test_gradients_are_averaged_over_each_accumulation_group():
    data = pairs(3)
    cfg = quick(batch_size=1, batches_per_update=2, optimizer="sgd", lr=1e-2, scheduler="constant")
    trained, manual, summed = model(), model(), model()
    train_reverter(trained, data, config=cfg, progress=False)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
    sampler.set_epoch(0)
    order = list(sampler)
    loss_fn = ScaledDensityLoss(manual)
    for net, average in ((manual, True), (summed, False)):
        net.train()
        opt = cfg.make_optimizer(net.parameters())
        for group in ([order[0], order[1]], [order[2]]):  # the last group is partial
            opt.zero_grad()
            for i in group:
                loss = loss_fn(net(data.tensors[0][i:i + 1], reduce=False), data.tensors[1][i:i + 1])
                (loss / (len(group) if average else 1)).backward()
            opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(trained.parameters(), manual.parameters()))
    diff_sum = max((a - b).abs().max().item() for a, b in zip(trained.parameters(), summed.parameters()))
    assert diff < 1e-6
    assert diff_sum > 100 * max(diff, 1e-9)


def test_callbacks_progress_result_and_model_file(tmp_path):
    events = []

    def record(event, info):
        events.append((event, dict(info)))

    cfg = quick(epochs=2, validation_fraction=0.34, milestones=(1,), gamma=0.5)
    result = train_reverter(model(), pairs(6), config=cfg, checkpoint_dir=tmp_path, callbacks=record,
                            progress=False)
    names = [e for e, _ in events]
    assert names[0] == "train_begin" and names[-1] == "train_end"
    assert names.count("epoch_end") == 2 and names.count("batch_end") == 4
    batch = next(info for e, info in events if e == "batch_end")
    assert set(batch) >= {"epoch", "batch", "n_batches", "loss", "lr"}
    assert result.train_losses == [info["train_loss"] for e, info in events if e == "epoch_end"]
    assert len(result.validation_losses) == 2 and all(v > 0 for v in result.validation_losses)
    assert result.learning_rates == pytest.approx([1e-3, 5e-4])
    assert not result.stopped and result.peak_memory > 0 and len(result.epoch_times) == 2
    again = TrainingResult.from_dict(json.loads(result.to_json()))
    assert again.train_losses == result.train_losses and again.config == cfg
    loaded = Reverter.load(tmp_path / "model.pt")
    assert loaded.provenance["training"]["epochs_completed"] == 2
    for key, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), loaded.state_dict()[key])


def test_callback_stop_writes_checkpoint_and_marks_result(tmp_path):
    def stop_at_third_batch(event, info):
        return event == "batch_end" and info["epoch"] == 0 and info["batch"] == 2

    result = train_reverter(model(), pairs(8), config=quick(epochs=3, batches_per_update=2),
                            checkpoint_dir=tmp_path, callbacks=[stop_at_third_batch], progress=False)
    assert result.stopped and result.train_losses == []
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (0, 3)
    assert state["pending_gradients"]  # stopped inside an accumulation group


def test_noise_and_litter_touch_inputs_only():
    data = pairs(4)
    litter = AddPV(torch.full((1, 1, 64, 64), 0.5))
    noise = Noise(sigma=0.3, channel_width="grid", correlated_beam=False, fade=False)  # 0.3 K per pixel
    prep = BatchPreparer(model(), "pairs", torch.device("cpu"), noise=noise, litter=litter)
    batch = (data.tensors[0][:4], data.tensors[1][:4])
    inputs, targets = prep(batch, batch_generator(0, "train", 0, 0))
    assert torch.equal(targets, batch[1]) and litter.calls == 1
    noise_part = inputs - batch[0] - 0.5
    expected_std = 0.3 / np.sqrt(GRID.lat.steps)  # PV noise of a mean over lat pixels
    assert float(noise_part.std()) == pytest.approx(expected_std, rel=0.1)
    again, _ = prep(batch, batch_generator(0, "train", 0, 0))
    assert torch.equal(again, inputs)  # same (seed, epoch, batch): same draws
    faded = Noise(sigma=0.3, channel_width="grid", correlated_beam=False)
    result = train_reverter(model(), data, noise=faded, litter=litter, config=quick(), progress=False)
    assert litter.calls > 1 and np.isfinite(result.train_losses[0])
    real = Litter(torch.full((3, 1, 64, 64), 0.25), p=1.0)  # the package's Litter: every sample hit
    prep = BatchPreparer(model(), "pairs", torch.device("cpu"), litter=real)
    littered, same_targets = prep(batch, batch_generator(0, "train", 0, 1))
    assert torch.allclose(littered, batch[0] + 0.25) and torch.equal(same_targets, batch[1])
    real.units = "mK"  # litter images in other units than the model's inputs (K) are refused
    with pytest.raises(ValueError, match="litter"):
        BatchPreparer(model(), "pairs", torch.device("cpu"), litter=real)


def test_physical_fields_are_observed_on_the_fly():
    fields = GasModelDataset(GRID, n=4, seed=3)
    observer = SimpleObserver(GRID)
    with pytest.raises(ValueError, match="input_space"):
        BatchPreparer(model(), "fields", torch.device("cpu"), observer=observer)
    mdl = model(input_space="v_density")
    prep = BatchPreparer(mdl, "fields", torch.device("cpu"), observer=observer)
    batch = {k: torch.stack([fields[0][k], fields[1][k]]) for k in fields[0]}
    inputs, targets = prep(batch)
    direct = field_tensors([make_cmz(GRID, seed=fields.sample_seed(i)) for i in (0, 1)])
    assert torch.allclose(inputs[:, 0], observer(direct).mean(dim=2), rtol=1e-5)
    assert torch.allclose(targets[:, 0], columnize_tensors(direct), rtol=1e-5)
    result = train_reverter(mdl, fields, observer=observer, config=quick(validation_fraction=0.5), progress=False)
    assert len(result.train_losses) == 1 and result.validation_losses[0] is not None
    metrics = test_reverter(mdl, GasModelDataset(GRID, n=2, seed=9), observer=observer, config=quick())
    assert metrics["n_samples"] == 2 and np.isfinite(metrics["physical_loss"])


def test_store_pairs_are_converted_to_the_model_units(tmp_path):
    from iris_nb.data.datasets import PreObservedDataset
    from iris_nb.data.store import write_dataset
    from iris_nb.units import density_scale

    write_dataset(tmp_path / "store", 4, GRID, observer=SimpleObserver(GRID), seed=1, workers=0, progress=False)
    train = PreObservedDataset(tmp_path / "store", split="train", validation_fraction=0.25, test_fraction=0.0)
    with pytest.raises(ValueError, match="input_space"):
        train_reverter(model(), train, config=quick())  # a brightness model given column densities
    mdl = Reverter(GRID, input_space="v_density", units={"density": "solMass / kpc3", "v_density": "kg s / m3"})
    prep = BatchPreparer(mdl, "pairs", torch.device("cpu"), dataset=train)
    x, y = train[0]
    inputs, targets = prep((x[None], y[None]))
    assert torch.allclose(targets[0], y * density_scale("solMass / pc3", "solMass / kpc3"), rtol=1e-5)
    assert torch.allclose(inputs[0], x * mdl.input_scale("solMass s / (km pc2)", "v_density"), rtol=1e-5)
    result = train_reverter(mdl, train, config=quick(), progress=False)
    assert np.isfinite(result.train_losses[0])


def test_a_store_is_read_chunk_by_chunk_in_training(tmp_path, monkeypatch):
    """A uniform shuffle would decode a whole chunk for nearly every sample (what made GPU
    training on a 6000-sample store 10x slower than its step); train_reverter visits a store's
    chunks in random order, each decoded once per epoch, with its samples shuffled inside."""
    from iris_nb.data.datasets import PreObservedDataset
    from iris_nb.data.store import write_dataset

    write_dataset(tmp_path / "store", 24, GRID, observer=SimpleObserver(GRID), seed=1, workers=0, progress=False,
                  chunk_size=4)
    train = PreObservedDataset(tmp_path / "store", split="train", validation_fraction=0.0, test_fraction=0.0,
                               cache_chunks=1)
    decoded, read = [], []
    original_chunk, original_item = PreObservedDataset._chunk, PreObservedDataset.__getitem__
    monkeypatch.setattr(PreObservedDataset, "_chunk",
                        lambda self, chunk: decoded.append(chunk) or original_chunk(self, chunk))
    monkeypatch.setattr(PreObservedDataset, "__getitem__",
                        lambda self, item: read.append(int(item)) or original_item(self, item))

    def start_counting(event, info):
        if event == "train_begin":  # forget the reads of the checks before training
            decoded.clear(), read.clear()

    mdl = Reverter(GRID, input_space="v_density")
    train_reverter(mdl, train, config=quick(epochs=2, batch_size=3), callbacks=[start_counting], progress=False)
    assert len(read) == 48
    first, second = read[:24], read[24:]
    assert sorted(first) == sorted(second) == list(range(24)) and first != second  # reshuffled per epoch
    assert len(decoded) == 48
    for epoch in (decoded[:24], decoded[24:]):  # with a 1-chunk cache, a decode at every change of chunk
        assert sum(a != b for a, b in zip(epoch, epoch[1:])) + 1 == 6  # six chunks, each decoded once
    blocks = [read[i:i + 4] for i in range(0, 48, 4)]
    chunks = train.chunk_ids()
    assert all(len({int(chunks[b]) for b in block}) == 1 for block in blocks)  # one chunk after the other
    assert any(block != sorted(block) for block in blocks)  # shuffled inside the chunks


def test_a_non_finite_loss_stops_training_before_the_weights_change():
    x, y = pairs(4)[:]
    huge = TensorDataset(x, torch.full_like(y, 1e30))  # MSE: ((pred - 1e30) / n)^2 overflows float32
    mdl = model()
    before = {k: v.clone() for k, v in mdl.state_dict().items()}
    with pytest.raises(FloatingPointError, match="training loss became inf at epoch 1, batch 1"):
        train_reverter(mdl, huge, config=quick(loss="mse"), progress=False)
    after = mdl.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked")
               and "running" not in k)


def test_channels_last_training_gives_the_model_back_as_it_came():
    net = model()
    result = train_reverter(net, pairs(4), config=quick(channels_last=True), progress=False)
    assert np.isfinite(result.train_losses[0])
    assert not net.channels_last and net.encoder[0].weight.is_contiguous()
    net.channels_last = True  # a model that was channels-last stays so
    train_reverter(net, pairs(4), config=quick(channels_last=True), progress=False)
    assert net.channels_last and net.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_on_cpu_trains():
    result = train_reverter(model(), pairs(2), config=quick(precision="bf16"), progress=False)
    assert np.isfinite(result.train_losses[0])


def test_bad_input_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        train_reverter(model(), TensorDataset(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)), config=quick())
    other = GRID.replace(lat=GRID.lat.with_steps(4))
    with pytest.raises(ValueError, match="grid"):
        train_reverter(model(input_space="v_density"), GasModelDataset(other, n=2), observer=SimpleObserver(other),
                       config=quick())
    with pytest.raises(ValueError, match="observer"):
        train_reverter(model(), GasModelDataset(GRID, n=2), config=quick())
    with pytest.raises(ValueError, match="empty validation split"):
        train_reverter(model(), pairs(3), config=quick(validation_fraction=0.1))
    with pytest.raises(ValueError, match="empty"):
        train_reverter(model(), TensorDataset(torch.rand(0, 1, 64, 64), torch.rand(0, 1, 64, 64)), config=quick())
    with pytest.raises(ValueError, match="fp16"):
        train_reverter(model(), pairs(2), config=quick(precision="fp16"))
    bad = pairs(2)
    bad.tensors[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_reverter(model(), bad, config=quick())
    with pytest.raises(TypeError, match="TrainingConfig"):
        train_reverter(model(), pairs(2), config="fast")
    assert list(tmp_path.iterdir()) == []


def test_metrics_of_a_perfect_model_and_of_the_baseline():
    mdl = model().eval()
    x = pairs(4).tensors[0]
    with torch.no_grad():
        prediction = mdl(x, reduce=False)
    y = prediction * 1.02  # 2% more mass than the model predicts, same structure
    metrics = test_reverter(mdl, TensorDataset(x, y), config=quick())
    assert metrics["physical_loss"] < 1e-3 and metrics["correlation"] > 0.999
    assert metrics["correlation_per_sample"] > 0.999
    assert metrics["mass_error"] == pytest.approx(0.02 / 1.02, rel=1e-4)
    assert metrics["mass_bias"] == pytest.approx(-0.02 / 1.02, rel=1e-4)
    expected_bias = (prediction - y).mean(dim=0)[0].numpy()
    assert metrics["bias_map"].shape == (64, 64) and np.allclose(metrics["bias_map"], expected_bias, atol=1e-6)
    assert metrics["n_samples"] == 4 and metrics["density_unit"] == "solMass / pc3"
    mean_map = y.mean(dim=0)[0]
    loss_fn = ScaledDensityLoss(mdl)
    expected = float(loss_fn(mean_map.expand_as(y), y))
    assert metrics["constant_baseline_loss"] == pytest.approx(expected, rel=1e-5)
    given = test_reverter(mdl, TensorDataset(x, y), config=quick(), baseline=2.0)
    assert given["constant_baseline_loss"] == pytest.approx(float(loss_fn(torch.full_like(y, 2.0), y)), rel=1e-5)
    from_train = test_reverter(mdl, TensorDataset(x, y), config=quick(), train_dataset=TensorDataset(x, y * 0 + 2.0))
    assert from_train["constant_baseline_loss"] == pytest.approx(given["constant_baseline_loss"], rel=1e-5)


def test_ensemble_members_differ_and_checkpoint_apart(tmp_path):
    template = model()
    models, results = train_ensemble(2, template, pairs(4), config=quick(seed=5), checkpoint_dir=tmp_path,
                                     progress=False, return_results=True)
    assert len(models) == 2 and all(isinstance(m, Reverter) for m in models)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member_00_seed_5", "member_01_seed_6"]
    assert [r.config.seed for r in results] == [5, 6] and {r.config.split_seed for r in results} == {5}
    first, second = (m.state_dict()["encoder._9_1_convolution.weight"] for m in models)
    assert not torch.allclose(first, second)
    assert models[1].provenance["ensemble"] == {"member": 1, "members": 2, "seed": 6}
    assert template.training  # the template itself is not trained
    with pytest.raises(ValueError, match="distinct"):
        train_ensemble(2, template, pairs(4), config=quick(), seeds=[3, 3])



def test_ensemble_members_keep_the_template_width():
    torch.manual_seed(0)
    narrow = Reverter(GRID, input_space="temperature", width=0.25)
    fresh = train_ensemble(1, narrow, pairs(2), config=quick(), progress=False)
    tuned = train_ensemble(1, narrow, pairs(2), config=quick(), reinitialize=False, progress=False)
    for member in fresh + tuned:
        assert member.width == 0.25 and member.num_parameters() == narrow.num_parameters()

def test_port_in_use_gives_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
               "LOCAL_RANK": "0", "WORLD_SIZE": "2"}
        code = "from iris_nb.train.distributed import init_from_env; init_from_env('cpu', timeout_s=20)"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "DistributedSetupError" in done.stderr and "already in use" in done.stderr
    env = {**os.environ, "WORLD_SIZE": "2"}
    env.pop("MASTER_PORT", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "torchrun" in done.stderr and "MASTER_PORT" in done.stderr


# ----------------------------------------------------------------------------- DDP (gloo, 2 ranks)
def _ddp_worker(rank, port, data_path, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    from iris_nb.train.distributed import cleanup, init_from_env, is_distributed

    device = init_from_env("cpu")
    assert is_distributed()
    data = torch.load(data_path, weights_only=True)
    net = model()
    result = train_reverter(net, TensorDataset(*data), config=_ddp_config(1), checkpoint_dir=out_dir, progress=False)
    torch.save({"state": net.state_dict(), "train": result.train_losses, "validation": result.validation_losses,
                "device": str(device)}, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup()


def _ddp_config(batch_size):
    # SGD: Adam would turn float rounding in near-zero gradients into steps of size lr
    return quick(epochs=2, batch_size=batch_size, batches_per_update=2, validation_fraction=0.25, optimizer="sgd",
                 lr=1e-3)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_global_batch(tmp_path):
    data = pairs(8, seed=5)
    torch.save(list(data.tensors), tmp_path / "data.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(port, str(tmp_path / "data.pt"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = model()
    reference = train_reverter(single, data, config=_ddp_config(2), progress=False)
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
        if value.is_floating_point():
            assert torch.allclose(value, single.state_dict()[key], rtol=1e-4, atol=1e-6), key
    assert ranks[0]["train"] == pytest.approx(reference.train_losses, rel=1e-5)
    assert ranks[0]["validation"] == pytest.approx(reference.validation_losses, rel=1e-4)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["world_size"] == 2
