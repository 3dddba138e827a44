"""ReductionPicker with real ipywidgets objects: previews, inline errors, config round trip."""

import json

import ipywidgets as ipw
import numpy as np
import pytest
import yaml

from iris_nb.cube import reduce_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.quickstart import toy_cmz_cube
from iris_nb.widgets import ReductionPicker
from iris_nb.widgets.base import ErrorMessage, render_png, report_errors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8), velocity=Axis(-200, 200, 64))


@pytest.fixture(scope="module")
def cube():
    data, _ = toy_cmz_cube(GRID, seed=3, n_clouds=12)
    return data


def test_value_change_updates_preview_image(cube):
    picker = ReductionPicker(cube)
    assert picker.value == "mean" and picker.toggle.value == "mean"
    mean_png = bytes(picker.preview.value)
    assert mean_png.startswith(PNG_MAGIC) and len(mean_png) > 1000
    np.testing.assert_array_equal(picker.pv.values, reduce_cube(cube, "mean").values)

    picker.toggle.value = "max"  # what a click in the browser does
    assert picker.value == "max"
    max_png = bytes(picker.preview.value)
    assert max_png.startswith(PNG_MAGIC) and max_png != mean_png
    np.testing.assert_array_equal(picker.pv.values, reduce_cube(cube, "max").values)
    assert "max over 8 latitude pixels" in picker.caption.value

    picker.value = "mean"  # programmatic change moves the toggle and restores the image
    assert picker.toggle.value == "mean"
    assert bytes(picker.preview.value) == mean_png


def test_observe_reports_changes(cube):
    picker = ReductionPicker(cube, value="max")
    seen = []
    picker.observe(lambda change: seen.append((change["old"], change["new"])), names="value")
    picker.toggle.value = "mean"
    picker.value = "MAX "  # normalised, not rejected
    assert seen == [("max", "mean"), ("mean", "max")]
    assert picker.value == "max"


def test_invalid_value_shows_message_and_keeps_valid_value(cube):
    picker = ReductionPicker(cube)
    before = bytes(picker.preview.value)
    seen = []
    picker.observe(lambda change: seen.append(change["new"]), names="value")
    picker.value = "median"  # no exception
    assert picker.value == "mean" and picker.toggle.value == "mean"
    assert seen == [] and bytes(picker.preview.value) == before
    assert "median" in picker.error.text and "'mean'" in picker.error.text
    html = picker.error.widget.value
    assert "median" in html and picker.error.widget.layout.display != "none"
    assert picker.error.widget in picker.widget.children

    picker.value = 3
    assert picker.value == "mean" and "int" in picker.error.text

    picker.toggle.value = "max"  # a valid choice clears the message
    assert picker.error.text == "" and picker.error.widget.layout.display == "none"


def test_config_round_trip_through_files(tmp_path, cube):
    picker = ReductionPicker(value="max")
    assert picker.to_dict() == {"reduction": "max"}

    path = tmp_path / "run.yaml"
    run = {"dataset": "store.zarr", "grid": "SMALL", "seed": 1, **picker.to_dict()}
    path.write_text(yaml.safe_dump(run))
    again = ReductionPicker.from_dict(yaml.safe_load(path.read_text()), cube=cube)
    assert again.value == "max" and again.to_dict() == picker.to_dict()
    assert again.preview is not None and bytes(again.preview.value).startswith(PNG_MAGIC)

    (tmp_path / "reduction.json").write_text(json.dumps(again.to_dict()))
    assert ReductionPicker.from_dict(json.loads((tmp_path / "reduction.json").read_text())).value == "max"
    assert ReductionPicker.from_dict({"grid": "SMALL"}).value == "mean"  # the run-config default

    class Run:  # a RunConfig-like object with a reduction field
        reduction = "max"

    assert ReductionPicker.from_dict(Run()).value == "max"


def test_bad_construction_raises_before_drawing(cube):
    with pytest.raises(ValueError, match="median"):
        ReductionPicker(value="median")
    with pytest.raises(ValueError, match="median"):
        ReductionPicker.from_dict({"reduction": "median"})
    with pytest.raises(TypeError, match="from_dict expects"):
        ReductionPicker.from_dict(["mean"])
    with pytest.raises(TypeError, match="DataArray"):
        ReductionPicker(cube.values)
    stack = cube.expand_dims(sample=2)
    with pytest.raises(ValueError, match="isel"):
        ReductionPicker(stack)
    with pytest.raises(ValueError, match="dims"):
        ReductionPicker(cube.rename(lat="b_axis"))
    with pytest.raises(ValueError, match="figsize"):
        ReductionPicker(cube, figsize=(-1, 3))
    with pytest.raises(ValueError, match="dpi"):
        ReductionPicker(cube, dpi=0)


def test_nan_handling_shown_in_caption(cube):
    holey = cube.copy()
    holey[:8, :, :] = np.nan  # eight longitude columns unobserved
    holey[10:, :2, :] = np.nan  # two latitude rows missing elsewhere
    picker = ReductionPicker(holey)
    pv = picker.pv
    assert np.all(pv.values[:8] == 0) and np.all(np.isfinite(pv.values))
    assert pv.attrs["all_nan_fraction"] == pytest.approx(8 / 64)
    assert "12.5% of PV pixels had no valid latitude" in picker.caption.value


def test_displays_itself_as_the_container_widget(cube):
    picker = ReductionPicker(cube)
    bundle = picker._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == picker.widget.model_id
    assert bundle["text/plain"] == "ReductionPicker(value='mean')"
    assert isinstance(picker.widget, ipw.VBox)
    assert picker.toggle in picker.widget.children and picker.preview in picker.widget.children
    assert ReductionPicker().preview is None
    picker.close()
    assert picker.widget.comm is None and picker.toggle.comm is None


def test_error_message_and_report_errors_helpers():
    message = ErrorMessage()
    assert message.widget.layout.display == "none"
    message.show("sigma < 0 is <impossible>")
    assert "&lt;impossible&gt;" in message.widget.value and message.text == "sigma < 0 is <impossible>"
    with pytest.raises(ValueError, match="level"):
        message.show("x", level="fatal")
    message.clear()
    with report_errors(message):
        raise ValueError("fraction 1.5 > 1")
    assert message.text == "ValueError: fraction 1.5 > 1"
    with pytest.raises(RuntimeError):
        with report_errors(message):
            raise RuntimeError("a bug, not bad input")


def test_render_png_leaves_no_pyplot_figure():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    png = render_png(lambda ax: ax.plot([0, 1], [1, 0]), figsize=(2, 1), dpi=50)
    assert png.startswith(PNG_MAGIC) and plt.get_fignums() == before


def test_package_lists_what_a_notebook_types_and_keeps_old_names():
    import iris_nb.widgets as widgets
    from iris_nb.cube import REDUCTIONS
    from iris_nb.model import REDUCTIONS as model_reductions

    assert sorted(widgets.__all__) == ["LitterPicker", "NoisePicker", "REDUCTIONS", "ReductionPicker",
                                       "ReversionExplorer", "TrainingPanel"]
    assert widgets.REDUCTIONS is REDUCTIONS is model_reductions
    from iris_nb.widgets import ErrorMessage as moved, store_side  # listed here before
    from iris_nb.widgets.litter import store_side as in_module

    assert moved is ErrorMessage and store_side is in_module
    with pytest.raises(AttributeError):
        widgets.no_such_widget
