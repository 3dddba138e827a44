"""LitterPicker with real ipywidgets and real litter stores written by write_dataset."""

import ipywidgets as ipw
import numpy as np
import pytest
import yaml

from iris_nb.cube import reduce_cube
from iris_nb.data.datasets import PreObservedDataset
from iris_nb.data.store import write_dataset
from iris_nb.grids import SMALL, Axis
from iris_nb.quickstart import toy_cmz_cube
from iris_nb.sim import LitterConfig
from iris_nb.sim.litter import far_side_litter, litter_grid, near_side_litter
from iris_nb.sim.observers import SimpleObserver
from iris_nb.train.run import RunConfig
from iris_nb.widgets.litter import LitterPicker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = SMALL.replace(distance=SMALL.distance.with_steps(32), lon=Axis(-1.5, 1.5, 24),
                     lat=Axis(-0.375, 0.375, 6), velocity=Axis(-200.0, 200.0, 40), name="tiny")
SIZE = {"figsize": (3.0, 2.2), "dpi": 50}


def disc_gas(grid, seed=0):
    """A gas model whose store does not say which side it fills."""
    return near_side_litter(grid, seed=seed)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("litter")
    made = {}
    for name, model, side, grid in [("near", near_side_litter, "near", GRID), ("far", far_side_litter, "far", GRID),
                                    ("plain", disc_gas, "near", GRID),
                                    ("wide", near_side_litter, "near", GRID.replace(lon=Axis(-1.5, 1.5, 16)))]:
        made[name] = str(write_dataset(root / f"{name}.zarr", 4, litter_grid(grid, side, steps=16), model=model,
                                       observer=SimpleObserver(litter_grid(grid, side, steps=16)),
                                       seed=len(made), workers=0, progress=False))
    return made


def images(path):
    store = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0)
    return np.stack([store[i][0][0].numpy() for i in range(len(store))]).astype(np.float64)


def png(picker) -> bytes:
    data = bytes(picker.preview.value)
    assert data.startswith(PNG_MAGIC)
    return data


def test_adding_stores_and_editing_p_update_value_observers_and_preview(stores):
    picker = LitterPicker(**SIZE)
    assert picker.value is None and picker.preview.layout.display == "none"
    seen = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")

    picker.path_input.value = stores["near"]  # typed, then the Add button
    picker.add_button.click()
    assert picker.value == LitterConfig((stores["near"],), p=0.5) and seen[-1] == picker.value
    assert picker.path_input.value == "" and picker.sides == {stores["near"]: "near"}
    assert picker.rows[stores["near"]]["side"].disabled  # the store says which side it is
    first = png(picker)
    np.testing.assert_allclose(picker.pv.values, 0.5 * images(stores["near"]).mean(0), rtol=1e-5, atol=1e-6)

    picker.add(stores["far"])
    assert picker.value == LitterConfig((stores["near"], stores["far"]), p=0.5)
    assert picker.sides[stores["far"]] == "far" and "background" in picker.caption.value
    assert picker.hit_fraction == pytest.approx(0.75) and "75.0%" in picker.caption.value
    second = png(picker)
    assert second != first

    picker.rows[stores["far"]]["p"].value = 0.2  # typed in the p box of the far store
    assert picker.value["p"] == (0.5, 0.2) and seen[-1]["p"] == (0.5, 0.2)
    assert picker.hit_fraction == pytest.approx(1 - 0.5 * 0.8)
    expected = 0.5 * images(stores["near"]).mean(0) + 0.2 * images(stores["far"]).mean(0)
    np.testing.assert_allclose(picker.pv.values, expected, rtol=1e-5, atol=1e-6)
    assert png(picker) != second

    picker.rows[stores["near"]]["remove"].click()
    assert picker.value == LitterConfig((stores["far"],), p=0.2) and list(picker.rows) == [stores["far"]]
    assert len(seen) == 4


def test_scale_and_example_draws(stores):
    picker = LitterPicker([stores["near"]], value={"paths": [stores["near"]], "p": 1.0}, seed=3, **SIZE)
    assert picker.value["paths"] == (stores["near"],)  # a store in both is listed once
    stored = images(stores["near"])
    picker.kind_toggle.value = "example"
    drawn = picker.pv.values  # p = 1: exactly one stored image
    assert any(np.allclose(drawn, image, rtol=1e-5, atol=1e-6) for image in stored)
    assert "this draw got litter from: near.zarr" in picker.caption.value
    again = LitterPicker(value={"paths": [stores["near"]], "p": 1.0}, seed=3, **SIZE)
    again.kind_toggle.value = "example"
    assert png(again) == png(picker)  # seeded

    before, value = png(picker), picker.value
    seen = []
    picker.observe(lambda change: seen.append(change), names="value")
    picker.scale_input.value = 2.0  # the run's litter scale: part of the value
    assert picker.scale == 2.0 and picker.value == value.replace(scale=2.0) and len(seen) == 1
    np.testing.assert_allclose(picker.pv.values, 2.0 * drawn, rtol=1e-6)
    assert png(picker) != before and "x2" in picker.caption.value
    assert picker.to_dict()["litter"]["scale"] == 2.0
    assert LitterPicker.from_dict(picker.to_dict(), **SIZE).scale == 2.0
    assert LitterPicker(value={**value, "scale": 0.5}, **SIZE).scale_input.value == 0.5
    picker.scale_input.value = -1.0
    assert "scale" in picker.error.text and picker.scale == 2.0 and picker.value["scale"] == 2.0
    picker.scale_input.value = 1.0
    assert picker.error.text == "" and picker.scale == 1.0 and picker.value == value  # 1 is the default

    draws = set()
    for _ in range(6):
        picker.redraw_button.click()
        draws.add(picker.pv.values.tobytes())
    assert picker.seed == 9 and len(draws) > 1  # new seeds, other images


def test_bad_input_shows_a_message_and_keeps_the_value(stores, tmp_path):
    picker = LitterPicker([stores["near"]], **SIZE)
    before_png, before = png(picker), picker.value
    seen = []
    picker.observe(lambda change: seen.append(change), names="value")

    picker.path_input.value = str(tmp_path / "missing.zarr")
    picker.add_button.click()
    assert "does not exist" in picker.error.text and "missing.zarr" in picker.error.text
    assert picker.error.widget.layout.display != "none" and picker.error.widget in picker.widget.children
    assert picker.path_input.value.endswith("missing.zarr")  # kept so it can be fixed

    picker.rows[stores["near"]]["p"].value = 1.5
    assert "[0, 1]" in picker.error.text and "1.5" in picker.error.text
    picker.rows[stores["near"]]["p"].value = -0.1
    assert "[0, 1]" in picker.error.text
    picker.add(stores["wide"])
    assert "(16, 40)" in picker.error.text and "(24, 40)" in picker.error.text
    picker.add(stores["near"])
    assert "already chosen" in picker.error.text
    picker.add("  ")
    assert "path" in picker.error.text
    (tmp_path / "folder").mkdir()
    picker.add(tmp_path / "folder")
    assert "cannot be used as a litter store" in picker.error.text
    picker.value = {"paths": [stores["near"]], "p": 0.5, "scale": -3}
    assert "scale" in picker.error.text
    assert picker.value == before and seen == [] and png(picker) == before_png

    picker.rows[stores["near"]]["p"].value = 0.9  # a valid p clears the message
    assert picker.error.text == "" and picker.value["p"] == 0.9


def test_unlabelled_store_side_is_chosen_by_the_user(stores):
    picker = LitterPicker([stores["plain"]], **SIZE)
    choice = picker.rows[stores["plain"]]["side"]
    assert not choice.disabled and choice.value == "" and picker.sides == {stores["plain"]: ""}
    caption = picker.caption.value
    choice.value = "far"
    assert picker.sides == {stores["plain"]: "far"} and "background" in picker.caption.value
    assert picker.caption.value != caption and picker.value["paths"] == (stores["plain"],)
    picker.add(stores["near"])  # rows rebuilt: the choice is kept
    assert picker.rows[stores["plain"]]["side"].value == "far"


def test_preview_on_a_cube(stores):
    field = near_side_litter(litter_grid(GRID, "near", steps=16), seed=11)
    cube = SimpleObserver(litter_grid(GRID, "near", steps=16)).observe(field)  # same unit as the stores
    picker = LitterPicker([stores["far"]], cube=cube, grid=GRID, **SIZE)
    expected = reduce_cube(cube, "mean").values + 0.5 * images(stores["far"]).mean(0)
    np.testing.assert_allclose(picker.pv.values, expected, rtol=1e-4, atol=1e-5)
    assert picker.pv.attrs["long_name"] == "cube + litter"

    brightness, _ = toy_cmz_cube(GRID, seed=1, n_clouds=5)  # K: does not convert to the litter unit
    alone = LitterPicker([stores["far"]], cube=brightness, **SIZE)
    np.testing.assert_allclose(alone.pv.values, 0.5 * images(stores["far"]).mean(0), rtol=1e-5, atol=1e-6)
    assert "shown alone" in alone.caption.value
    with pytest.raises(ValueError, match="regrid"):
        LitterPicker(cube=cube, grid=GRID.replace(lon=Axis(-1.5, 1.5, 16)))


def test_config_round_trip_and_run_config_yaml(stores, tmp_path):
    picker = LitterPicker(value={"paths": [stores["near"], stores["far"]], "p": [0.3, 0.6]}, grid=GRID, **SIZE)
    data = picker.to_dict()
    assert data == {"litter": {"paths": [stores["near"], stores["far"]], "p": [0.3, 0.6]}}
    assert LitterPicker.from_dict(data).value == picker.value
    assert LitterPicker.from_dict(data["litter"]).value == picker.value
    assert LitterPicker.from_dict(yaml.safe_load(yaml.safe_dump(data))).value == picker.value

    path = tmp_path / "run.yaml"
    run = RunConfig(dataset="cmz.zarr", grid=GRID, noise={"sigma": 1.0}, litter=picker.value)
    run.to_yaml(path)
    loaded = RunConfig.from_yaml(path)
    assert LitterPicker.from_dict(loaded).value == picker.value
    assert LitterPicker.from_dict(yaml.safe_load(path.read_text())).value == picker.value
    from_run = LitterPicker.from_run(path, **SIZE)
    assert from_run.value == picker.value and from_run.rows[stores["far"]]["p"].value == 0.6
    assert RunConfig.from_dict({"dataset": "cmz.zarr", **from_run.to_dict()}).litter == loaded.litter

    same_p = LitterPicker(value={"paths": [stores["near"], stores["far"]], "p": [0.4, 0.4]})
    assert same_p.value["p"] == 0.4  # one p for all: the same run
    RunConfig(dataset="cmz.zarr", litter=same_p.value).to_yaml(path)
    assert LitterPicker.from_run(path).value == same_p.value

    typed = LitterPicker(value=LitterConfig([stores["near"], stores["far"]], p=(0.3, 0.6)), grid=GRID, **SIZE)
    assert typed.value == picker.value and typed.value.p == (0.3, 0.6)  # a LitterConfig is taken as it is
    typed.value = {"paths": [stores["far"]], "p": 0.1, "scale": 2}  # a dict is assigned as before
    assert typed.value == LitterConfig((stores["far"],), p=0.1, scale=2.0) and typed.scale == 2.0

    empty = LitterPicker()
    assert empty.to_dict() == {"litter": None}
    RunConfig(dataset="cmz.zarr", litter=empty.value).to_yaml(path)
    assert LitterPicker.from_run(path).value is None
    assert LitterPicker.from_dict({"dataset": "cmz.zarr"}).value is None


def test_bad_construction_raises_and_display(stores, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        LitterPicker([tmp_path / "missing.zarr"])
    with pytest.raises(ValueError, match="does not exist"):
        LitterPicker.from_dict({"litter": {"paths": [str(tmp_path / "gone.zarr")], "p": 0.5}})
    with pytest.raises(ValueError, match="shape"):
        LitterPicker([stores["near"]], grid=GRID.replace(velocity=Axis(-200.0, 200.0, 32)))
    with pytest.raises(ValueError, match="listed twice"):
        LitterPicker(value={"paths": [stores["near"], stores["near"]]})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LitterPicker(value={"paths": [stores["near"]], "p": 2})
    with pytest.raises(ValueError, match="probabilities"):
        LitterPicker(value={"paths": [stores["near"]], "p": [0.5, 0.5]})
    with pytest.raises(TypeError, match="from_dict expects"):
        LitterPicker.from_dict([stores["near"]])
    with pytest.raises(TypeError, match="seed"):
        LitterPicker(seed=-2)
    with pytest.raises(ValueError, match="scale"):
        LitterPicker(scale=-1.0)

    picker = LitterPicker([stores["near"]], **SIZE)
    bundle = picker._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == picker.widget.model_id
    assert bundle["text/plain"].startswith("LitterPicker(value=LitterConfig(paths=(")
    assert isinstance(picker.widget, ipw.VBox) and picker.preview in picker.widget.children
    picker.close()
    assert picker.widget.comm is None and picker.rows[stores["near"]]["p"].comm is None
