"""RIM: refinement through the forward model's gradient; data-consistency maps in revert."""

import numpy as np
import pytest
import torch

from iris_nb.data import FieldStream
from iris_nb.grids import SMALL
from iris_nb.model import RIM, Reverter
from iris_nb.model.model_file import ModelFileError
from iris_nb.reversion import revert
from iris_nb.sim import make_cmz
from iris_nb.sim.observers import SimpleObserver
from iris_nb.sim.topdown import TopDownObserver
from iris_nb.train.batches import BatchPreparer
from iris_nb.train.config import TrainingConfig
from iris_nb.train.evaluate import test_reverter as evaluate
from iris_nb.train.loop import train_reverter
from iris_nb.train.losses import StepWeightedLoss, make_loss

GRID = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")
OBSERVER = SimpleObserver(GRID)
CONFIG = TrainingConfig(epochs=4, batch_size=8, device="cpu", validation_fraction=0.0, seed=1)


def two_output(seed=0):
    torch.manual_seed(seed)
    return Reverter(GRID, input_space="v_density", width=0.25, outputs=("density", "velocity"))


@pytest.fixture(scope="module")
def trained():
    """A briefly trained two-output CNN, a RIM trained on top of it and held-out pairs."""
    cnn = two_output()
    train_reverter(cnn, FieldStream(GRID, n=96, seed=1), observer=OBSERVER, config=CONFIG, progress=False)
    rim = RIM(cnn, steps=3, hidden=16)
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    result = train_reverter(rim, FieldStream(GRID, n=96, seed=2), observer=OBSERVER, config=CONFIG.replace(epochs=2),
                            progress=False)
    held_out = FieldStream(GRID, n=16, seed=9)
    inputs, targets = BatchPreparer(cnn, "stream", torch.device("cpu"), observer=OBSERVER, dataset=held_out)(
        torch.arange(16))
    return cnn, rim, before, result, held_out, inputs, targets


def test_bad_rims_are_refused():
    with pytest.raises(ValueError, match="velocity"):
        RIM(Reverter(GRID, input_space="v_density", width=0.25))
    with pytest.raises(ValueError, match="steps"):
        RIM(two_output(), steps=0)
    with pytest.raises(ValueError, match="grid"):
        RIM(two_output(), forward_model=TopDownObserver(SMALL))
    with pytest.raises(TypeError, match="Reverter"):
        RIM(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'intensity'"):
        RIM(Reverter(GRID, input_space="intensity", width=0.25, outputs=("density", "velocity")))


def test_an_untrained_rim_returns_the_reverter_maps_and_its_gradient_lowers_the_misfit():
    cnn = two_output().eval()
    rim = RIM(cnn, steps=2).eval()
    pv = torch.rand(2, 1, 64, 64) * 5
    with torch.no_grad():
        assert torch.allclose(rim(pv, reduce=False), cnn(pv, reduce=False), atol=1e-5)
    maps = cnn(pv, reduce=False).detach()
    u, w = torch.asinh(maps[:, :1] / rim.n), maps[:, 1:] / 100.0
    grad_u, grad_w, misfit = rim.misfit_gradient(u, w, pv)
    lower = rim.misfit_gradient(u - 1e-2 * rim._normalise(grad_u), w, pv)[2]
    assert bool((lower < misfit).all())
    assert isinstance(make_loss("scaled_density", rim), StepWeightedLoss)


def test_brief_training_lowers_the_pv_residual_of_the_cnn(trained):
    cnn, rim, before, result, held_out, inputs, targets = trained
    for key, value in cnn.state_dict().items():  # the Reverter stayed frozen
        assert torch.equal(value, before[key]), key
    cnn.eval(), rim.eval()
    with torch.no_grad():
        first, *steps = rim.refine(inputs, reduce=False)
        residuals = [float((rim.observe(m) - inputs).square().mean()) for m in [first] + steps]
    assert residuals[-1] < residuals[0]
    assert all(np.isfinite(result.train_losses))
    metrics = evaluate(rim, held_out, observer=OBSERVER, config=CONFIG)
    assert np.isfinite(metrics["loss_ratio"]) and np.isfinite(metrics["velocity_rmse"])


def test_rim_files_round_trip_and_revert_gives_consistency_maps(trained, tmp_path):
    cnn, rim, *_ = trained
    rim.save(tmp_path / "rim.pt", provenance={"note": "test"})
    again = RIM.load(tmp_path / "rim.pt")
    assert again.steps == 3 and again.provenance["note"] == "test"
    pv = torch.rand(2, 1, 64, 64) * 5
    rim.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(rim(pv, reduce=False), again(pv, reduce=False), atol=1e-6)
    with pytest.raises(ModelFileError, match="RIM.load"):
        Reverter.load(tmp_path / "rim.pt")
    cnn.save(tmp_path / "cnn.pt")
    with pytest.raises(ModelFileError, match="not a RIM"):
        RIM.load(tmp_path / "cnn.pt")

    cube = OBSERVER.observe(make_cmz(GRID, seed=77))
    for model in (cnn, rim):
        out = revert(cube, model, device="cpu")
        assert set(out.data_vars) == {"density", "velocity_los", "pv", "pv_model", "pv_residual"}
        assert out["pv"].dims == ("lon", "velocity") and out["velocity_los"].attrs["units"] == "km / s"
        np.testing.assert_allclose(out["pv"].values, cube.mean("lat").transpose("lon", "velocity").values,
                                   rtol=1e-4, atol=1e-4 * float(np.abs(out["pv"]).max()))
        np.testing.assert_allclose(out["pv_residual"].values, out["pv"].values - out["pv_model"].values, atol=1e-5)
        again = TopDownObserver(GRID)(torch.from_numpy(out["density"].values)[None, None],
                                      torch.from_numpy(out["velocity_los"].values)[None, None])[0, 0]
        np.testing.assert_allclose(out["pv_model"].values, again.numpy(), rtol=1e-4, atol=1e-5)
    plain = revert(cube, Reverter(GRID, input_space="v_density", width=0.25), device="cpu")
    assert plain.name == "density" and plain.dims == ("distance", "lon")


def test_consistency_figure(trained):
    import matplotlib

    matplotlib.use("Agg")
    from iris_nb import plot

    cnn = trained[0]
    out = revert(OBSERVER.observe(make_cmz(GRID, seed=78)), cnn, device="cpu")
    fig = plot.consistency(out, title="held-out field")
    assert len(fig.axes) >= 3 and fig.axes[2].get_title().startswith("residual")
    with pytest.raises(ValueError, match="two-output"):
        plot.consistency(out.drop_vars("pv_model"))
