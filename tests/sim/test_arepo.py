"""Tests for iris_nb.sim.arepo.from_arepo on small snapshots written by tests/arepo_maker.py."""

import json

import numpy as np
import pytest

from arepo_maker import write_arepo_snapshot
from iris_nb.grids import SMALL, Axis
from iris_nb.sim.arepo import from_arepo
from iris_nb.sim.columnize import columnize
from iris_nb.sim.fields import validate_field

GRID = SMALL.replace(distance=Axis(8052.0, 8502.0, 64), lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 8))
R0 = GRID.observer_distance
SUN = np.array([220.0, 0.0, 0.0])  # LSR velocity, km/s, towards +x (l = 90 deg)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("arepo") / "snap_000.hdf5"
    truth = write_arepo_snapshot(path)
    return path, truth


@pytest.fixture(scope="module")
def field(snapshot):
    return from_arepo(snapshot[0], GRID)


def cell_index(distance, lon, lat=0.0):
    """Indices of the grid cell containing (distance pc, lon deg, lat deg)."""
    return tuple(int((value - axis.start) // axis.step) for value, axis in
                 ((distance, GRID.distance), (lon, GRID.lon), (lat, GRID.lat)))


def test_field_is_valid_with_units_and_provenance(field, snapshot):
    assert validate_field(field, GRID) == GRID
    assert field.attrs["model"] == "arepo"
    params = json.loads(field.attrs["parameters"])
    assert params["observer_angle"] == 0.0 and params["path"] == str(snapshot[0])
    np.testing.assert_allclose(params["center_pc"], [500.0, 500.0, 500.0], rtol=1e-9)
    assert "temperature_dust" in field


def test_values_match_a_brute_force_nearest_neighbour(field, snapshot):
    _, truth = snapshot
    rng = np.random.default_rng(1)
    idx = [rng.integers(0, n, 300) for n in (64, 64, 8)]
    d = GRID.distance.centers()[idx[0]]
    lon = np.radians(GRID.lon.centers()[idx[1]])
    lat = np.radians(GRID.lat.centers()[idx[2]])
    cells = np.column_stack([d * np.cos(lat) * np.sin(lon), d * np.cos(lat) * np.cos(lon) - R0, d * np.sin(lat)])
    nearest = np.argmin(((cells[:, None, :] - truth["position"][None, :, :]) ** 2).sum(-1), axis=1)
    got = {name: field[name].values[idx[0], idx[1], idx[2]] for name in field.data_vars}
    np.testing.assert_allclose(got["density"], truth["density"][nearest], rtol=1e-5)
    np.testing.assert_allclose(got["temperature"], truth["temperature"][nearest], rtol=1e-3)
    np.testing.assert_allclose(got["x_h2"], truth["x_h2"][nearest], atol=1e-7)
    np.testing.assert_allclose(got["temperature_dust"], truth["dust"][nearest], rtol=1e-6)
    # line of sight from the Sun at (0, -R0, 0), LSR moving at 220 km/s towards +x
    towards = cells + np.array([0.0, R0, 0.0])
    towards /= np.linalg.norm(towards, axis=1, keepdims=True)
    expected_v = np.sum((truth["velocity"][nearest] - SUN) * towards, axis=1)
    np.testing.assert_allclose(got["velocity_los"], expected_v, atol=1e-3)
    molecular = truth["x_h2"][nearest] > 0
    assert molecular.any()
    np.testing.assert_allclose(got["x_tracer"][molecular], 5e-5 / 0.5 / 25, rtol=1e-5)
    assert (got["x_tracer"][~molecular] == 0).all()


def test_ring_appears_at_the_right_distance_and_longitude(field):
    top = columnize(field)
    near = top.values[cell_index(R0 - 100.0, 0.0)[:2]]
    far = top.values[cell_index(R0 + 100.0, 0.0)[:2]]
    centre = top.values[cell_index(R0, 0.0)[:2]]
    tangent_east = top.values[cell_index(R0, np.degrees(np.arctan2(100.0, R0)))[:2]]
    tangent_west = top.values[cell_index(R0, -np.degrees(np.arctan2(100.0, R0)))[:2]]
    for ring_value in (near, far, tangent_east, tangent_west):
        assert ring_value > 50 * centre
    # the marker (400 solMass/pc3 at snapshot (+100, 0, 0)) is at positive longitude
    marker = field["density"].values[cell_index(R0 + 0.6, np.degrees(np.arctan2(100.0, R0)))]
    assert marker == pytest.approx(400.0, rel=1e-5)


def test_positive_longitude_recedes(field):
    lon = GRID.lon.centers()
    dense = field["density"].values > 10
    v = field["velocity_los"].values
    east = dense & (lon > 0)[None, :, None]
    west = dense & (lon < 0)[None, :, None]
    assert v[east].mean() > 50 and v[west].mean() < -50
    # at the eastern tangent point the ring moves straight away from us at 150 km/s
    tangent = cell_index(R0 + 0.6, np.degrees(np.arctan2(100.0, R0)))
    assert float(v[tangent]) == pytest.approx(150.0 - 220.0 * np.sin(np.arctan2(100.0, R0)), abs=3.0)


def test_observer_angle_rotates_the_snapshot(snapshot):
    rotated = from_arepo(snapshot[0], GRID, observer_angle=90.0)
    # the marker at snapshot +x moves to +y: behind the Galactic Centre, at l = 0
    assert rotated["density"].values[cell_index(R0 + 100.0, 0.0)] == pytest.approx(400.0, rel=1e-5)
    assert rotated["density"].values[cell_index(R0 + 0.6, np.degrees(np.arctan2(100.0, R0)))] < 200


def test_clockwise_snapshot_is_turned_prograde_unless_asked(tmp_path):
    path = tmp_path / "clockwise.hdf5"
    write_arepo_snapshot(path, n_ring=1500, n_background=500, clockwise=True)
    lon = GRID.lon.centers()
    for prograde, sign in ((True, 1), (False, -1)):
        f = from_arepo(path, GRID, prograde=prograde)
        dense = f["density"].values > 10
        east = dense & (lon > 0)[None, :, None]
        assert sign * f["velocity_los"].values[east].mean() > 50


def test_center_and_max_distance(snapshot):
    # a centre shifted by 0.1 code lengths (100 pc) along x moves the ring towards negative x
    shifted = from_arepo(snapshot[0], GRID, center=(0.6, 0.5, 0.5))
    top = columnize(shifted)
    assert top.values[cell_index(R0, 0.0)[:2]] > 10 * columnize(from_arepo(snapshot[0], GRID)).values[
        cell_index(R0, 0.0)[:2]]
    sparse = from_arepo(snapshot[0], GRID, max_distance=6.0)  # ring cells: |z| < 3 pc, lat cell at 6.8 pc
    density = sparse["density"].values
    assert (density == 0).mean() > 0.5
    assert density[cell_index(R0 + 0.6, np.degrees(np.arctan2(100.0, R0)))] == pytest.approx(400.0, rel=1e-5)
    assert float(sparse["temperature"].min()) > 0


@pytest.mark.parametrize("dataset", ["Density", "ChemicalAbundances", "Coordinates"])
def test_missing_dataset_names_it_and_the_file(tmp_path, dataset):
    path = tmp_path / f"no_{dataset}.hdf5"
    write_arepo_snapshot(path, n_ring=200, n_background=100, omit_datasets=(dataset,))
    with pytest.raises(ValueError, match=dataset) as info:
        from_arepo(path, GRID)
    assert path.name in str(info.value)


def test_missing_header_attribute_and_wrong_files(tmp_path):
    path = tmp_path / "no_units.hdf5"
    write_arepo_snapshot(path, n_ring=200, n_background=100, omit_header=("UnitMass_in_g",))
    with pytest.raises(ValueError, match="UnitMass_in_g"):
        from_arepo(path, GRID)
    text = tmp_path / "notes.txt"
    text.write_text("not a snapshot")
    with pytest.raises(ValueError, match="HDF5"):
        from_arepo(text, GRID)
    with pytest.raises(FileNotFoundError):
        from_arepo(tmp_path / "missing.hdf5", GRID)
    good = tmp_path / "good.hdf5"
    write_arepo_snapshot(good, n_ring=200, n_background=100)
    with pytest.raises(ValueError, match="center"):
        from_arepo(good, GRID, center=(1.0, 2.0))
