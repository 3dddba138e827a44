"""Two-output Reverters (density and velocity) and the Cool-chic synthesis head."""

import pytest
import torch

from iris_nb.data import FieldStream
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.model.model_file import ModelFileError
from iris_nb.model.head import SynthesisHead, parse_layer
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter as evaluate
from iris_nb.train.loop import train_reverter
from iris_nb.train.losses import DensityVelocityLoss, make_loss

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")


def test_two_output_model_predicts_density_and_velocity_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Reverter(GRID, input_space="v_density", width=0.25, outputs=("density", "velocity"))
    out = model(torch.rand(3, 1, 64, 64), reduce=False)
    assert out.shape == (3, 2, 64, 64) and bool((out[:, 0] >= 0).all()) and bool((out[:, 1] < 0).any())
    plain = Reverter(GRID, input_space="v_density", width=0.25)
    assert plain(torch.rand(1, 1, 64, 64), reduce=False).shape == (1, 1, 64, 64)
    # the IRIS layers are unchanged; the velocity head is extra
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("velocity_head.decoder.") for k in extra)
    assert all(plain.state_dict()[k].shape == v.shape for k, v in model.state_dict().items() if k not in extra)
    model.save(tmp_path / "two.pt")
    again = Reverter.load(tmp_path / "two.pt")
    assert again.outputs == ("density", "velocity")
    x = torch.rand(2, 1, 64, 64)
    model.eval(), again.eval()
    assert torch.equal(model(x, reduce=False), again(x, reduce=False))
    with pytest.raises(ModelFileError, match="outputs"):
        Reverter.load(tmp_path / "two.pt", outputs=("density",))
    plain.save(tmp_path / "one.pt")
    assert Reverter.load(tmp_path / "one.pt", outputs="density").outputs == ("density",)
    with pytest.raises(ValueError, match="outputs must be one of"):
        Reverter(GRID, outputs=("velocity",))
    scaled = model.call_in_units(x, "solMass s / (km pc2)", "g/cm3", in_space="v_density", reduce=False)
    assert torch.allclose(scaled[:, 1], model(x, reduce=False)[:, 1])  # velocities stay in km/s


def test_two_output_training_on_fields_reports_velocity_error():
    torch.manual_seed(1)
    model = Reverter(GRID, input_space="v_density", width=0.25, outputs=("density", "velocity"))
    assert isinstance(make_loss("scaled_density", model), DensityVelocityLoss)
    config = TrainingConfig(epochs=2, batch_size=4, device="cpu", validation_fraction=0.25, seed=2)
    observer = SimpleObserver(GRID)
    result = train_reverter(model, FieldStream(GRID, n=12, seed=4), observer=observer, config=config,
                            progress=False)
    assert all(torch.isfinite(torch.tensor(result.train_losses)))
    metrics = evaluate(model, FieldStream(GRID, n=4, seed=5), observer=observer, config=config)
    assert 0 < metrics["velocity_rmse"] < 500 and metrics["velocity_loss"] > 0
    assert metrics["loss_ratio"] > 0 and "correlation" in metrics
    from torch.utils.data import TensorDataset

    pairs = TensorDataset(torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64))
    with pytest.raises(ValueError, match="velocity"):
        train_reverter(model, pairs, config=config, progress=False)


def test_velocity_loss_weights_pixels_by_their_gas():
    loss = DensityVelocityLoss(make_loss("scaled_density"), velocity_scale=10.0)
    true = torch.zeros(1, 2, 4, 4)
    true[0, 0, 0, 0] = 100.0  # one dense pixel
    pred = true.clone()
    pred[0, 1, 3, 3] = 500.0  # a wrong velocity where there is no gas: free
    assert loss.velocity_term(pred, true).item() == pytest.approx(0.0, abs=1e-6)
    pred[0, 1, 0, 0] = 10.0  # 10 km/s off in the dense pixel: one velocity_scale
    assert loss.velocity_term(pred, true).item() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="two-output"):
        loss(pred[:, :1], true[:, :1])


def test_head_layers_parse_and_start_as_identity():
    assert parse_layer("16-3-residual-relu") == (16, 3, "residual", "relu")
    assert parse_layer(" 1-1-linear-none ") == (1, 1, "linear", "none")
    for bad, message in (("16-3-residual", "does not parse"), ("16-2-linear-relu", "odd"),
                         ("0-1-linear-none", ">= 1"), ("a-b-c-d", "does not parse")):
        with pytest.raises(ValueError, match=message):
            parse_layer(bad)
    with pytest.raises(TypeError):
        parse_layer(16)
    with pytest.raises(ValueError, match="residual"):
        SynthesisHead(1, ["16-3-residual-relu", "1-1-linear-none"])
    with pytest.raises(ValueError, match="last layer"):
        SynthesisHead(2, ["16-3-linear-relu", "1-1-linear-none"])
    head = SynthesisHead(2, ["16-3-linear-relu", "16-3-residual-relu", "2-1-linear-none"])
    x = torch.randn(2, 2, 8, 8)
    assert torch.allclose(head(x), x)  # a new head passes the maps through
    torch.manual_seed(3)
    with_head = Reverter(GRID, width=0.25, head=["8-3-linear-relu", "1-1-linear-none"])
    torch.manual_seed(3)
    without = Reverter(GRID, width=0.25)
    pv = torch.rand(2, 1, 64, 64)
    with_head.eval(), without.eval()
    assert torch.allclose(with_head(pv, reduce=False), without(pv, reduce=False), atol=1e-6)
    assert with_head.num_parameters() > without.num_parameters()


def test_head_is_saved_and_trained(tmp_path):
    torch.manual_seed(0)
    model = Reverter(GRID, input_space="v_density", width=0.25, head=["8-3-linear-relu", "1-1-linear-none"])
    model.save(tmp_path / "head.pt")
    again = Reverter.load(tmp_path / "head.pt")
    assert again.head is not None and again.head.layers == ["8-3-linear-relu", "1-1-linear-none"]
    before = model.head.convolutions[-1].weight.detach().clone()
    train_reverter(model, FieldStream(GRID, n=8, seed=1), observer=SimpleObserver(GRID),
                   config=TrainingConfig(epochs=1, batch_size=4, device="cpu", validation_fraction=0.0),
                   progress=False)
    assert not torch.equal(before, model.head.convolutions[-1].weight)


def test_in_memory_pairs_with_velocity_train_a_two_output_model():
    from iris_nb.data.field_datasets import observed_pairs
    from iris_nb.sim.columnize import columnize_velocity_tensors

    stream = FieldStream(GRID, n=6, seed=2)
    pairs = observed_pairs(stream, SimpleObserver(GRID), velocity=True, batch_size=3)
    assert pairs.tensors[1].shape == (6, 2, 64, 64)
    fields = stream.draw(torch.tensor([4]))
    assert torch.allclose(pairs.tensors[1][4, 1], columnize_velocity_tensors(fields)[0])
    torch.manual_seed(2)
    model = Reverter(GRID, input_space="v_density", width=0.25, outputs=("density", "velocity"))
    result = train_reverter(model, pairs, config=TrainingConfig(epochs=1, batch_size=3, device="cpu",
                                                                validation_fraction=0.0), progress=False)
    assert all(torch.isfinite(torch.tensor(result.train_losses)))
