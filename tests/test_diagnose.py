"""The out-of-distribution guard end to end: training records the input statistics, model files keep
them, ``cube.iris.diagnose`` tabulates a cube against them and ``revert`` warns for cubes that are
too bright, velocity-mirrored or pure noise, but not for a held-out sample of the training family."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from toy_stores import G64

import iris_nb
from iris_nb.cube import reduce_cube
from iris_nb.data.field_datasets import GasModelDataset, observed_pairs
from iris_nb.diagnose import OutOfDistributionWarning, diagnose
from iris_nb.model import InputStatistics, Reverter, pv_statistics
from iris_nb.model.input_statistics import STATISTICS
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.line_observer import LineObserver
from iris_nb.train.config import TrainingConfig
from iris_nb.train.ensemble import train_ensemble
from iris_nb.train.loop import train_reverter

CONFIG = TrainingConfig(epochs=1, batch_size=8, batches_per_update=1, validation_fraction=0.0, device="cpu")
HELD_OUT_SEED = 7  # the training fields use GasModelDataset seeds (63-bit numbers), never 7


def observer():
    return LineObserver(G64, excitation="lte")


@pytest.fixture(scope="module")
def pairs():
    return observed_pairs(GasModelDataset(G64, n=32, seed=0), observer())


@pytest.fixture(scope="module")
def model(pairs):
    torch.manual_seed(0)
    net = Reverter(G64, width=0.25)
    train_reverter(net, pairs, config=CONFIG, progress=False)
    return net


@pytest.fixture(scope="module")
def held_out():
    cube = observer().observe(make_cmz(G64, seed=HELD_OUT_SEED))
    return cube.assign_attrs(source="held-out make_cmz field")


def brighter(cube, model, factor=20.0):
    """``cube`` scaled so that its 99th-percentile PV intensity is ``factor`` times the family's median."""
    family = model.input_statistics.quantiles["intensity_p99"][model.input_statistics.levels.index(0.5)]
    own = float(pv_statistics(reduce_cube(cube).values, G64)["intensity_p99"][0])
    return (cube * np.float32(factor * family / own)).assign_attrs(cube.attrs)


def mirrored(cube):
    """The same cube with the velocity sign flipped (as if read with the opposite convention)."""
    velocity = cube.velocity
    return cube.assign_coords(velocity=("velocity", -velocity.values, velocity.attrs))


def pure_noise(cube, sigma=1.0):
    """Gaussian noise of ``sigma`` K per cube pixel on the cube's pixels, no signal."""
    noise = np.random.default_rng(1).normal(0.0, sigma, cube.shape).astype(np.float32)
    return cube.copy(data=noise)


def revert_warnings(cube, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cube.iris.revert(model)
    return [w for w in caught if issubclass(w.category, OutOfDistributionWarning)]


def test_training_records_the_statistics_of_its_inputs_and_model_files_keep_them(model, pairs, tmp_path):
    stats = model.input_statistics
    assert isinstance(stats, InputStatistics) and stats.n_samples == 32 and stats.input_unit == "K"
    assert "after litter and noise" in stats.source
    assert stats == InputStatistics.from_inputs(pairs.tensors[0], G64, source=stats.source)
    model.save(tmp_path / "model.pt")
    loaded = Reverter.load(tmp_path / "model.pt")
    assert loaded.input_statistics.to_json() == stats.to_json()
    assert "input_statistics=32 training samples" in repr(loaded)


def test_the_statistics_describe_the_inputs_after_noise_and_survive_a_resume(pairs, tmp_path):
    def louder(x, mode, reduction, n_lat, generator):  # a Noise stand-in that triples the inputs
        return 3.0 * x

    pairs = torch.utils.data.Subset(pairs, range(16))
    torch.manual_seed(0)
    straight = Reverter(G64, width=0.25)
    train_reverter(straight, pairs, noise=louder, config=CONFIG, progress=False)
    torch.manual_seed(0)
    stopped = Reverter(G64, width=0.25)
    stop_after_one = lambda event, info: event == "batch_end"  # noqa: E731
    train_reverter(stopped, pairs, noise=louder, config=CONFIG, checkpoint_dir=tmp_path, callbacks=[stop_after_one],
                   progress=False)
    assert stopped.input_statistics.n_samples == 8
    resumed = Reverter(G64, width=0.25)
    train_reverter(resumed, pairs, noise=louder, config=CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert resumed.input_statistics == straight.input_statistics
    assert Reverter.load(tmp_path / "model.pt").input_statistics == straight.input_statistics
    clean = InputStatistics.from_inputs(pairs, G64)
    median = straight.input_statistics.levels.index(0.5)
    assert straight.input_statistics.quantiles["intensity_p99"][median] == pytest.approx(
        3.0 * clean.quantiles["intensity_p99"][median], rel=1e-5)


def test_diagnose_tabulates_the_cube_against_the_training_range(model, held_out):
    table = held_out.iris.diagnose(model)
    assert isinstance(table, pd.DataFrame) and list(table.index) == list(STATISTICS)
    assert list(table.columns) == ["value", "unit", "low", "high", "training_median", "percentile", "inside"]
    expected = pv_statistics(reduce_cube(held_out).values, G64)
    for name in STATISTICS:
        row = table.loc[name]
        assert row["value"] == pytest.approx(expected[name][0], rel=1e-5)
        assert (row["low"], row["high"]) == model.input_statistics.ranges[name]
        assert bool(row["inside"]) and 0 <= row["percentile"] <= 100
    assert table.loc["intensity_p99", "unit"] == "K" and table.loc["line_width", "unit"] == "km/s"
    pd.testing.assert_frame_equal(table, diagnose(held_out, model))
    # the cube in mK is the same cube: the table compares in the model's input unit
    in_mk = (held_out * 1000.0).assign_attrs(units="mK")
    pd.testing.assert_frame_equal(in_mk.iris.diagnose(model), table, rtol=1e-5)
    with pytest.raises(TypeError, match="diagnose needs a model"):
        held_out.iris.diagnose(None)


def test_revert_is_quiet_for_a_held_out_sample_of_the_family(model, held_out):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDistributionWarning)
        held_out.iris.revert(model)


@pytest.mark.parametrize("case, names", [
    ("20x brighter", {"intensity_p99", "intensity_p99_9"}),
    ("velocity-mirrored", {"lv_correlation"}),
    ("pure noise", {"emission_fraction", "velocity_extent", "line_width", "lv_correlation"}),
])
def test_revert_warns_naming_each_statistic_outside_the_training_range(model, held_out, case, names):
    cube = {"20x brighter": lambda: brighter(held_out, model), "velocity-mirrored": lambda: mirrored(held_out),
            "pure noise": lambda: pure_noise(held_out)}[case]()
    caught = revert_warnings(cube, model)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, UserWarning) and caught[0].category is iris_nb.OutOfDistributionWarning
    assert caught[0].filename == __file__  # points at the caller, not into iris_nb
    message = str(caught[0].message)
    table = cube.iris.diagnose(model)
    flagged = set(table.index[~table["inside"].astype(bool)])
    assert names <= flagged
    for name in STATISTICS:
        assert (f"{name} = " in message or f"{name} undefined" in message) == (name in flagged)
    if case == "20x brighter":
        assert flagged == names and "K (training range" in message
    if case == "velocity-mirrored":
        assert flagged == names and table.loc["lv_correlation", "value"] < 0


def test_ensembles_are_checked_against_the_union_of_their_members(pairs, held_out, model):
    torch.manual_seed(0)
    members = train_ensemble(2, Reverter(G64, width=0.25), pairs, config=CONFIG, progress=False)
    assert all(m.input_statistics is not None for m in members)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDistributionWarning)
        held_out.iris.revert(members)
    caught = revert_warnings(mirrored(held_out), members)
    assert len(caught) == 1 and "2-member ensemble" in str(caught[0].message)
    table = held_out.iris.diagnose(members)
    assert "union" in table.attrs["note"] and table["inside"].all()
    # a member without statistics is skipped; a stack of cubes gets one row per cube and statistic
    stack = xr.concat([held_out, mirrored(held_out).sortby("velocity")], "sample")
    table = stack.iris.diagnose([members[0], Reverter(G64, width=0.25)])
    assert table.index.names == ["sample", "statistic"] and len(table) == 2 * len(STATISTICS)
    assert not table.loc[(1, "lv_correlation"), "inside"] and table.loc[(0, "lv_correlation"), "inside"]
    assert "1 members have none" in table.attrs["note"]
    caught = revert_warnings(stack, [members[0], Reverter(G64, width=0.25)])
    assert len(caught) == 1 and "in 1 of 2 cubes" in str(caught[0].message)


def test_model_files_without_statistics_load_as_before_and_are_not_checked(model, held_out, tmp_path):
    path = tmp_path / "old.pt"
    model.save(path)
    content = torch.load(path, weights_only=True)
    del content["metadata"]["input_statistics"]  # a file written before the guard existed
    torch.save(content, path)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    for old in (Reverter.load(path), Reverter.load(bare, grid=G64)):
        assert old.input_statistics is None
        assert "input_statistics=None (no out-of-distribution check)" in repr(old).splitlines()[1]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cube = brighter(held_out, model)
            cube.iris.revert(old)
        table = cube.iris.diagnose(old)
        assert table["low"].isna().all() and table["inside"].isna().all()
        assert "no input statistics" in table.attrs["note"]


def test_the_shipped_model_guards_its_family():
    """cmz-small records its training inputs: a fresh family cube passes, its velocity mirror warns."""
    import warnings

    from iris_nb.model.pretrained import available
    from iris_nb.quickstart import synthetic_cmz_cube

    if "cmz-small" not in available():
        pytest.skip("cmz-small weights not built")
    model = iris_nb.pretrained("cmz-small")
    assert model.input_statistics is not None
    cube, _ = synthetic_cmz_cube(iris_nb.SMALL, seed=424242)
    with warnings.catch_warnings():
        warnings.simplefilter("error", iris_nb.OutOfDistributionWarning)
        cube.iris.revert(model)
    mirrored = cube.assign_coords(velocity=-cube.velocity).sortby("velocity")
    with pytest.warns(iris_nb.OutOfDistributionWarning, match="lv_correlation"):
        mirrored.iris.revert(model)
