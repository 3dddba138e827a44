"""Litter: disc gas outside the CMZ window (make_litter, litter_grid) and the Litter module
that adds random litter PV images to training inputs."""

import json

import numpy as np
import pytest
import torch

from iris_nb.grids import SMALL, Axis
from iris_nb.sim.fields import validate_field
from iris_nb.sim.litter import (FAR_SIDE_LENGTH, NEAR_SIDE_START, Litter, far_side_litter, litter_grid,
                                make_litter, near_side_litter)
from iris_nb.sim.observers import SimpleObserver

# A CMZ grid small enough for fast tests (same windows as SMALL).
GRID = SMALL.replace(distance=SMALL.distance.with_steps(32), lon=Axis(-1.5, 1.5, 24),
                     lat=Axis(-0.375, 0.375, 6), velocity=Axis(-200.0, 200.0, 80), name="tiny")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def pv_of(field, side):
    """Latitude-mean SimpleObserver PV image (lon, velocity) of a litter field, and velocities."""
    cube = SimpleObserver(litter_grid(GRID, side)).observe(field)
    return cube.mean("lat").values, cube.velocity.values


def images(n=5, seed=0, shape=(1, 8, 12)):
    return torch.rand((n,) + shape, generator=gen(seed)) + 1.0  # all > 0: every draw is visible


# ------------------------------------------------------------------------ the gas model
def test_litter_grid_keeps_sky_axes_and_leaves_the_cmz_window():
    near, far = litter_grid(GRID, "near"), litter_grid(GRID, "far")
    for lg in (near, far):
        assert (lg.lon, lg.lat, lg.velocity) == (GRID.lon, GRID.lat, GRID.velocity)
        assert lg.observer_distance == GRID.observer_distance and lg.beam_fwhm == GRID.beam_fwhm
        assert lg.distance.steps == GRID.distance.steps
    assert (near.distance.start, near.distance.stop) == (NEAR_SIDE_START, GRID.distance.start)
    assert (far.distance.start, far.distance.stop) == (GRID.distance.stop, GRID.distance.stop + FAR_SIDE_LENGTH)
    assert litter_grid(GRID, "far", stop=12000.0, steps=7).distance == Axis(GRID.distance.stop, 12000.0, 7)


@pytest.mark.parametrize("side", ["near", "far"])
def test_litter_gas_lies_only_outside_the_cmz_window(side):
    field = make_litter(GRID, side, seed=3)
    validate_field(field, litter_grid(GRID, side))
    d = field.distance.values
    if side == "near":
        assert d.max() < GRID.distance.start and d.min() > 0
    else:
        assert d.min() > GRID.distance.stop
    density = field.density.values
    assert np.isfinite(density).all() and density.min() >= 0
    assert density.sum() > 0
    # gas fills the window rather than one corner: the column is spread over distance
    column = density.sum(axis=(1, 2))
    assert np.count_nonzero(column > 1e-3 * column.max()) > len(d) // 2
    assert field.attrs["model"] == "make_litter" and field.attrs["side"] == side


def test_make_litter_accepts_a_litter_grid_and_is_reproducible():
    a = make_litter(GRID, "near", seed=5)
    b = near_side_litter(litter_grid(GRID, "near"), seed=5)
    assert a.equals(b)
    c = make_litter(GRID, "near", seed=6)
    assert not np.array_equal(a.density.values, c.density.values)
    # fixing one parameter leaves the other draws alone
    d = make_litter(GRID, "near", seed=5, density_scale=0.5)
    drawn = json.loads(a.attrs["parameters"])["density_scale"]
    ratio = d.density.values / np.maximum(a.density.values, 1e-30)
    assert np.allclose(ratio[a.density.values > 1e-6], 0.5 / drawn, rtol=1e-4)
    assert np.array_equal(a.velocity_los.values, d.velocity_los.values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_side_litter_appears_at_small_velocities(seed):
    field = make_litter(GRID, "near", seed=seed, expanding_arm_density=0.0, x1_density=0.0, bar_lane_density=0.0)
    pv, v = pv_of(field, "near")
    spectrum = pv.sum(axis=0)
    assert spectrum.sum() > 0
    assert spectrum[np.abs(v) < 20].sum() > 0.9 * spectrum.sum()


@pytest.mark.parametrize("side, sign", [("near", -1), ("far", +1)])
def test_expanding_three_kpc_arm_approaches_on_the_near_side_and_recedes_on_the_far(side, sign):
    speed = 55.0
    field = make_litter(GRID, side, seed=4, disc_density=0.0, arm_count=0, cloud_count=0,
                        expanding_arm_density=0.3, expanding_arm_speed=speed, velocity_dispersion=1.0,
                        x1_density=0.0, bar_lane_density=0.0)
    pv, v = pv_of(field, side)
    spectrum = pv.sum(axis=0)
    mean_v = (spectrum * v).sum() / spectrum.sum()
    assert mean_v == pytest.approx(sign * speed, abs=8.0)


def test_litter_side_and_parameter_errors():
    with pytest.raises(ValueError, match="side must be 'near'"):
        make_litter(GRID, "middle")
    with pytest.raises(ValueError, match="other side of the Galactic Centre"):
        make_litter(litter_grid(GRID, "far"), "near")
    with pytest.raises(ValueError, match="is empty"):
        litter_grid(GRID, "near", start=9000.0)
    with pytest.raises(ValueError, match="beyond the Galactic"):
        litter_grid(GRID, "far", start=5000.0)
    with pytest.raises(TypeError, match="unknown parameters \\['disk_density'\\]"):
        make_litter(GRID, "near", disk_density=0.1)
    with pytest.raises(ValueError, match="cloud_count=2.5 must be a non-negative integer"):
        make_litter(GRID, "near", cloud_count=2.5)
    with pytest.raises(ValueError, match="disc_height=0.0 must be > 0"):
        make_litter(GRID, "near", disc_height=0.0)
    with pytest.raises(TypeError, match="seed must be a non-negative integer"):
        make_litter(GRID, "near", seed=-1)
    with pytest.raises(TypeError, match="needs an iris_nb.grids.Grid"):
        make_litter("SMALL", "near")


# ----------------------------------------------------------------------- Litter module
def test_p_zero_leaves_inputs_unchanged():
    x = torch.randn(16, 1, 8, 12, generator=gen(1))
    out = Litter(images(), p=0.0)(x, generator=gen(2))
    assert torch.equal(out, x)


def test_p_one_adds_exactly_one_litter_image_per_sample():
    pool = images(n=7)
    x = torch.randn(32, 1, 8, 12, generator=gen(3))
    out = Litter(pool, p=1.0)(x, generator=gen(4))
    added = out - x
    for b in range(x.shape[0]):
        matches = [k for k in range(len(pool)) if torch.allclose(added[b], pool[k], atol=1e-5)]
        assert len(matches) == 1
    assert x.shape == out.shape


def test_littered_fraction_matches_p():
    p, batch = 0.3, 4000
    pool = images(n=3)
    x = torch.zeros(batch, 1, 8, 12)
    out = Litter(pool, p=p)(x, generator=gen(5))
    littered = (out != x).flatten(1).any(dim=1).float().mean().item()
    assert littered == pytest.approx(p, abs=0.03)
    _, hits = Litter(pool, p=p).draw(batch, generator=gen(5))
    assert hits.float().mean().item() == pytest.approx(littered)


def test_litter_is_reproducible_with_a_generator():
    pool = images(n=9)
    x = torch.zeros(64, 8, 12)  # without the channel dim
    a = Litter(pool, p=0.5)(x, generator=gen(6))
    b = Litter(pool, p=0.5)(x, generator=gen(6))
    c = Litter(pool, p=0.5)(x, generator=gen(7))
    assert torch.equal(a, b) and not torch.equal(a, c)
    own = Litter(pool, p=0.5, generator=gen(6))
    assert torch.equal(own(x), a)


def test_several_datasets_with_their_own_probabilities():
    near, far = images(n=4, seed=1), -images(n=4, seed=2)
    x = torch.zeros(50, 1, 8, 12)
    only_near = Litter([near, far], p=[1.0, 0.0])(x, generator=gen(8))
    assert (only_near > 0).all()
    both = Litter([near, far], p=[1.0, 1.0], scale=2.0)(x, generator=gen(9))
    for b in range(x.shape[0]):
        sums = [2.0 * (near[i] + far[j]) for i in range(4) for j in range(4)]
        assert sum(torch.allclose(both[b], s, atol=1e-5) for s in sums) == 1


def test_litter_from_a_dataset_of_pairs_leaves_targets_alone():
    obs, targets = images(n=4), torch.rand(4, 1, 6, 8)
    pairs = torch.utils.data.TensorDataset(obs, targets)
    litter = Litter(pairs, p=1.0)
    x = torch.zeros(10, 1, 8, 12, dtype=torch.float64)
    out = litter(x, generator=gen(10))
    assert out.dtype == torch.float64
    assert all(any(torch.allclose(out[b].float(), o) for o in obs) for b in range(10))
    assert torch.equal(targets, pairs.tensors[1])


def test_litter_store_written_like_any_dataset(tmp_path):
    from iris_nb.data.datasets import PreObservedDataset
    from iris_nb.data.store import sample_seed, write_dataset

    lgrid = litter_grid(GRID, "far", steps=16)
    path = write_dataset(tmp_path / "far.zarr", 3, lgrid, model=far_side_litter, observer=SimpleObserver(lgrid),
                         seed=1, workers=0, progress=False)
    store = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0)
    assert len(store) == 3
    expected = SimpleObserver(lgrid).observe(far_side_litter(lgrid, seed=sample_seed(1, 0))).mean("lat")
    assert np.allclose(store[0][0][0].numpy(), expected.values, rtol=1e-5, atol=1e-6)
    litter = Litter(store, p=1.0)
    assert litter.units == store.units["observation"]
    x = torch.zeros(6, 1, GRID.lon.steps, GRID.velocity.steps)
    out = litter(x, generator=gen(11))
    stored = [store[i][0] for i in range(len(store))]
    assert all(any(torch.allclose(out[b], s) for s in stored) for b in range(6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_litter_on_gpu():
    x = torch.zeros(8, 1, 8, 12, device="cuda")
    out = Litter(images(), p=1.0)(x)
    assert out.device.type == "cuda" and (out > 0).all()


def test_bad_litter_arguments():
    pool = images()
    with pytest.raises(ValueError, match="must be PV images .*got \\(4, 1, 8, 13\\)"):
        Litter(pool)(torch.zeros(4, 1, 8, 13))
    with pytest.raises(ValueError, match="p must lie in \\[0, 1\\]"):
        Litter(pool, p=1.5)
    with pytest.raises(ValueError, match="2 datasets but 3 probabilities"):
        Litter([pool, pool], p=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="is empty"):
        Litter(torch.zeros(0, 1, 8, 12))
    with pytest.raises(ValueError, match="different PV shapes"):
        Litter([pool, torch.zeros(2, 1, 8, 10)])
    with pytest.raises(ValueError, match="scale must be >= 0"):
        Litter(pool, scale=-1.0)
    with pytest.raises(TypeError, match="floating-point"):
        Litter(pool)(torch.zeros(4, 1, 8, 12, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch Dataset"):
        Litter(42)


# ------------------------------------------------------------ the bar region outside the CMZ window
ONLY_BAR = dict(disc_density=0.0, arm_count=0, cloud_count=0, expanding_arm_density=0.0, velocity_dispersion=1.0)


@pytest.mark.parametrize("side, sign", [("near", +1), ("far", -1)])
def test_bar_dust_lanes_appear_at_high_velocity_on_their_side_of_the_centre(side, sign):
    field = make_litter(GRID, side, seed=2, x1_density=0.0, bar_lane_density=0.3, bar_lane_offset=200.0,
                        bar_angle=25.0, **ONLY_BAR)
    pv, v = pv_of(field, side)
    lon = litter_grid(GRID, side).lon.centers()
    assert pv.sum() > 0
    mean_v = (pv.sum(axis=0) * v).sum() / pv.sum()
    mean_l = (pv.sum(axis=1) * lon).sum() / pv.sum()
    # near-side lane: l > 0 receding fast; far-side lane: l < 0 approaching (as the sky's lanes)
    assert sign * mean_v > 80 and sign * mean_l > 0.2, (mean_v, mean_l)


@pytest.mark.parametrize("side", ["near", "far"])
def test_x1_orbit_gas_reaches_bar_velocities(side):
    field = make_litter(GRID, side, seed=3, x1_density=0.05, bar_lane_density=0.0, **ONLY_BAR)
    pv, v = pv_of(field, side)
    spectrum = pv.sum(axis=0)
    assert spectrum[np.abs(v) > 100].sum() > 0.2 * spectrum.sum()
    # no bar gas without x1 orbits and lanes
    empty = make_litter(GRID, side, seed=3, x1_density=0.0, bar_lane_density=0.0, **ONLY_BAR)
    assert float(empty["density"].max()) < 1e-6


# ------------------------------------------------------------ foreground litter absorbs the CMZ
def test_foreground_layer_equals_the_full_radiative_transfer():
    """A cold foreground cloud at the CMZ's velocity dims it exactly as the transfer through both does."""
    from iris_nb.sim.fields import field_from_arrays, field_tensors
    from iris_nb.sim.observers import LineObserver

    grid = GRID
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)

    def field(cells):
        rho, temp = np.zeros(shape), np.full(shape, 8.0)
        for d, r, t in cells:
            rho[d, 10:14, :], temp[d, 10:14, :] = r, t
        return field_from_arrays(grid, density=rho, velocity_los=20.0, temperature=temp)

    observer = LineObserver(grid, excitation="lte", beam=False)
    cmz = observer(field_tensors(field([(25, 200.0, 60.0)])))            # warm, bright CMZ gas
    cloud = observer(field_tensors(field([(3, 20.0, 8.0)])))             # cold gas in front, same velocity
    both = observer(field_tensors(field([(25, 200.0, 60.0), (3, 20.0, 8.0)])))
    pv_cmz, pv_cloud, pv_both = (c.mean(dim=2) for c in (cmz, cloud, both))  # (1, lon, v)
    assert float(pv_cloud.max()) > 1.0 and float(pv_cmz.max()) > 2 * float(pv_cloud.max())
    litter = Litter(pv_cloud[:, None], p=1.0, foreground=True, excitation_temperature=8.0,
                    rest_frequency=grid.rest_frequency)
    layered = litter(pv_cmz[:, None])[:, 0]
    # the latitude mean of a latitude-uniform layer is exact
    torch.testing.assert_close(layered, pv_both, rtol=1e-4, atol=1e-4 * float(pv_both.max()))
    peak = pv_cmz[0].argmax()
    assert float(layered.flatten()[peak]) < float(pv_cmz.flatten()[peak])  # dimmed where both emit
    added = Litter(pv_cloud[:, None], p=1.0, foreground=False)(pv_cmz[:, None])[:, 0]
    torch.testing.assert_close(added, pv_cmz + pv_cloud)  # behind the CMZ it only adds


def test_foreground_is_taken_from_the_datasets_grid_and_needs_brightness():
    class Images(torch.utils.data.Dataset):
        def __init__(self, grid, units="K"):
            self.grid, self.units = grid, {"observation": units}
            self.data = torch.full((4, 1, 8, 12), 1.0)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.data[i], torch.zeros(1)

    near, far = Images(litter_grid(GRID, "near")), Images(litter_grid(GRID, "far"))
    litter = Litter([near, far], p=1.0)
    assert litter.foreground == [True, False] and litter.absorbs
    x = torch.full((3, 1, 8, 12), 10.0)
    out = litter(x)
    d_j = litter._layer_contrast
    torch.testing.assert_close(out, x * (1 - 1.0 / d_j) + 2.0)
    column = Litter([Images(litter_grid(GRID, "near"), units="solMass s / (km pc2)")], p=1.0)
    assert not column.absorbs
    torch.testing.assert_close(column(x), x + 1.0)
    with pytest.raises(ValueError, match="foreground"):
        Litter([near, far], foreground=[True])
    with pytest.raises(ValueError, match="excitation_temperature"):
        Litter([near], excitation_temperature=2.0)
