"""revert(): cube -> top-down density with the real Reverter on the SMALL grid."""

import json

import astropy.units as u
import numpy as np
import pytest
import torch
import xarray as xr

from cubes import make_cube
from iris_nb.cube import LineMismatchWarning, reduce_cube
from iris_nb.grids import SMALL, Axis
from iris_nb.model import Reverter
from iris_nb.regrid import regrid_cube
from iris_nb.reversion import best_device, revert
from iris_nb.units import brightness_scale, density_scale


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Reverter(grid=SMALL, provenance={"run": "test", "seed": 0})


@pytest.fixture(scope="module")
def others():
    torch.manual_seed(1)
    return [Reverter(grid=SMALL), Reverter(grid=SMALL, reduction="max")]


def blob_cube(lon, lat, velocity, seed=0):
    """A cube with one emission blob whose velocity follows longitude, plus weak noise, K."""
    rng = np.random.default_rng(seed)
    lon_c, lat_c = np.meshgrid(lon, lat, indexing="ij")
    blob = np.exp(-((lon_c - 0.3) ** 2 / 0.2 + lat_c**2 / 0.02))[..., None]
    line = np.exp(-0.5 * ((velocity - 40.0 * lon_c[..., None]) / 20.0) ** 2)
    data = 5.0 * blob * line + 0.3 * rng.random((lon.size, lat.size, velocity.size))
    return make_cube(data.astype(np.float32), lon, lat, velocity, attrs={"source": "synthetic test cube"})


def on_grid(seed=0, grid=SMALL):
    return blob_cube(grid.lon.centers(), grid.lat.centers(), grid.velocity.centers(), seed=seed)


def off_grid(seed=0):
    """A cube on its own (finer, non-aligned) pixels over a larger window."""
    return blob_cube(np.linspace(-1.6, 1.6, 150), np.linspace(-0.4, 0.4, 40), np.linspace(-205, 205, 170), seed=seed)


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * np.abs(b).max())


def by_hand(model, cube):
    """Regrid, reduce, and call the network directly (eval mode, no unit conversion)."""
    pv = reduce_cube(regrid_cube(cube, model.grid), model.reduction)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(pv.values, dtype=torch.float32)[None, None], reduce=False)[0, 0]
    model.train(was_training)
    return out.numpy()


def test_revert_equals_the_model_run_by_hand(model):
    cube = off_grid()
    td = revert(cube, model)
    assert td.dims == ("distance", "lon") and td.shape == SMALL.top_down_shape
    expected = by_hand(model, cube)
    assert np.count_nonzero(expected) > 0.1 * expected.size  # a map worth comparing
    close(td.values, expected)
    np.testing.assert_allclose(td.distance.values, SMALL.distance.centers())
    np.testing.assert_allclose(td.lon.values, SMALL.lon.centers())
    assert td.distance.attrs["units"] == "pc" and td.lon.attrs["units"] == "deg"


def test_revert_matches_the_model_reducing_a_ppv_tensor(model):
    cube = on_grid()
    model.eval()
    with torch.no_grad():
        direct = model(torch.as_tensor(cube.values)[None, None], reduce=True)[0, 0].numpy()
    close(revert(cube, model).values, direct)


def test_attrs_record_units_and_provenance(model):
    td = revert(off_grid(), model)
    assert td.attrs["units"] == "Msun/pc3"
    assert json.loads(td.attrs["model_provenance"]) == {"run": "test", "seed": 0}
    assert td.attrs["grid"] == "SMALL" and td.attrs["reduction"] == "mean"
    assert td.attrs["observer_distance"] == model.grid.observer_distance  # used by plot.top_down
    assert td.attrs["input_source"] == "synthetic test cube" and td.attrs["input_units"] == "K"
    assert "iris_nb_version" in td.attrs and "created" in td.attrs
    assert json.loads(td.attrs["grid_json"])["lon"]["steps"] == 128


def test_kelvin_and_millikelvin_give_the_same_map(model):
    cube = off_grid()
    mk = (cube * 1000.0).assign_attrs(units="mK")
    close(revert(mk, model).values, revert(cube, model).values)
    # in_units overrides attrs: the same numbers read as mK are 1000 times fainter in K
    close(revert(cube * 1000.0, model, in_units="mK").values, revert(cube, model).values)


def test_surface_brightness_and_jy_per_beam_enter_correctly(model):
    cube = on_grid()
    reference = revert(cube, model).values
    per_sr = brightness_scale("Jy/sr", SMALL.rest_frequency)  # K per Jy/sr
    jy_sr = (cube / per_sr).assign_attrs(units="Jy/sr")
    close(revert(jy_sr, model).values, reference)
    per_beam = brightness_scale("Jy/beam", SMALL.rest_frequency, 30.0)
    jy_beam = (cube / per_beam).assign_attrs(units="Jy/beam", beam_fwhm=30.0)
    close(revert(jy_beam, model).values, reference)


def test_output_units(model):
    cube = on_grid()
    msun = revert(cube, model, units="Msun/pc3")
    gram = revert(cube, model, units="g/cm3")
    factor = (1 * u.solMass / u.pc**3).to_value(u.g / u.cm**3)
    np.testing.assert_allclose(gram.values, msun.values * factor, rtol=1e-5, atol=1e-12 * factor)
    assert gram.attrs["units"] == "g/cm3"
    number = revert(cube, model, units="cm-3")
    np.testing.assert_allclose(number.values, msun.values * density_scale("Msun/pc3", "cm-3"), rtol=1e-5, atol=1e-8)
    assert number.attrs["units"] == "cm-3"


def test_nan_pixels_leave_no_nan_downstream(model):
    cube = off_grid()
    data = cube.values.copy()
    data[20, 5, 30] = np.nan
    data[:10, :, :] = np.nan  # a whole unobserved lon strip
    td = revert(cube.copy(data=data), model)
    assert np.isfinite(td.values).all()
    assert td.attrs["all_nan_fraction"] > 0


def test_reordered_m_per_s_descending_360_cube_gives_the_same_map(model):
    cube = on_grid()
    other = (
        cube.assign_coords(lon=("lon", np.mod(cube.lon.values, 360), {"units": "deg"}),
                           velocity=("velocity", cube.velocity.values * 1000, {"units": "m/s"}))
        .isel(lon=slice(None, None, -1))
        .transpose("velocity", "lat", "lon")
    )
    close(revert(other, model).values, revert(cube, model).values)


def test_ensemble_dataset(model, others):
    cube = off_grid()
    models = [model, *others]
    ens = revert(cube, models)
    assert isinstance(ens, xr.Dataset)
    assert ens["members"].dims == ("member", "distance", "lon") and ens.sizes["member"] == 3
    members = ens["members"].values
    np.testing.assert_allclose(ens["mean"].values, members.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(ens["std"].values, members.std(axis=0), rtol=1e-5, atol=1e-7)
    for i, m in enumerate(models):
        close(members[i], revert(cube, m).values)
    assert ens["mean"].attrs["units"] == "Msun/pc3"
    assert ens.attrs["reduction"] == "max,mean"
    assert len(json.loads(ens.attrs["model_provenance"])) == 3


def test_ensemble_members_must_share_a_grid(model):
    other = Reverter(grid=SMALL.replace(lon=Axis(-1.0, 1.0, 128), name="narrow"))
    with pytest.raises(ValueError, match="share one grid"):
        revert(on_grid(), [model, other])
    with pytest.raises(ValueError, match="empty list"):
        revert(on_grid(), [])


def test_stacked_cube_equals_single_reverts(model):
    cubes = [off_grid(seed=s) for s in range(3)]
    stack = xr.concat(cubes, dim="sample").assign_attrs(units="K")
    stack = stack.assign_coords(sample=[10, 20, 30])
    td = revert(stack, model, batch_size=2)
    assert td.dims == ("sample", "distance", "lon")
    assert list(td.sample.values) == [10, 20, 30]
    for i, cube in enumerate(cubes):
        close(td.values[i], revert(cube, model).values)


def test_model_state_is_restored(model):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    revert(on_grid(), model)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    revert(on_grid(), model)
    assert not model.training


def count_calls(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"units": "K"}, ValueError, ["cannot convert density", "Msun/pc3"]),
        ({"units": "parsec of doom"}, ValueError, ["cannot parse"]),
        ({"in_units": "km"}, ValueError, ["cannot take", "in_units="]),
        ({"batch_size": 0}, ValueError, ["batch_size"]),
        ({"device": "warp-drive"}, ValueError, ["not a torch device"]),
    ],
)
def test_bad_arguments_fail_before_the_network(model, kwargs, error, words):
    calls, handle = count_calls(model)
    try:
        with pytest.raises(error) as info:
            revert(on_grid(), model, **kwargs)
    finally:
        handle.remove()
    assert not calls
    for word in words:
        assert word in str(info.value)


def test_bad_cubes_and_models(model):
    with pytest.raises(ValueError, match="rename"):
        revert(on_grid().rename(velocity="v"), model)
    with pytest.raises(ValueError, match="beam"):
        revert(on_grid().assign_attrs(units="Jy/beam"), model)
    with pytest.raises(ValueError, match="missing on the high side"):
        revert(on_grid().isel(velocity=slice(0, 100)), model)
    with pytest.raises(TypeError, match="not a Reverter"):
        revert(on_grid(), "model.pt")
    vrho = Reverter(grid=SMALL, input_space="v_density")
    with pytest.raises(ValueError, match="trained on 'v_density'"):
        revert(on_grid(), vrho)


def test_line_mismatch_warns(model):
    with pytest.warns(LineMismatchWarning, match="12CO"):
        revert(on_grid().assign_attrs(line="12CO(2-1)"), model)


def test_best_device_defaults():
    expected = "cuda" if torch.cuda.is_available() else None
    device = best_device()
    if expected:
        assert device.type == expected
    assert best_device("cpu").type == "cpu"
