"""The model shipped with the package loads offline, documents itself and reverts real data."""

import numpy as np
import torch
import pytest

import iris_nb
from iris_nb.model.pretrained import available

pytestmark = pytest.mark.skipif("cmz-small" not in available(), reason="cmz-small weights not built yet")


def test_shipped_model_is_small_and_records_how_it_was_made():
    model = iris_nb.pretrained("cmz-small")
    assert model.grid == iris_nb.SMALL and model.width == 0.25
    assert model.num_parameters() < 2_000_000
    provenance = model.provenance
    assert provenance["training_script"] == "scripts/train_pretrained.py"
    metrics = provenance["test_metrics"]["noiseless"]
    assert metrics["physical_loss"] < metrics["constant_baseline_loss"]
    assert provenance["run"]["noise"] == {"sigma": 0.9, "channel_width": 0.25, "mean": 0.0, "fade": True,
                                          "correlated_beam": True}  # the SEDIGISM survey noise
    assert provenance["run"]["litter"]["paths"] and provenance["run"]["training"]["loss"] == "scaled_density_mass"
    assert model.input_statistics is not None  # the out-of-distribution guard is armed


def test_shipped_model_reverts_an_unseen_synthetic_cmz():
    from iris_nb.quickstart import synthetic_cmz_cube

    model = iris_nb.pretrained("cmz-small")
    cube, truth = synthetic_cmz_cube(iris_nb.SMALL, seed=987654)  # never drawn for training
    reverted = cube.iris.revert(model, units="Msun/pc3")
    assert reverted.dims == ("distance", "lon") and reverted.attrs["units"] == "Msun/pc3"
    n = 1.478  # the loss normalisation, Msun/pc3
    r = np.corrcoef(np.arcsinh(reverted.values.ravel() / n), np.arcsinh(truth.values.ravel() / n))[0, 1]
    print(f"\ncmz-small on an unseen field: correlation {r:.3f} in asinh space")
    assert r > 0.5
    unknown = pytest.raises(ValueError, match="unknown pretrained model")
    with unknown:
        iris_nb.pretrained("cmz-huge")


@pytest.mark.slow
def test_finetune_script_continues_the_shipped_model_on_fresh_fields_and_resumes(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "finetune_pretrained.py"
    spec = importlib.util.spec_from_file_location("finetune_pretrained", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--minutes", "5", "--fields", "8", "--replay", "2", "--batch", "4", "--n-litter", "4",
            "--workdir", str(tmp_path)]
    first = module.main(args)
    assert (first["fields_drawn"], first["fields_reused"]) == (8, 8) and not first["stopped_by_time"]
    tuned = iris_nb.Reverter.load(tmp_path / "model.pt")
    shipped = iris_nb.pretrained("cmz-small")
    assert tuned.provenance["finetune"]["start"] == "cmz-small"
    changed = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), shipped.state_dict().values())
               if a.is_floating_point()]
    assert any(changed)  # it trained
    again = module.main(args)  # finished: the checkpoint says so, nothing is drawn again
    assert again["fields_drawn"] == 8
    resumed = iris_nb.Reverter.load(tmp_path / "model.pt")
    for a, b in zip(resumed.state_dict().values(), tuned.state_dict().values()):
        assert torch.equal(a, b)
