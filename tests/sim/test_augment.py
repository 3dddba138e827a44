"""Tests for iris_nb.sim.augment: FieldAugmentation, its store and dataset wiring, observer_jitter."""

import json
import pickle

import numpy as np
import pytest
import xarray as xr

from iris_nb.data.field_datasets import GasModelDataset
from iris_nb.data.store import sample_seed, store_info, write_dataset
from iris_nb.grids import SMALL, Axis
from iris_nb.sim import FieldAugmentation, observer_jitter
from iris_nb.sim.augment import MAX_SIZE_FACTOR, as_augmentation, augmentation_seed
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.fields import field_from_arrays, h2_density, validate_field
from iris_nb.sim.kinematics import cell_positions, line_of_sight_velocity
from iris_nb.sim.observers import SimpleObserver

# SMALL window at half its resolution (as in test_cmz): cells ~7 pc
GRID = SMALL.replace(distance=Axis(8052.0, 8502.0, 64), lon=Axis(-1.5, 1.5, 64), lat=Axis(-0.375, 0.375, 16))
TINY = SMALL.replace(distance=SMALL.distance.with_steps(32), lon=SMALL.lon.with_steps(32),
                     lat=SMALL.lat.with_steps(4), velocity=SMALL.velocity.with_steps(32), name="TINY")
R0 = GRID.observer_distance


def positions(grid=GRID):
    d, lon, lat = grid.distance.centers(), grid.lon.centers(), grid.lat.centers()
    return cell_positions(d[:, None, None], lon[None, :, None], lat[None, None, :], grid.observer_distance)


def reflex(grid=GRID):
    """v_LSR of gas at rest in every cell (the observer's own motion only), km/s."""
    x, y, z = positions(grid)
    return line_of_sight_velocity(x, y, z, 0.0, 0.0, 0.0, grid.observer_distance)


def ring_field(radius=100.0, speed=150.0, width=10.0, height=10.0):
    """A Gaussian ring of gas in prograde circular rotation at ``speed`` km/s about the GC."""
    x, y, z = positions()
    r = np.hypot(x, y)
    density = 100.0 * np.exp(-0.5 * ((r - radius) / width) ** 2 - 0.5 * (z / height) ** 2)
    vx, vy = -speed * y / r, speed * x / r
    return field_from_arrays(GRID, density=density, velocity_los=line_of_sight_velocity(x, y, z, vx, vy, 0.0, R0))


def h2_mass(field, grid=GRID):
    """H2 mass per cell (arbitrary units): rho_H2 times the cell volume ~ d^2 cos b."""
    d, lat = grid.distance.centers(), grid.lat.centers()
    return h2_density(field["density"], field["x_h2"]).values * (d**2)[:, None, None] * np.cos(np.radians(lat))


def summary(field):
    """H2 mass, mass-weighted radius (pc), mass-weighted rms of the gas's own v_los (km/s), centroid."""
    x, y, _ = positions()
    w = h2_mass(field)
    gas = field["velocity_los"].values - reflex()
    return {"mass": w.sum(), "radius": (w * np.hypot(x, y)).sum() / w.sum(),
            "v_rms": np.sqrt((w * gas**2).sum() / w.sum()),
            "centroid": np.array([(w * x).sum(), (w * y).sum()]) / w.sum()}


@pytest.fixture(scope="module")
def cmz():
    return make_cmz(GRID, seed=1)


# --------------------------------------------------------------------------- size rescaling
@pytest.mark.parametrize("scale, radius, width", [(0.5, 100.0, 10.0), (2.0, 50.0, 8.0)])
def test_size_rescales_radius_velocities_and_mass(scale, radius, width):
    ring = ring_field(radius=radius, width=width)
    out = FieldAugmentation(size=scale)(ring, seed=0)
    validate_field(out, GRID)
    before, after = summary(ring), summary(out)
    assert after["radius"] == pytest.approx(scale * before["radius"], rel=0.06)
    assert after["v_rms"] == pytest.approx(scale * before["v_rms"], rel=0.06)
    assert after["mass"] == pytest.approx(scale**3 * before["mass"], rel=0.1)   # densities kept: mass ~ s^3
    assert json.loads(out.attrs["parameters"])["augment"] == {"size": scale}


def test_gas_at_rest_keeps_the_observers_reflex_only():
    x, y, z = positions()
    density = 50.0 * np.exp(-0.5 * (np.hypot(x, y) / 60.0) ** 2)
    rest = field_from_arrays(GRID, density=density, velocity_los=reflex())
    for aug in (FieldAugmentation(size=0.4), FieldAugmentation(size=1.7, shift_distance=40.0, shift_lon=-0.3),
                FieldAugmentation(size=0.7, velocity_smoothing=1.5, interpolation="nearest")):
        out = aug(rest, seed=5)
        np.testing.assert_allclose(out["velocity_los"].values, reflex(), atol=1e-3)


def test_velocity_in_other_units_is_converted(cmz):
    in_ms = cmz.copy(deep=True)
    in_ms["velocity_los"] = in_ms["velocity_los"] * 1000.0
    in_ms["velocity_los"].attrs["units"] = "m / s"
    aug = FieldAugmentation(size=0.6)
    a, b = aug(cmz, seed=2), aug(in_ms, seed=2)
    assert b["velocity_los"].attrs["units"] == "km / s"
    np.testing.assert_allclose(a["velocity_los"].values, b["velocity_los"].values, atol=1e-3)


def test_shift_moves_the_centroid_to_the_asked_place():
    ring = ring_field()
    out = FieldAugmentation(shift_distance=30.0, shift_lon=0.2)(ring, seed=0)
    moved = summary(out)["centroid"] - summary(ring)["centroid"]
    expected = [(R0 + 30.0) * np.sin(np.radians(0.2)), (R0 + 30.0) * np.cos(np.radians(0.2)) - R0]
    np.testing.assert_allclose(moved, expected, atol=3.0)
    assert summary(out)["v_rms"] == pytest.approx(summary(ring)["v_rms"], rel=0.05)


# --------------------------------------------------------------------------- density options
def test_density_perturbation_keeps_mass_and_changes_the_field(cmz):
    d, lat = GRID.distance.centers(), GRID.lat.centers()
    volume = (d**2)[:, None, None] * np.cos(np.radians(lat))
    total = float((cmz["density"].values * volume).sum())
    for seed in range(3):
        out = FieldAugmentation(density_sigma=0.4)(cmz, seed=seed)
        assert float((out["density"].values * volume).sum()) == pytest.approx(total, rel=1e-4)
        assert h2_mass(out).sum() == pytest.approx(h2_mass(cmz).sum(), rel=0.05)
        log_ratio = np.log(out["density"].values / cmz["density"].values)
        assert 0.2 < log_ratio.std() < 0.6
        np.testing.assert_array_equal(out["velocity_los"].values, cmz["velocity_los"].values)
    loose = FieldAugmentation(density_sigma=0.4, density_keep_mass=False)(cmz, seed=0)
    assert float((loose["density"].values * volume).sum()) != pytest.approx(total, rel=1e-4)


def test_density_scale_multiplies_every_density(cmz):
    out = FieldAugmentation(density_scale=(0.5, 2.0))(cmz, seed=4)
    factor = json.loads(out.attrs["parameters"])["augment"]["density_scale"]
    assert 0.5 <= factor <= 2.0
    np.testing.assert_allclose(out["density"].values, factor * cmz["density"].values, rtol=1e-6)


def test_skew_moves_the_mass_centroid_and_keeps_the_mass():
    ring = ring_field()
    before = summary(ring)
    out = FieldAugmentation(skew=0.8)(ring, seed=3)
    draws = json.loads(out.attrs["parameters"])["augment"]
    after = summary(out)
    moved = after["centroid"] - before["centroid"]
    direction = np.array([np.cos(np.radians(draws["skew_angle"])), np.sin(np.radians(draws["skew_angle"]))])
    # a ring of radius a under 1 + k (x . n) / L moves by k a^2 / (2 L) along n: 17.8 pc here
    assert moved @ direction == pytest.approx(0.8 * 100.0**2 / (2 * 225.0), rel=0.15)
    assert abs(moved @ [-direction[1], direction[0]]) < 2.0
    assert after["mass"] == pytest.approx(before["mass"], rel=1e-4)
    assert float(out["density"].min()) >= 0


# --------------------------------------------------------------------------- seeds and identity
def test_reproducible_per_seed_and_independent_streams(cmz):
    aug = FieldAugmentation(size=(0.25, 1.0), density_sigma=0.3, skew=(0.0, 0.5), shift_lon=(-0.2, 0.2))
    a, b, c = aug(cmz, seed=11), aug(cmz, seed=11), aug(cmz, seed=12)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["density"].values, c["density"].values)
    # turning an option on does not change another option's draw
    assert FieldAugmentation(size=(0.25, 1.0)).draw(11)["size"] == aug.draw(11)["size"]
    assert aug.draw(11) == json.loads(a.attrs["parameters"])["augment"]
    assert json.loads(a.attrs["augment"]) == {"config": aug.to_dict(), "seed": 11}


def test_augmentation_off_is_an_identical_copy(cmz):
    out = FieldAugmentation()(cmz, seed=3)
    xr.testing.assert_identical(out, cmz)
    assert out["density"].values is not cmz["density"].values
    assert FieldAugmentation().is_identity and as_augmentation(FieldAugmentation()) is None
    assert as_augmentation(None) is None and as_augmentation({"size": [0.5, 1.0]}) == FieldAugmentation(size=(0.5, 1))


def test_augmentation_seed_depends_only_on_the_sample_seed():
    seeds = [augmentation_seed(sample_seed(0, i)) for i in range(50)]
    assert seeds == [augmentation_seed(sample_seed(0, i)) for i in range(50)]
    assert len(set(seeds)) == 50 and set(seeds).isdisjoint(sample_seed(0, i) for i in range(50))


# --------------------------------------------------------------------------- config
def test_config_round_trips_through_json_and_yaml(tmp_path):
    aug = FieldAugmentation(size=(0.25, 1.0), density_scale=0.8, density_sigma=0.3, density_slope=3.5,
                            skew=(0.0, 0.6), shift_distance=(-40, 40), shift_lon=0.1, velocity_smoothing=0.5,
                            interpolation="nearest")
    assert FieldAugmentation.from_json(aug.to_json()) == aug
    assert FieldAugmentation.from_yaml(aug.to_yaml(tmp_path / "aug.yaml")) == aug
    assert FieldAugmentation.from_yaml(tmp_path / "aug.yaml") == aug
    assert aug.density_scale == (0.8, 0.8) and "size=(0.25, 1.0)" in repr(aug)
    assert pickle.loads(pickle.dumps(aug)) == aug  # sent to write_dataset's worker processes


@pytest.mark.parametrize("kwargs, error, match", [
    ({"size": 0.0}, ValueError, "size.*> 0"),
    ({"size": (-0.5, 1.0)}, ValueError, "size.*> 0"),
    ({"size": (0.5, MAX_SIZE_FACTOR + 1)}, ValueError, "<= 4"),
    ({"size": (1.0, 0.5)}, ValueError, "low <= high"),
    ({"size": (0.2, 0.5, 1.0)}, ValueError, "pair"),
    ({"size": "0.5"}, TypeError, "size must be None, a number"),
    ({"size": ("a", 1.0)}, TypeError, "size must be a number"),
    ({"density_sigma": -0.1}, ValueError, "density_sigma must be >= 0"),
    ({"density_sigma": "0.3"}, TypeError, "density_sigma must be a number"),
    ({"density_slope": float("nan")}, ValueError, "finite"),
    ({"density_scale": 0.0}, ValueError, "density_scale"),
    ({"skew": -0.5}, ValueError, "skew"),
    ({"skew": True}, TypeError, "skew"),
    ({"shift_lon": (0.0, 45.0)}, ValueError, "shift_lon"),
    ({"velocity_smoothing": -1}, ValueError, "velocity_smoothing"),
    ({"interpolation": "cubic"}, ValueError, "linear"),
    ({"density_keep_mass": "yes"}, TypeError, "density_keep_mass"),
])
def test_bad_settings_are_refused_with_a_clear_message(kwargs, error, match):
    with pytest.raises(error, match=match):
        FieldAugmentation(**kwargs)


def test_bad_calls_and_dicts_are_refused(cmz):
    with pytest.raises(ValueError, match="unknown FieldAugmentation fields"):
        FieldAugmentation.from_dict({"scale": [0.5, 1.0]})
    with pytest.raises(TypeError, match="seed"):
        FieldAugmentation(size=0.5)(cmz, seed=-1)
    with pytest.raises(TypeError, match="xarray.Dataset"):
        FieldAugmentation(size=0.5)(cmz["density"], seed=0)
    with pytest.raises(TypeError, match="augment must be a FieldAugmentation"):
        as_augmentation("size=0.5")


# --------------------------------------------------------------------------- wiring
def test_write_dataset_with_augment_is_reproducible_recorded_and_guarded(tmp_path):
    aug = FieldAugmentation(size=(0.3, 0.9), density_sigma=0.3)
    kwargs = dict(observer=SimpleObserver(TINY), seed=2, workers=0, chunk_size=2, progress=False)
    a = write_dataset(tmp_path / "a.zarr", 3, TINY, augment=aug, **kwargs)
    b = write_dataset(tmp_path / "b.zarr", 3, TINY, augment=aug.to_dict(), **kwargs)
    plain = write_dataset(tmp_path / "plain.zarr", 3, TINY, **kwargs)
    ta, tb, tp = (xr.open_zarr(p)["target"].values for p in (a, b, plain))
    np.testing.assert_array_equal(ta, tb)
    assert not np.allclose(ta, tp)
    info = store_info(a)
    assert info.augment == aug.to_dict() and store_info(plain).augment is None
    sizes = xr.open_zarr(a)["augment_size"].values
    expected = [aug.draw(augmentation_seed(sample_seed(2, i)))["size"] for i in range(3)]
    np.testing.assert_allclose(sizes, expected)
    # the same gas on the fly
    field = GasModelDataset(TINY, n=3, seed=2, augment=aug).field(1)
    np.testing.assert_array_equal(field["density"].values,
                                  aug(make_cmz(TINY, seed=sample_seed(2, 1)), augmentation_seed(sample_seed(2, 1)))
                                  ["density"].values)
    write_dataset(a, 3, TINY, augment=aug, **kwargs)  # same arguments: continues (nothing to do)
    for other in (FieldAugmentation(size=(0.3, 1.0), density_sigma=0.3), None):
        with pytest.raises(ValueError, match="augment"):
            write_dataset(a, 3, TINY, augment=other, **kwargs)
    with pytest.raises(ValueError, match="augment"):
        write_dataset(plain, 3, TINY, augment=aug, **kwargs)


def test_gas_model_dataset_augments_items():
    data = GasModelDataset(TINY, n=2, seed=1, augment=FieldAugmentation(size=0.5))
    plain = GasModelDataset(TINY, n=2, seed=1)
    assert "augment=FieldAugmentation(size=(0.5, 0.5)" in repr(data)
    item, base = data[0], plain[0]
    assert set(item) == set(base) and item["density"].shape == base["density"].shape
    assert float(item["density"].sum()) < 0.3 * float(base["density"].sum())
    with pytest.raises(TypeError, match="augment"):
        GasModelDataset(TINY, n=2, augment=0.5)


def test_observer_jitter_draws_from_arepo_arguments():
    a = observer_jitter(3, GRID, distance=(-50, 50), lon=(-0.25, 0.25), angle=(0, 360))
    assert a == observer_jitter(3, GRID, distance=(-50, 50), lon=(-0.25, 0.25), angle=(0, 360))
    assert a != observer_jitter(4, GRID, distance=(-50, 50), lon=(-0.25, 0.25), angle=(0, 360))
    assert set(a) == {"offset", "observer_angle"} and 0 <= a["observer_angle"] <= 360
    dx, dy, dz = a["offset"]
    lon = np.degrees(np.arctan2(dx, R0 + dy))
    assert -0.25 <= lon <= 0.25 and -50 <= np.hypot(dx, R0 + dy) - R0 <= 50 and dz == 0.0
    fixed = observer_jitter(0, GRID, distance=20.0, lon=None)
    np.testing.assert_allclose(fixed["offset"], [0.0, 20.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="lon"):
        observer_jitter(0, GRID, lon=(-30, 30))


def test_from_arepo_offset_moves_the_snapshot(tmp_path):
    from arepo_maker import write_arepo_snapshot
    from iris_nb.sim.arepo import from_arepo

    path = tmp_path / "snap.hdf5"
    write_arepo_snapshot(path, n_ring=1500, n_background=500)
    grid = GRID.replace(lat=Axis(-0.375, 0.375, 4))
    base = from_arepo(path, grid)
    jitter = {"offset": [0.0, 40.0, 0.0]}
    moved = from_arepo(path, grid, **jitter)
    weights = [f["density"].values.sum(axis=(1, 2)) for f in (base, moved)]
    d = grid.distance.centers()
    shift = (weights[1] @ d) / weights[1].sum() - (weights[0] @ d) / weights[0].sum()
    assert shift == pytest.approx(40.0, abs=5.0)
    assert json.loads(moved.attrs["parameters"])["offset_y"] == 40.0
    with pytest.raises(ValueError, match="offset"):
        from_arepo(path, grid, offset=(1.0, 2.0))
