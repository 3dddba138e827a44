import json

import numpy as np
import pytest

from iris_nb import grids
from iris_nb.grids import SEDIGISM, SMALL, Axis, Grid, galactocentric_xy, get_grid


def test_sedigism_preset_matches_the_paper_window():
    assert SEDIGISM.shape == {"distance": 512, "lon": 512, "lat": 128, "velocity": 512}
    assert (SEDIGISM.distance.start, SEDIGISM.distance.stop) == (8052.0, 8502.0)
    assert (SEDIGISM.lon.start, SEDIGISM.lon.stop) == (-1.5, 1.5)
    assert (SEDIGISM.lat.start, SEDIGISM.lat.stop) == (-0.375, 0.375)
    assert (SEDIGISM.velocity.start, SEDIGISM.velocity.stop) == (-200.0, 200.0)
    assert SEDIGISM.observer_distance == 8277.0
    assert SEDIGISM.rest_frequency == pytest.approx(220.3986842)
    assert SEDIGISM.beam_fwhm == 30.0


def test_small_preset_is_the_same_window_at_lower_resolution():
    assert SMALL.shape == {"distance": 128, "lon": 128, "lat": 32, "velocity": 128}
    for name in ("distance", "lon", "lat", "velocity"):
        small, big = getattr(SMALL, name), getattr(SEDIGISM, name)
        assert (small.start, small.stop) == (big.start, big.stop)
    assert SMALL.ppv_shape == (128, 32, 128)
    assert SMALL.pv_shape == (128, 128)
    assert SMALL.top_down_shape == (128, 128)


def test_axis_centres_sit_half_a_step_inside_the_edges():
    axis = Axis(-1.5, 1.5, 4)
    np.testing.assert_allclose(axis.edges(), [-1.5, -0.75, 0.0, 0.75, 1.5])
    np.testing.assert_allclose(axis.centers(), [-1.125, -0.375, 0.375, 1.125])
    assert axis.step == 0.75


@pytest.mark.parametrize("grid", [SMALL, SEDIGISM])
def test_json_round_trip_is_exact(grid, tmp_path):
    path = tmp_path / "grid.json"
    text = grid.to_json(path)
    assert json.loads(text)["lon"]["steps"] == grid.lon.steps
    assert Grid.from_json(text) == grid
    assert Grid.from_json(path) == grid
    assert Grid.from_json(path).name == grid.name


def test_get_grid_accepts_names_dicts_and_grids():
    assert get_grid("small") is SMALL
    assert get_grid(SEDIGISM) is SEDIGISM
    assert get_grid(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown grid preset 'huge'"):
        get_grid("huge")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(start=1.0, stop=-1.0, steps=4), "must be larger than start"),
        (dict(start=0.0, stop=1.0, steps=0), "positive integer"),
        (dict(start=0.0, stop=float("nan"), steps=3), "finite"),
    ],
)
def test_bad_axes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Axis(**kwargs)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="wrap longitudes"):
        SMALL.replace(lon=Axis(358.5, 361.5, 64))
    with pytest.raises(ValueError, match="observer_distance"):
        SMALL.replace(observer_distance=-1)
    with pytest.raises(ValueError, match="unknown Grid fields"):
        Grid.from_dict({**SMALL.to_dict(), "pixels": 3})


def test_galactocentric_xy_puts_the_centre_at_the_origin():
    r0 = SEDIGISM.observer_distance
    x, y = galactocentric_xy(r0, 0.0, r0)
    assert (x, y) == pytest.approx((0.0, 0.0))
    # positive longitude lies towards +x, nearer points towards the Sun (-y)
    x, y = galactocentric_xy(r0 - 100.0, 1.0, r0)
    assert x > 0 and y < 0
    d = np.array([8000.0, 8500.0])[:, None]
    lon = np.array([-1.0, 0.0, 1.0])[None, :]
    x, y = galactocentric_xy(d, lon, r0)
    assert x.shape == (2, 3)
    np.testing.assert_allclose(np.hypot(x, y + r0), np.broadcast_to(d, (2, 3)))


def test_presets_are_listed():
    assert set(grids.PRESETS) == {"SEDIGISM", "SMALL"}
