"""read_iris_dataset on reference-layout folders written here, and conversion to stores."""

import json

import astropy.units as u
import numpy as np
import pytest
import torch
import xarray as xr

from iris_nb.data.datasets import ConcatDataset, PreObservedDataset
from iris_nb.data.reference import convert_iris_dataset, read_iris_dataset
from iris_nb.grids import Axis

from ._models import TINY

# IRIS unit factors ("IRIS units per SI unit"), deliberately not round numbers
MASS, LENGTH, TIME, TEMPERATURE = 3.1e-31, 2.7e-17, 1.9e-3, 0.37
DENSITY = MASS / LENGTH**3


def _hyper(observable="brightness", v_window=(-200.0, 200.0), r_steps=64, crop=(0, 64)):
    dataset = {"meters_per_parsec": 3.08567758128e16, "_mass_iris_per_SI": MASS, "_length_iris_per_SI": LENGTH,
               "_time_iris_per_SI": TIME, "_temperature_iris_per_SI": TEMPERATURE,
               "_v_density_iris_per_processing": 2.5 if observable == "column" else None}
    return {
        "writer_hyper": {"total_snapshots": 1, "points_per_snapshot": 4},
        "dataset_hyper": dataset,
        "coordinate_hyper": {"r_min": 8052.0, "r_max": 8502.0, "r_steps": r_steps, "r_crop_min_index": crop[0],
                             "r_crop_max_index": crop[1], "lon_min": -1.5, "lon_max": 1.5, "lon_steps": 64,
                             "lat_min": -0.375, "lat_max": 0.375, "lat_steps": 8, "observer_radius": 8277.0,
                             "spin_orientation": -1},
        "observer_hyper": {"out_blur_fwhm": 30.0, "noise_sigma": 1.0},
        "cube_hyper": {"v_min": v_window[0], "v_max": v_window[1], "v_steps": 64, "reduction": "mean"},
        "training_hyper": {"validation_data_fraction": 0.2, "batch_size": 8},
    }


def write_reference(root, observable="brightness", nodes=(2, 3), index=True, seed=0, **hyper_kwargs):
    """A reference-layout folder; returns the true pairs in iris_nb units and v_LSR orientation."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    hyper = _hyper(observable, **hyper_kwargs)
    (root / "hyper.json").write_text(json.dumps(hyper, indent=4))
    crop = hyper["coordinate_hyper"]["r_crop_max_index"] - hyper["coordinate_hyper"]["r_crop_min_index"]
    to_si_target = (1.0 * u.solMass / u.pc**3).to_value(u.kg / u.m**3)
    to_si_column = (1.0 * u.solMass * u.s / (u.km * u.pc**2)).to_value(u.kg * u.s / u.m**3)
    truth, listed = [], []
    for node, count in enumerate(nodes):
        (root / f"node_{node}").mkdir()
        for k in range(count):
            observation = rng.gamma(2.0, 3.0, (64, 64)).astype(np.float32)  # (lon, v_LSR), K or vrho
            observation[:, :5] = 0.0  # an empty band at negative v_LSR marks the orientation
            target = rng.gamma(2.0, 50.0, (crop, 64)).astype(np.float32)  # (distance, lon), solMass/pc3
            if observable == "brightness":
                stored_obs = observation * TEMPERATURE
            else:
                stored_obs = observation * to_si_column * DENSITY * TIME
            stored_target = target * to_si_target * DENSITY
            np.save(root / f"node_{node}" / f"observed_{k}.npy", stored_obs[None, :, ::-1].astype(np.float32))
            np.save(root / f"node_{node}" / f"columnized_{k}.npy", stored_target[None].astype(np.float32))
            listed.append([f"node_{node}/columnized_{k}.npy", f"node_{node}/observed_{k}.npy"])
            truth.append((observation, target))
    attributes = {"cardinality": len(listed)}
    if index:
        attributes["index"] = listed
    (root / "attributes.json").write_text(json.dumps(attributes))
    return truth


def test_reads_pairs_in_iris_nb_units_and_orientation(tmp_path):
    truth = write_reference(tmp_path / "ref")
    ds = read_iris_dataset(tmp_path / "ref")
    assert len(ds) == 5 and ds.observable == "brightness" and ds.reduction == "mean"
    assert ds.grid == TINY and ds.grid.beam_fwhm == 30.0
    assert ds.units == {"observation": "K", "target": "solMass / pc3"}
    for i, (observation, target) in enumerate(truth):
        obs, tgt = ds[i]
        assert obs.shape == (1, 64, 64) and tgt.shape == (1, 64, 64) and obs.dtype == torch.float32
        np.testing.assert_allclose(obs[0].numpy(), observation, rtol=1e-5)
        np.testing.assert_allclose(tgt[0].numpy(), target, rtol=1e-5)
        assert float(obs[0, :, :5].abs().max()) == 0.0  # the empty band is at negative velocity


def test_column_observations_and_unflipped_velocity(tmp_path):
    truth = write_reference(tmp_path / "ref", observable="column", v_window=(-250.0, 150.0))
    ds = read_iris_dataset(tmp_path / "ref")
    assert ds.observable == "column" and ds.units["observation"] == "solMass s / (km pc2)"
    assert ds.grid.velocity == Axis(-150.0, 250.0, 64)  # the reference's axis, sign reversed
    np.testing.assert_allclose(ds[2][0][0].numpy(), truth[2][0], rtol=1e-5)
    raw = read_iris_dataset(tmp_path / "ref", flip_velocity=False)
    assert raw.grid.velocity == Axis(-250.0, 150.0, 64)
    np.testing.assert_allclose(raw[2][0][0].numpy(), truth[2][0][:, ::-1], rtol=1e-5)


def test_cropped_distance_window_and_folder_without_index(tmp_path):
    truth = write_reference(tmp_path / "ref", index=False, r_steps=128, crop=(32, 96))
    ds = read_iris_dataset(tmp_path / "ref")
    step = 450.0 / 128
    assert ds.grid.distance == Axis(8052.0 + 32 * step, 8052.0 + 96 * step, 64)
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
    other = convert_iris_dataset(tmp_path / "ref", tmp_path / "converted.zarr", dtype="float16", progress=False)
    half = PreObservedDataset(other, validation_fraction=0, test_fraction=0)
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
