"""ReversionExplorer with real ipywidgets, real Reverters and a real reversion of a toy cube."""

import json

import ipywidgets as ipw
import numpy as np
import pytest
import torch
import yaml

from iris_nb.grids import SMALL, Axis
from iris_nb.model import Reverter
from iris_nb.quickstart import toy_cmz_cube
from iris_nb.cube import reduce_cube
from iris_nb.units import density_scale
from iris_nb.widgets.explorer import ReversionExplorer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = SMALL.replace(lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8), velocity=Axis(-200, 200, 64),
                     distance=SMALL.distance.with_steps(64), name="test-64")
SIZE = {"figsize": (3.0, 2.4), "dpi": 50}


@pytest.fixture(scope="module")
def cube():
    data, _ = toy_cmz_cube(GRID, seed=5, n_clouds=10)
    return data


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(11)
    return [Reverter(grid=GRID, provenance={"member": i}) for i in range(2)]


@pytest.fixture(scope="module")
def explorer(cube, models):
    view = ReversionExplorer(cube, models, **SIZE)
    view.initial_settings = view.to_dict()
    return view


@pytest.fixture(scope="module")
def reference(cube, models):
    """Each model run directly on the cube's mean PV image, without the explorer or revert:
    ``{"members": (member, distance, lon), "mean": ..., "std": ...}`` in Msun/pc3."""
    pv = reduce_cube(cube, "mean").transpose("lon", "velocity").values
    batch = torch.from_numpy(np.ascontiguousarray(pv, dtype=np.float32))[None, None]
    members = []
    with torch.inference_mode():
        for model in models:
            model.eval()
            members.append(model.call_in_units(batch, "K", "Msun/pc3", reduce=False)[0, 0].numpy())
    members = np.stack(members)
    return {"members": members, "mean": members.mean(axis=0), "std": members.std(axis=0)}


@pytest.fixture(autouse=True)
def reset_view(request):
    """Tests that use the shared explorer start from its default view."""
    yield
    if "explorer" in request.fixturenames:
        shared = request.getfixturevalue("explorer")
        shared.value = shared.initial_settings


def png(image):
    data = bytes(image.value)
    assert data.startswith(PNG_MAGIC) and len(data) > 500
    return data


def test_reverts_once_and_matches_the_models_run_directly(explorer, reference, cube):
    assert explorer.selections == ("mean", "std", "member 0", "member 1")
    for name in ("mean", "std", "members"):
        np.testing.assert_allclose(explorer.result[name].values, reference[name], rtol=1e-4, atol=2e-5)
    assert explorer.result["mean"].dims == ("distance", "lon")
    assert explorer.pv.sizes == {"lon": 64, "velocity": 64} and explorer.pv.attrs["units"] == "K"
    np.testing.assert_allclose(explorer.pv.values, reduce_cube(cube, "mean").values, rtol=1e-6)
    # the default readout is the densest pixel of the ensemble mean
    assert explorer.pixel_value() == float(explorer.result["mean"].max())
    assert explorer.pixel_value() == pytest.approx(float(reference["mean"].max()), rel=1e-4, abs=2e-5)
    assert "ensemble of 2 models" in explorer.caption.value and "test-64" in explorer.caption.value


def test_selection_and_stretch_change_the_images(explorer):
    polar_mean, pv_asinh = png(explorer.map_image), png(explorer.pv_image)
    explorer.selection.value = "std"  # what a choice in the browser does
    assert explorer.value["selection"] == "std"
    std_png = png(explorer.map_image)
    assert std_png != polar_mean and png(explorer.pv_image) == pv_asinh  # the PV image does not depend on it
    explorer.selection.value = "member 1"
    assert png(explorer.map_image) not in (std_png, polar_mean)

    explorer.stretch.value = "linear"
    assert explorer.value["stretch"] == "linear"
    assert png(explorer.pv_image) != pv_asinh
    linear_member = png(explorer.map_image)
    explorer.kind.value = "cartesian"
    assert explorer.value["kind"] == "cartesian" and png(explorer.map_image) != linear_member

    explorer.value = {"selection": "mean", "stretch": "asinh", "kind": "polar"}  # programmatic: controls follow
    assert (explorer.selection.value, explorer.stretch.value, explorer.kind.value) == ("mean", "asinh", "polar")
    assert png(explorer.map_image) == polar_mean and png(explorer.pv_image) == pv_asinh


def test_readout_equals_the_reverted_map_with_units(explorer, reference):
    lon = GRID.lon.centers()[40]
    distance = GRID.distance.centers()[17]
    before = png(explorer.map_image)
    explorer.lon.value = lon + 0.3 * GRID.lon.step  # not on a centre: snaps to the nearest pixel
    explorer.distance.value = distance
    assert explorer.value["lon"] == pytest.approx(lon) and explorer.value["distance"] == pytest.approx(distance)
    assert png(explorer.map_image) != before  # the marker moved

    for selection, expected in (("mean", reference["mean"]), ("std", reference["std"]),
                                ("member 0", reference["members"][0])):
        explorer.selection.value = selection
        want = float(explorer.data.values[17, 40])  # the readout is the shown map at that pixel
        assert want == pytest.approx(float(expected[17, 40]), rel=1e-4, abs=2e-5)
        assert explorer.pixel_value() == want
        name = "std(rho_H2)" if selection == "std" else "rho_H2"
        assert explorer.readout_text == (f"{name} = {want:.4g} Msun/pc3 at l = {lon:.3f} deg, "
                                         f"d = {distance:.0f} pc ({selection})")
        assert f"{name} = {want:.4g} Msun/pc3</b> at l = {lon:.3f} deg" in explorer.readout.value  # the widget

    explorer.units.value = "cm-3"  # H2 number density, converted from the cached map
    explorer.selection.value = "member 0"
    want = float(explorer.data.values[17, 40])
    scale = density_scale("Msun/pc3", "cm-3")
    assert want == pytest.approx(float(reference["members"][0, 17, 40]) * scale, rel=1e-4, abs=2e-5 * scale)
    assert explorer.pixel_value() == want
    assert f"n_H2 = {want:.4g} cm-3" in explorer.readout.value
    assert explorer.data.attrs["units"] == "cm-3" and explorer.data.dims == ("distance", "lon")


def test_observe_and_round_trip_through_files(tmp_path, explorer, cube, models):
    seen = []
    handler = lambda change: seen.append(change["new"]["stretch"])  # noqa: E731
    explorer.observe(handler, names="value")
    explorer.stretch.value = "log"
    explorer.unobserve(handler, names="value")
    assert seen == ["log"]

    explorer.value = {"selection": "member 1", "kind": "cartesian", "units": "g/cm3",
                      "lon": float(GRID.lon.centers()[5]), "distance": float(GRID.distance.centers()[60])}
    settings = explorer.to_dict()
    assert set(settings) == {"selection", "stretch", "kind", "units", "lon", "distance"}
    path = tmp_path / "view.yaml"
    path.write_text(yaml.safe_dump({"explorer": settings}))
    again = ReversionExplorer.from_dict(yaml.safe_load(path.read_text())["explorer"], cube, models, **SIZE)
    assert again.to_dict() == settings
    assert again.units.value == "g/cm3" and again.kind.value == "cartesian"
    assert again.pixel_value() == pytest.approx(explorer.pixel_value(), rel=1e-5)
    assert bytes(again.map_image.value) == bytes(explorer.map_image.value)

    (tmp_path / "view.json").write_text(json.dumps(settings))
    assert json.loads((tmp_path / "view.json").read_text()) == settings


def test_single_model_offers_just_that_model(cube, models, reference):
    one = ReversionExplorer(cube, models[0], units="cm-3", value={"kind": "cartesian"}, **SIZE)
    assert one.selections == ("model",) and one.selection.options == ("model",)
    assert one.value["units"] == "cm-3" and one.value["kind"] == "cartesian"
    scale = density_scale("Msun/pc3", "cm-3")
    np.testing.assert_allclose(one.result.values, reference["members"][0] * scale, rtol=1e-4, atol=2e-5 * scale)
    assert one.result.attrs["units"] == "cm-3"
    one.value = {"selection": "mean"}  # an ensemble entry: refused inline
    assert one.value["selection"] == "model" and "'mean'" in one.error.text and "['model']" in one.error.text
    assert repr(one) == "ReversionExplorer(selection='model', stretch='asinh', kind='cartesian', units='cm-3')"


def test_bad_interactive_values_show_a_message_and_keep_the_view(explorer):
    before = (dict(explorer.value), png(explorer.map_image))
    for bad, words in (({"selection": "member 7"}, ["member 7", "member 1"]),
                       ({"stretch": "sqrt"}, ["sqrt", "asinh"]),
                       ({"units": "K"}, ["density"]),
                       ({"lon": 5.0}, ["lon = 5.0 deg", "outside"]),
                       ({"zoom": 2}, ["zoom"]),
                       ("mean", ["dict"])):
        explorer.value = bad  # no exception
        assert all(word in explorer.error.text for word in words), explorer.error.text
        assert explorer.error.widget.layout.display != "none"
        assert (explorer.value, png(explorer.map_image)) == before
    explorer.selection.value = "std"  # a valid change clears the message
    assert explorer.error.text == ""


def test_drawing_errors_are_inline(cube):
    torch.manual_seed(0)
    dead = Reverter(grid=GRID)
    for param in dead.parameters():  # a model that outputs zeros everywhere: nothing to log-stretch
        param.data.zero_()
    view = ReversionExplorer(cube, dead, **SIZE)
    assert view.pixel_value() == 0.0
    view.stretch.value = "log"
    assert view.value["stretch"] == "log" and "log" in view.error.text and "asinh" in view.error.text


def test_bad_construction_raises(cube, models):
    other = Reverter(grid=GRID.replace(distance=Axis(8000, 8600, 64), name="shifted"))
    with pytest.raises(ValueError, match="empty list"):
        ReversionExplorer(cube, [])
    with pytest.raises(ValueError, match="share one grid"):
        ReversionExplorer(cube, [models[0], other])
    with pytest.raises(ValueError, match="'median' is not available"):
        ReversionExplorer(cube, models, value={"selection": "median"})
    with pytest.raises(ValueError, match="not available"):
        ReversionExplorer(cube, models[0], value={"selection": "std"})
    with pytest.raises(ValueError, match="density"):
        ReversionExplorer(cube, models, units="K")
    with pytest.raises(TypeError, match="units must be a string"):
        ReversionExplorer(cube, models, units=3)
    with pytest.raises(TypeError, match="not a Reverter"):
        ReversionExplorer(cube, [models[0], "chp_32.pt"])
    with pytest.raises(TypeError, match="DataArray"):
        ReversionExplorer(cube.values, models)
    with pytest.raises(ValueError, match="isel"):
        ReversionExplorer(cube.expand_dims(sample=2), models)
    with pytest.raises(ValueError, match="velocity"):  # does not cover the model window
        ReversionExplorer(cube.sel(velocity=slice(-100, 100)), models)
    with pytest.raises(TypeError, match="needs the cube and the models"):
        ReversionExplorer.from_dict({"selection": "mean"})
    with pytest.raises(ValueError, match="unknown view settings"):
        ReversionExplorer.from_dict({"selection": "mean", "zoom": 3}, cube, models)


def test_displays_itself_as_the_container_widget(explorer):
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    assert bundle["text/plain"].startswith("ReversionExplorer(selection='mean'")
    assert isinstance(explorer.widget, ipw.VBox)
    children = []
    stack = [explorer.widget]
    while stack:
        item = stack.pop()
        children.append(item)
        stack.extend(getattr(item, "children", ()))
    for part in (explorer.selection, explorer.stretch, explorer.kind, explorer.units, explorer.lon, explorer.distance,
                 explorer.readout, explorer.pv_image, explorer.map_image, explorer.error.widget):
        assert part in children
