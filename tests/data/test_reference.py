"""read_iris_dataset on reference-layout folders written here, and conversion to stores.

The folders are written with the reference's conventions implemented in this file (longitude
mirrored, velocity positive towards the observer, axes sampled at ``linspace(min, max, n)``,
"vrho" observations of total gas), so that reading them must give what iris_nb's own
``columnize`` and ``SimpleObserver`` make of the same gas.
"""

import json

import astropy.units as u
import numpy as np
import pytest
import torch
import xarray as xr

from iris_nb.data.datasets import ConcatDataset, PreObservedDataset
from iris_nb.data.reference import convert_iris_dataset, read_iris_dataset
from iris_nb.grids import Axis
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.columnize import columnize
from iris_nb.sim.fields import HYDROGEN_MASS_FRACTION, field_from_arrays, field_tensors, h2_density
from iris_nb.sim.kinematics import cell_positions, line_of_sight_velocity
from iris_nb.sim.observers import SimpleObserver

from ._models import TINY

# IRIS unit factors ("IRIS units per SI unit"), deliberately not round numbers
MASS, LENGTH, TIME, TEMPERATURE = 3.1e-31, 2.7e-17, 1.9e-3, 0.37
DENSITY = MASS / LENGTH**3
TO_SI_TARGET = (1.0 * u.solMass / u.pc**3).to_value(u.kg / u.m**3)
TO_SI_COLUMN = (1.0 * u.solMass * u.s / (u.km * u.pc**2)).to_value(u.kg * u.s / u.m**3)
# the reference's ObserverHyper molar masses (g/mol) and He per H
MW_H2, MW_H, MW_HE, A_HE = 2.01568, 1.00784, 4.002602, 0.1
REFERENCE_H2_PER_X_RHO = MW_H2 / (MW_H + A_HE * MW_HE)  # rho_H2 / (x_H2 rho) in columnize_physical_tensor


def _hyper(observable="brightness", v_window=(-200.0, 200.0), r_steps=64, crop=(0, 64), arepo_abundances=True):
    dataset = {"meters_per_parsec": 3.08567758128e16, "_mass_iris_per_SI": MASS, "_length_iris_per_SI": LENGTH,
               "_time_iris_per_SI": TIME, "_temperature_iris_per_SI": TEMPERATURE,
               "_v_density_iris_per_processing": 2.5 if observable == "column" else None,
               "use_AREPO_abundances": arepo_abundances}
    return {
        "writer_hyper": {"total_snapshots": 1, "points_per_snapshot": 4},
        "dataset_hyper": dataset,
        "coordinate_hyper": {"r_min": 8052.0, "r_max": 8502.0, "r_steps": r_steps, "r_crop_min_index": crop[0],
                             "r_crop_max_index": crop[1], "lon_min": -1.5, "lon_max": 1.5, "lon_steps": 64,
                             "lat_min": -0.375, "lat_max": 0.375, "lat_steps": 8, "observer_radius": 8277.0,
                             "spin_orientation": 1},
        "observer_hyper": {"out_blur_fwhm": 30.0, "noise_sigma": 1.0, "mw_H2": MW_H2, "mw_H": MW_H,
                           "mw_He": MW_HE, "abundance_He": A_HE},
        "cube_hyper": {"v_min": v_window[0], "v_max": v_window[1], "v_steps": 64, "reduction": "mean"},
        "training_hyper": {"validation_data_fraction": 0.2, "batch_size": 8},
    }


def _write_pairs(root, hyper, pairs, index=True, nodes=None):
    """Write ``(observed (lon, v), columnized (r, lon))`` arrays, already in the reference's
    orientation and IRIS units, as a reference dataset folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hyper.json").write_text(json.dumps(hyper, indent=4))
    nodes = nodes or (len(pairs),)
    listed, it = [], iter(pairs)
    for node, count in enumerate(nodes):
        (root / f"node_{node}").mkdir()
        for k in range(count):
            observed, columnized = next(it)
            np.save(root / f"node_{node}" / f"observed_{k}.npy", observed[None].astype(np.float32))
            np.save(root / f"node_{node}" / f"columnized_{k}.npy", columnized[None].astype(np.float32))
            listed.append([f"node_{node}/columnized_{k}.npy", f"node_{node}/observed_{k}.npy"])
    attributes = {"cardinality": len(listed)}
    if index:
        attributes["index"] = listed
    (root / "attributes.json").write_text(json.dumps(attributes))


def _to_iris(observation, target, observable):
    obs = observation * (TEMPERATURE if observable == "brightness" else TO_SI_COLUMN * DENSITY * TIME)
    return obs, target * TO_SI_TARGET * DENSITY


def write_reference(root, observable="brightness", nodes=(2, 3), index=True, seed=0, **hyper_kwargs):
    """A reference-layout folder of random pairs; returns the true pairs in iris_nb units and
    orientation, on the reference's sample points (``sampling="exact"``)."""
    rng = np.random.default_rng(seed)
    hyper = _hyper(observable, **hyper_kwargs)
    crop = hyper["coordinate_hyper"]["r_crop_max_index"] - hyper["coordinate_hyper"]["r_crop_min_index"]
    truth, stored = [], []
    for _ in range(sum(nodes)):
        observation = rng.gamma(2.0, 3.0, (64, 64)).astype(np.float32)  # (lon, v_LSR), K or vrho
        observation[:, :5] = 0.0  # an empty band at negative v_LSR marks the velocity orientation
        observation[:3] = 0.0  # and one at negative longitude the longitude orientation
        target = rng.gamma(2.0, 50.0, (crop, 64)).astype(np.float32)  # (distance, lon), solMass/pc3
        target[:, :3] = 0.0
        obs, tgt = _to_iris(observation, target, observable)
        stored.append((obs[::-1, ::-1], tgt[:, ::-1]))  # longitude mirrored, velocity towards the observer
        truth.append((observation, target))
    _write_pairs(root, hyper, stored, index=index, nodes=nodes)
    return truth


def centres_from_samples(array, axis):
    """np.interp from samples at linspace(0, 1, n) to the pixel centres (k + 0.5) / n."""
    n = array.shape[axis]
    return np.apply_along_axis(lambda a: np.interp((np.arange(n) + 0.5) / n, np.linspace(0, 1, n), a), axis, array)


# ---------------------------------------------------------------- the same gas, observed both ways
def exact_axis(low, high, n):
    """The iris_nb axis whose pixel centres are linspace(low, high, n)."""
    half = 0.5 * (high - low) / (n - 1)
    return Axis(low - half, high + half, n)


REFERENCE_POINTS = TINY.replace(distance=exact_axis(8052.0, 8502.0, 64), lon=exact_axis(-1.5, 1.5, 64),
                                lat=exact_axis(-0.375, 0.375, 8), velocity=exact_axis(-200.0, 200.0, 64))
"""A grid centred on the sample points of the reference hyper.json written here."""


def lopsided_field(grid, x_h2=None):
    """Gas on ``grid``: two off-centre clouds (the brighter at positive longitude) in a faint
    disc, turning like the Milky Way (positive longitudes recede) with some inflow; a smooth
    function of position, so any grid samples the same gas.  Uniform in latitude, because
    the reference's latitude mean runs over samples spread half a pixel wider on each side,
    which no reading can undo (module notes of iris_nb.data.reference)."""
    d, lon, lat = grid.distance.centers(), grid.lon.centers(), grid.lat.centers()
    x, y, z = cell_positions(d[:, None, None], lon[None, :, None], lat[None, None, :], grid.observer_distance)
    r = np.hypot(x, y) + 1e-3
    density = (10.0 * np.exp(-r / 60.0) + 150.0 * np.exp(-((x - 70.0) ** 2 + (y - 20.0) ** 2) / 800.0)
               + 60.0 * np.exp(-((x + 40.0) ** 2 + (y + 90.0) ** 2) / 450.0))
    v_phi, v_in = 120.0 * np.tanh(r / 40.0), -30.0
    vx, vy = -v_phi * y / r + v_in * x / r, v_phi * x / r + v_in * y / r
    velocity = line_of_sight_velocity(x, y, z, vx, vy, 0.0 * z, grid.observer_distance, sun_velocity=(0.0, 0.0, 0.0))
    return field_from_arrays(grid, density=density, velocity_los=velocity,
                             x_h2=0.5 * density / (density + 40.0) if x_h2 is None else x_h2)


def reference_pair(field, hyper):
    """What the reference writes for ``field`` sampled at its points (REFERENCE_POINTS):
    ``columnize_physical_tensor`` (H2 with its molar masses, latitude mean) and its
    ``SimpleObserver`` (total gas, channel centres linspace(v_min, v_max), velocity positive
    towards the observer, tent weights, cells within half a channel outside kept in the edge
    channel) reduced by a latitude mean, longitude mirrored; in solMass / pc3 and
    solMass s / (km pc2), as ``(observed (lon, v), columnized (r, lon))``."""
    coords, cube = hyper["coordinate_hyper"], hyper["cube_hyper"]
    rho, x_h2, v_los = (field[k].transpose("distance", "lon", "lat").values.astype(np.float64)[:, ::-1]
                        for k in ("density", "x_h2", "velocity_los"))  # reference longitude = -l
    columnized = (rho * x_h2 * REFERENCE_H2_PER_X_RHO).mean(axis=2)
    v_steps = cube["v_steps"]
    dv = (cube["v_max"] - cube["v_min"]) / (v_steps - 1)
    dr = (coords["r_max"] - coords["r_min"]) / (coords["r_steps"] - 1)
    position = (-v_los - cube["v_min"]) / dv  # towards the observer is positive
    low = np.clip(np.floor(position), 0, v_steps - 2).astype(int)
    weight = position - low
    clamped = np.clip(weight, 0.0, 1.0)
    column = rho * dr / dv
    n_r, n_lon, n_lat = rho.shape
    ppv = np.zeros((n_lon * n_lat, v_steps))
    ray = np.broadcast_to(np.arange(n_lon * n_lat).reshape(1, n_lon, n_lat), rho.shape)
    np.add.at(ppv, (ray, low), column * (1.0 - clamped) * (weight > -0.5))
    np.add.at(ppv, (ray, low + 1), column * clamped * (weight < 1.5))
    return ppv.reshape(n_lon, n_lat, v_steps).mean(axis=1), columnized


def write_reference_of(root, field, observable="column", **hyper_kwargs):
    hyper = _hyper(observable, **hyper_kwargs)
    observed, columnized = reference_pair(field, hyper)
    _write_pairs(root, hyper, [_to_iris(observed, columnized, observable)])


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_reference_dataset_reads_as_iris_nb_observes_the_same_gas(tmp_path):
    write_reference_of(tmp_path / "ref", lopsided_field(REFERENCE_POINTS))
    ds = read_iris_dataset(tmp_path / "ref")
    assert ds.grid == TINY and ds.gas == "total" and "total gas" in repr(ds)
    ours = lopsided_field(TINY)
    pv = SimpleObserver(TINY, gas="total").observe(ours).mean("lat").values  # (lon, velocity)
    top = columnize(ours).values  # (distance, lon)
    observation, target = (t[0].numpy() for t in ds[0])
    assert corr(target, top) > 0.99 and corr(observation, pv) > 0.99
    np.testing.assert_allclose(target.sum() / top.sum(), REFERENCE_H2_PER_X_RHO / (2 * HYDROGEN_MASS_FRACTION),
                               rtol=0.01)
    np.testing.assert_allclose(observation.sum() / pv.sum(), 1.0, rtol=0.01)
    # the conventions matter: without the mirror, or without the velocity flip, it is another sky
    naive = read_iris_dataset(tmp_path / "ref", mirror_lon=False)
    assert corr(naive[0][1][0], top) < 0.3 and corr(naive[0][0][0], pv) < 0.3
    assert corr(read_iris_dataset(tmp_path / "ref", flip_velocity=False)[0][0][0], pv) < 0.3
    # and the half-pixel shift: resampled values are closer than relabelled ones
    relabelled = read_iris_dataset(tmp_path / "ref", sampling="relabel")
    assert relabelled.grid == TINY
    for k, ours_k, gain in ((0, pv, 0.9), (1, top * target.sum() / top.sum(), 0.5)):
        error = np.abs(ds[0][k][0].numpy() - ours_k).mean()
        assert error < gain * np.abs(relabelled[0][k][0].numpy() - ours_k).mean()


def test_exact_sampling_is_iris_nb_on_the_reference_points(tmp_path):
    field = lopsided_field(REFERENCE_POINTS)
    write_reference_of(tmp_path / "ref", field)
    ds = read_iris_dataset(tmp_path / "ref", sampling="exact")
    assert ds.grid == REFERENCE_POINTS
    observation, target = (t[0].numpy() for t in ds[0])
    cube = SimpleObserver(ds.grid, gas="total").observe(field).mean("lat").values
    np.testing.assert_allclose(observation, cube, rtol=1e-4, atol=1e-5 * cube.max())
    expected = columnize(field).values * REFERENCE_H2_PER_X_RHO / (2 * HYDROGEN_MASS_FRACTION)
    np.testing.assert_allclose(target, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_h2_conversion_needs_one_h2_fraction(tmp_path):
    fraction = 0.5 * REFERENCE_H2_PER_X_RHO  # every H in H2
    write_reference_of(tmp_path / "molecular", lopsided_field(REFERENCE_POINTS, x_h2=0.5), arepo_abundances=False)
    total = read_iris_dataset(tmp_path / "molecular")
    h2 = read_iris_dataset(tmp_path / "molecular", gas="h2")
    assert total.gas == "total" and h2.gas == "h2" and h2.observer["settings"]["gas"] == "h2"
    torch.testing.assert_close(h2[0][0], total[0][0] * fraction, rtol=1e-5, atol=0.0)
    pv = SimpleObserver(TINY).observe(lopsided_field(TINY, x_h2=0.5)).mean("lat").values  # H2, iris_nb's X
    assert corr(h2[0][0][0], pv) > 0.99
    np.testing.assert_allclose(h2[0][0][0].numpy().sum() / pv.sum(),
                               REFERENCE_H2_PER_X_RHO / (2 * HYDROGEN_MASS_FRACTION), rtol=0.01)
    write_reference_of(tmp_path / "arepo", lopsided_field(REFERENCE_POINTS))  # x_H2 from the snapshot
    assert read_iris_dataset(tmp_path / "arepo", gas="total").gas == "total"
    with pytest.raises(ValueError, match="no single factor"):
        read_iris_dataset(tmp_path / "arepo", gas="h2")
    with pytest.raises(ValueError, match="gas must be None or 'total'"):
        read_iris_dataset(tmp_path / "arepo", gas="H2")
    write_reference(tmp_path / "lines")
    assert read_iris_dataset(tmp_path / "lines").gas is None
    with pytest.raises(ValueError, match="holds brightness temperatures"):
        read_iris_dataset(tmp_path / "lines", gas="h2")


def test_simple_observer_bins_total_or_h2_gas():
    x_h2 = 0.3
    field = lopsided_field(TINY, x_h2=x_h2)
    h2, total = (SimpleObserver(TINY, gas=gas) for gas in ("h2", "total"))
    assert h2.config == {"observer": "SimpleObserver"} and total.config["gas"] == "total"  # old stores resume
    assert SimpleObserver(TINY).gas == "h2"
    ratio = total.observe(field).values.sum() / h2.observe(field).values.sum()
    np.testing.assert_allclose(ratio, 1.0 / (2 * HYDROGEN_MASS_FRACTION * x_h2), rtol=1e-5)
    tensors = field_tensors([field])
    del tensors["x_h2"]  # total gas needs no H2 fraction
    torch.testing.assert_close(total(tensors), total(field_tensors([field])))
    with pytest.raises(ValueError, match="needs the field variables"):
        h2(tensors)
    cmz = make_cmz(TINY, seed=4)  # x_h2 varies: the ratio is the mass-weighted one of the cells in the window
    inside = np.abs(cmz["velocity_los"].values) <= TINY.velocity.stop
    density = cmz["density"].values * inside
    expected = density.sum() / h2_density(density, cmz["x_h2"].values).sum()
    ratio = total.observe(cmz).values.sum() / h2.observe(cmz).values.sum()
    np.testing.assert_allclose(ratio, expected, rtol=1e-4)
    assert ratio > 1.0 / (2 * HYDROGEN_MASS_FRACTION * 0.5)
    for bad in ("H2", "co", None):
        with pytest.raises(ValueError, match="gas must be 'h2'"):
            SimpleObserver(TINY, gas=bad)


def test_reads_pairs_in_iris_nb_units_and_orientation(tmp_path):
    truth = write_reference(tmp_path / "ref")
    ds = read_iris_dataset(tmp_path / "ref")
    exact = read_iris_dataset(tmp_path / "ref", sampling="exact")
    assert len(ds) == 5 and ds.observable == "brightness" and ds.reduction == "mean"
    assert ds.grid == TINY and ds.grid.beam_fwhm == 30.0
    assert ds.units == {"observation": "K", "target": "solMass / pc3"}
    assert ds.settings == {"flip_velocity": True, "mirror_lon": True, "sampling": "resample",
                           "observable": "brightness", "gas": None}
    for i, (observation, target) in enumerate(truth):
        obs, tgt = ds[i]
        assert obs.shape == (1, 64, 64) and tgt.shape == (1, 64, 64) and obs.dtype == torch.float32
        np.testing.assert_allclose(obs[0].numpy(), centres_from_samples(centres_from_samples(observation, 0), 1),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(tgt[0].numpy(), centres_from_samples(centres_from_samples(target, 0), 1),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(exact[i][0][0].numpy(), observation, rtol=1e-5)
        np.testing.assert_allclose(exact[i][1][0].numpy(), target, rtol=1e-5)
        # the empty bands are at negative velocity and negative longitude
        assert float(obs[0, :, :4].abs().max()) == 0.0 and float(obs[0, :2].abs().max()) == 0.0
        assert float(tgt[0, :, :2].abs().max()) == 0.0


def test_column_observations_and_unflipped_axes(tmp_path):
    truth = write_reference(tmp_path / "ref", observable="column", v_window=(-250.0, 150.0))
    ds = read_iris_dataset(tmp_path / "ref", sampling="exact")
    assert ds.observable == "column" and ds.units["observation"] == "solMass s / (km pc2)"
    assert ds.gas == "total" and ds.observer["input_space"] == "v_density"
    half = 0.5 * 400.0 / 63
    assert ds.grid.velocity == Axis(-150.0 - half, 250.0 + half, 64)  # the reference's axis, sign reversed
    assert read_iris_dataset(tmp_path / "ref").grid.velocity == Axis(-150.0, 250.0, 64)
    np.testing.assert_allclose(ds[2][0][0].numpy(), truth[2][0], rtol=1e-5)
    raw = read_iris_dataset(tmp_path / "ref", flip_velocity=False, mirror_lon=False, sampling="exact")
    assert raw.grid.velocity == Axis(-250.0 - half, 150.0 + half, 64) and raw.grid.lon == ds.grid.lon
    np.testing.assert_allclose(raw[2][0][0].numpy(), truth[2][0][::-1, ::-1], rtol=1e-5)
    np.testing.assert_allclose(raw[2][1][0].numpy(), truth[2][1][:, ::-1], rtol=1e-5)
    with pytest.raises(ValueError, match="sampling 'nearest' is not known"):
        read_iris_dataset(tmp_path / "ref", sampling="nearest")


def test_cropped_distance_window_and_folder_without_index(tmp_path):
    truth = write_reference(tmp_path / "ref", index=False, r_steps=128, crop=(32, 96))
    ds = read_iris_dataset(tmp_path / "ref", sampling="exact")
    spacing = 450.0 / 127  # the reference's samples: linspace(8052, 8502, 128)[32:96]
    first, last = 8052.0 + 32 * spacing, 8502.0 - 32 * spacing
    assert ds.grid.distance == Axis(first - spacing / 2, last + spacing / 2, 64)
    np.testing.assert_allclose(ds.grid.distance.centers(), np.linspace(8052.0, 8502.0, 128)[32:96])
    assert read_iris_dataset(tmp_path / "ref").grid.distance == Axis(first, last, 64)
    step = 450.0 / 128  # the [min, max] window cut into 128 pixels, rows 32 to 96
    assert read_iris_dataset(tmp_path / "ref", sampling="relabel").grid.distance == Axis(8052.0 + 32 * step,
                                                                                          8052.0 + 96 * step, 64)
    assert len(ds) == 5
    np.testing.assert_allclose(ds[4][1][0].numpy(), truth[4][1], rtol=1e-5)  # node_1/columnized_2


def test_to_store_and_convert_give_a_dataset_store(tmp_path):
    truth = write_reference(tmp_path / "ref")
    ref = read_iris_dataset(tmp_path / "ref")
    path = ref.to_store(tmp_path / "store.zarr", chunk_size=2, progress=False)
    stored = xr.open_zarr(path)
    assert stored["observation"].dims == ("sample", "lon", "velocity")
    assert stored.attrs["model"] == "iris-reference" and stored["observation"].attrs["units"] == "K"
    store = PreObservedDataset(path, validation_fraction=0, test_fraction=0)
    assert store.grid == ref.grid and len(store) == len(ref)
    for i in range(len(ref)):
        torch.testing.assert_close(store[i][0], ref[i][0])
        torch.testing.assert_close(store[i][1], ref[i][1])
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    ref.to_store(path, chunk_size=2, progress=False)  # already complete: nothing changes
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    other = convert_iris_dataset(tmp_path / "ref", tmp_path / "converted.zarr", dtype="float16", progress=False,
                                 sampling="exact")
    half = PreObservedDataset(other, validation_fraction=0, test_fraction=0)
    assert json.loads(xr.open_zarr(other).attrs["model_kwargs"])["sampling"] == "exact"
    np.testing.assert_allclose(half[1][1][0].numpy(), truth[1][1], rtol=2e-3)


def test_concatenation_converts_units(tmp_path):
    write_reference(tmp_path / "ref")
    milli = read_iris_dataset(tmp_path / "ref", units={"observation": "mK"})
    kelvin = read_iris_dataset(tmp_path / "ref")
    both = ConcatDataset([milli, kelvin])
    assert both.units["observation"] == "mK"
    torch.testing.assert_close(both[len(milli) + 1][0], kelvin[1][0] * 1e3)
    torch.testing.assert_close(both[len(milli) + 1][0], both[1][0])
    with pytest.raises(ValueError, match="cannot convert observations"):
        kelvin.with_units({"observation": "solMass s / (km pc2)"})


def test_broken_reference_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="hyper.json is missing"):
        tmp_path.joinpath("empty").mkdir()
        read_iris_dataset(tmp_path / "empty")
    write_reference(tmp_path / "gone")
    (tmp_path / "gone" / "node_1" / "observed_2.npy").unlink()
    with pytest.raises(ValueError, match="files listed .* are missing"):
        read_iris_dataset(tmp_path / "gone")
    write_reference(tmp_path / "count")
    attributes = json.loads((tmp_path / "count" / "attributes.json").read_text())
    attributes["cardinality"] = 9
    (tmp_path / "count" / "attributes.json").write_text(json.dumps(attributes))
    with pytest.raises(ValueError, match="cardinality 9 but lists 5"):
        read_iris_dataset(tmp_path / "count")
    write_reference(tmp_path / "units")
    hyper = json.loads((tmp_path / "units" / "hyper.json").read_text())
    hyper["dataset_hyper"]["_mass_iris_per_SI"] = None
    (tmp_path / "units" / "hyper.json").write_text(json.dumps(hyper))
    with pytest.raises(ValueError, match="_mass_iris_per_SI"):
        read_iris_dataset(tmp_path / "units")
    write_reference(tmp_path / "shape")
    wrong = read_iris_dataset(tmp_path / "shape", grid=TINY.replace(lon=TINY.lon.with_steps(32)))
    with pytest.raises(ValueError, match=r"has shape \(1, 64, 64\); expected"):
        wrong[0]
