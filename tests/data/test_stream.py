"""FieldStream: fresh fields drawn on the training device, reproducible, resumable, replayed."""

import pytest
import torch

from iris_nb.data import FieldStream, ReplaySampler, sample_seed
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.sim import CMZModel
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter as evaluate
from iris_nb.train.loop import train_reverter

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")
CONFIG = TrainingConfig(epochs=2, batch_size=2, batches_per_update=1, validation_fraction=0.25, device="cpu",
                        seed=5, milestones=(1,), gamma=0.5)


def model(seed=0):
    torch.manual_seed(seed)
    return Reverter(GRID, input_space="v_density", width=0.25)


def test_items_are_field_ids_drawn_as_cmz_model_fields():
    stream = FieldStream(GRID, n=5, seed=3, replay=2)
    assert len(stream) == 10
    assert [int(stream[i]) for i in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert stream.sample_seed(4) == sample_seed(3, 4)
    fields = stream.draw(torch.tensor([4, 1]))
    direct = CMZModel(GRID).sample([sample_seed(3, 4), sample_seed(3, 1)])
    for name, value in direct.items():
        assert torch.equal(fields[name], value), name
    train, val = stream.split(0.4, seed=1)
    assert set(train.fields).isdisjoint(val.fields) and len(train.fields) + len(val.fields) == 5
    assert train.replay == 2 and val.replay == 1 and len(val) == 2


def test_replay_sampler_repeats_aligned_batches_and_shares_fields_between_ranks():
    stream = FieldStream(GRID, n=7, replay=3)
    order = list(ReplaySampler(stream, batch_size=2, seed=4))
    assert len(order) == len(ReplaySampler(stream, batch_size=2)) == 4 * 2 * 3
    batches = [order[i:i + 2] for i in range(0, len(order), 2)]
    for g in range(0, len(batches), 3):
        fields = [[int(stream[i]) for i in b] for b in batches[g:g + 3]]
        assert fields[0] == fields[1] == fields[2]  # one fresh batch, used three times in a row
    assert {int(stream[i]) for i in order} == set(range(7))
    ranks = [{int(stream[i]) for i in ReplaySampler(stream, 2, seed=4, num_replicas=2, rank=r)} for r in (0, 1)]
    assert ranks[0] | ranks[1] == set(range(7))
    epoch = ReplaySampler(stream, batch_size=2, seed=4)
    epoch.set_epoch(1)
    assert list(epoch) != order


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="replay"):
        FieldStream(GRID, n=4, replay=0)
    with pytest.raises(TypeError, match="replay"):
        FieldStream(GRID, n=4, replay=1.5)
    with pytest.raises(ValueError, match="positive"):
        FieldStream(GRID, n=0)
    with pytest.raises(ValueError, match="grid"):
        FieldStream(GRID, n=4, model=CMZModel(SMALL))
    with pytest.raises(TypeError, match="CMZModel"):
        FieldStream(GRID, n=4, model=lambda grid, seed: None)
    with pytest.raises(ValueError, match="observer"):
        train_reverter(model(), FieldStream(GRID, n=4), config=CONFIG, progress=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    net = model()
    result = train_reverter(net, FieldStream(GRID, n=8, seed=2, replay=2), observer=SimpleObserver(GRID),
                            config=CONFIG, checkpoint_dir=tmp_path_factory.mktemp("straight"), progress=False)
    return net, result


def test_replayed_training_counts_draws_and_reuses(straight):
    net, result = straight
    # 6 training fields, batches of 2, replay 2: per epoch 3 fresh batches drawn once and used twice
    assert result.history["samples_seen"] == 2 * 12
    assert result.history["fields_drawn"] == 2 * 6
    assert result.history["fields_reused"] == 2 * 6
    assert all(torch.isfinite(torch.tensor(result.train_losses)))
    assert result.validation_losses[-1] is not None
    metrics = evaluate(net, FieldStream(GRID, n=3, seed=99), observer=SimpleObserver(GRID), config=CONFIG)
    assert metrics["n_samples"] == 3 and metrics["loss_ratio"] > 0


def test_interrupted_on_the_fly_run_resumes_to_the_uninterrupted_one(tmp_path, straight):
    def stop(event, info):  # inside the second epoch, between the two uses of a replayed batch
        return event == "batch_end" and info["epoch"] == 1 and info["batch"] == 2

    stream = FieldStream(GRID, n=8, seed=2, replay=2)
    first = train_reverter(model(), stream, observer=SimpleObserver(GRID), config=CONFIG, checkpoint_dir=tmp_path,
                           callbacks=[stop], progress=False)
    assert first.stopped
    resumed_net = model(77)
    resumed = train_reverter(resumed_net, stream, observer=SimpleObserver(GRID), config=CONFIG,
                             checkpoint_dir=tmp_path, progress=False)
    net, reference = straight
    assert resumed.train_losses == reference.train_losses
    assert resumed.validation_losses == reference.validation_losses
    for (name, a), b in zip(resumed_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_batch_that_does_not_fit_is_refused_before_training():
    from iris_nb.grids import SEDIGISM

    with pytest.raises(MemoryError, match="lower the batch"):
        train_reverter(Reverter(SEDIGISM, input_space="v_density", width=0.25), FieldStream(SEDIGISM, n=10),
                       observer=SimpleObserver(SEDIGISM), config=CONFIG.replace(batch_size=100_000), progress=False)
