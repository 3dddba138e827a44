"""write_dataset: layout seen by plain xarray, physics of each pair, reproducibility, resuming."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from iris_nb.data.store import open_store, sample_seed, store_info, write_dataset
from iris_nb.grids import Grid
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.columnize import columnize
from iris_nb.sim.observers import SimpleObserver

from ._models import TINY, FailingModel, cloud_model, slow_cmz

TESTS_DIR = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cmz_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "cmz.zarr"
    write_dataset(path, 5, TINY, observer=SimpleObserver(TINY), seed=3, workers=0, chunk_size=2, progress=False)
    return path


# --------------------------------------------------------------------------- seeds
def test_sample_seed_depends_only_on_seed_and_index():
    seeds = [sample_seed(7, i) for i in range(200)]
    assert seeds == [sample_seed(7, i) for i in range(200)]
    assert len(set(seeds)) == 200
    assert set(seeds).isdisjoint(sample_seed(8, i) for i in range(200))
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="index must be >= 0"):
        sample_seed(0, -1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        sample_seed(1.5, 0)


# --------------------------------------------------------------------------- layout and physics
def test_store_opens_in_plain_xarray_with_dims_units_and_attrs(cmz_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: no fallback warning
        ds = xr.open_zarr(cmz_store)
    assert ds["observation"].dims == ("sample", "lon", "velocity")
    assert ds["target"].dims == ("sample", "distance", "lon")
    assert ds["observation"].shape == (5, 64, 64) and ds["target"].shape == (5, 64, 64)
    assert ds["observation"].attrs["units"] == "solMass s / (km pc2)"
    assert ds["target"].attrs["units"] == "solMass / pc3"
    assert {ds[c].attrs["units"] for c in ("lon", "velocity", "distance")} == {"deg", "km/s", "pc"}
    np.testing.assert_allclose(ds["velocity"].values, TINY.velocity.centers())
    assert Grid.from_json(ds.attrs["grid"]) == TINY
    assert ds.attrs["reduction"] == "mean" and ds.attrs["seed"] == 3 and ds.attrs["dtype"] == "float32"
    assert ds.attrs["model"] == "iris_nb.sim.cmz.make_cmz" and ds.attrs["iris_nb_version"]
    assert json.loads(ds.attrs["observer"])["class"].endswith("SimpleObserver")
    # per-sample gas-model parameters, one (sample,) variable each, equal to the field's attrs
    field = make_cmz(TINY, seed=sample_seed(3, 4))
    params = json.loads(field.attrs["parameters"])
    scalar = [k for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert scalar
    for key in scalar:
        assert ds[key].dims == ("sample",)
        assert float(ds[key][4]) == pytest.approx(params[key])
    assert ds["sample_seed"].values.tolist() == [sample_seed(3, i) for i in range(5)]
    assert ds["done"].values.tolist() == [1, 1, 1]


def test_each_pair_is_the_observed_and_columnized_gas_of_its_seed(cmz_store):
    ds = xr.open_zarr(cmz_store)
    observer = SimpleObserver(TINY)
    for i in (0, 3):
        field = make_cmz(TINY, seed=sample_seed(3, i))
        cube = observer.observe(field).transpose("lon", "lat", "velocity")
        np.testing.assert_allclose(ds["observation"][i].values, cube.mean("lat").values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["target"][i].values, columnize(field).values, rtol=1e-5, atol=1e-7)
    assert float(ds["target"].max()) > 0 and float(ds["observation"].max()) > 0


def test_max_reduction_and_float16_storage(tmp_path):
    path = write_dataset(tmp_path / "max.zarr", 3, TINY, model=cloud_model, observer=SimpleObserver(TINY),
                         reduction="max", dtype="float16", workers=0, progress=False)
    ds = xr.open_zarr(path)
    assert ds["observation"].dtype == np.float16 and ds.attrs["reduction"] == "max"
    field = cloud_model(TINY, seed=sample_seed(0, 1))
    cube = SimpleObserver(TINY).observe(field).transpose("lon", "lat", "velocity")
    np.testing.assert_allclose(ds["observation"][1].values.astype(np.float32), cube.max("lat").values,
                               rtol=2e-3, atol=1e-3)
    # cloud_model's nested parameter {"shape": {"width_deg": ..}} is flattened; text is skipped
    assert "shape_width_deg" in ds and "name" not in ds


# --------------------------------------------------------------------------- reproducibility
@pytest.mark.slow
def test_bytes_do_not_depend_on_workers_and_chunking(tmp_path):
    one = write_dataset(tmp_path / "one.zarr", 6, TINY, model=cloud_model, workers=0, chunk_size=2, progress=False)
    two = write_dataset(tmp_path / "two.zarr", 6, TINY, model=cloud_model, workers=2, chunk_size=3, progress=False)
    a, b = xr.open_zarr(one), xr.open_zarr(two)
    for name in ("observation", "target", "sample_seed", "n_clouds", "peak_mean"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


@pytest.mark.slow
def test_killed_writer_resumes_to_the_same_bytes(tmp_path):
    killed, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from data._models import TINY, slow_cmz\n"
        "from iris_nb.data.store import write_dataset\n"
        f"write_dataset({str(killed)!r}, 8, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done_dir = killed / "done" / "c"
    deadline = time.monotonic() + 120
    while not (done_dir.is_dir() and any(done_dir.iterdir())):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the writer made no chunk in 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    part = store_info(killed)
    assert 1 <= int(part.done.sum()) < part.n_chunks  # really killed part-way
    assert open_store(killed).sizes["sample"] == part.n_done

    write_dataset(killed, 8, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)
    write_dataset(clean, 8, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)
    resumed_files, clean_files = _files(killed), _files(clean)
    assert sorted(resumed_files) == sorted(clean_files)
    for name in clean_files:
        assert resumed_files[name] == clean_files[name], name
    assert store_info(killed).complete


def test_failed_chunks_are_not_counted_and_a_rerun_completes(tmp_path):
    path = tmp_path / "fail.zarr"
    with pytest.raises(RuntimeError, match="gas model failed"):
        write_dataset(path, 6, TINY, model=FailingModel(sample_seed(0, 4)), workers=0, chunk_size=2,
                      progress=False)
    info = store_info(path)
    assert info.done.tolist() == [True, True, False]
    assert np.isnan(xr.open_zarr(path)["observation"][4:].values).all()
    assert open_store(path).sizes["sample"] == 4
    write_dataset(path, 6, TINY, model=FailingModel(-1), workers=0, chunk_size=2, progress=False)
    assert store_info(path).complete and not np.isnan(xr.open_zarr(path)["observation"].values).any()


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("change, key", [
    ({"grid": TINY.replace(lat=TINY.lat.with_steps(4))}, "grid"),
    ({"reduction": "max"}, "reduction"),
    ({"dtype": "float16"}, "dtype"),
    ({"n": 6}, "n"),
    ({"seed": 4}, "seed"),
    ({"chunk_size": 3}, "chunk_size"),
    ({"model": cloud_model}, "model"),
])
def test_existing_store_with_other_arguments_is_refused(cmz_store, change, key):
    args = dict(n=5, grid=TINY, seed=3, chunk_size=2)
    args.update(change)
    grid = args["grid"]
    with pytest.raises(ValueError, match=rf"{key}: store has"):
        write_dataset(cmz_store, observer=SimpleObserver(grid), workers=0, progress=False, **args)


def test_other_observer_is_refused(cmz_store):
    from iris_nb.sim.observers import LineObserver

    with pytest.raises(ValueError, match="observer: store has"):
        write_dataset(cmz_store, 5, TINY, observer=LineObserver(TINY), seed=3, workers=0, progress=False)


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_other_compressions_hold_the_same_values(tmp_path, compression):
    default = write_dataset(tmp_path / "lz4.zarr", 3, TINY, model=cloud_model, workers=0, progress=False)
    other = write_dataset(tmp_path / "other.zarr", 3, TINY, model=cloud_model, workers=0, progress=False,
                          compression=compression)
    assert store_info(other).compression == compression
    a, b = xr.open_zarr(default), xr.open_zarr(other)
    np.testing.assert_array_equal(a["observation"].values, b["observation"].values)
    np.testing.assert_array_equal(a["target"].values, b["target"].values)
    with pytest.raises(ValueError, match="compression: store has"):
        write_dataset(other, 3, TINY, model=cloud_model, workers=0, progress=False)
    with pytest.raises(ValueError, match="compression 'gzip' is not known"):
        write_dataset(tmp_path / "gzip.zarr", 3, TINY, model=cloud_model, compression="gzip", progress=False)


def test_path_holding_something_else_is_refused(tmp_path):
    a_file = tmp_path / "file.zarr"
    a_file.write_text("not a store")
    with pytest.raises(ValueError, match="is a file"):
        write_dataset(a_file, 2, TINY, model=cloud_model, workers=0, progress=False)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        write_dataset(folder, 2, TINY, model=cloud_model, workers=0, progress=False)
    assert (folder / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, 2, TINY, model=cloud_model, workers=0, progress=False)
    assert store_info(empty).complete


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "positive integer"),
    ({"dtype": "float64"}, "float32"),
    ({"reduction": "median"}, "'mean' or 'max'"),
    ({"seed": -1}, "seed must be"),
    ({"workers": -2}, "workers must be"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_arguments_fail_before_anything_is_written(tmp_path, kwargs, message):
    args = dict(n=2, grid=TINY, model=cloud_model, workers=0, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        write_dataset(tmp_path / "s.zarr", **args)
    assert not (tmp_path / "s.zarr").exists()


def test_observer_on_another_grid_and_unsendable_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="observer was built for"):
        write_dataset(tmp_path / "a.zarr", 2, TINY, model=cloud_model,
                      observer=SimpleObserver(TINY.replace(lon=TINY.lon.with_steps(32))), progress=False)

    class Locked:
        lock = threading.Lock()

        def __call__(self, grid, seed=0):
            return cloud_model(grid, seed=seed)

    with pytest.raises(TypeError, match="cannot be sent to worker processes"):
        write_dataset(tmp_path / "b.zarr", 2, TINY, model=Locked(), workers=2, progress=False)
    assert not (tmp_path / "b.zarr").exists()


def test_field_on_another_grid_and_float16_overflow_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="do not match the requested grid"):
        write_dataset(tmp_path / "a.zarr", 2, TINY, model=lambda grid, seed: cloud_model(TINY.replace(
            lon=TINY.lon.with_steps(32)), seed=seed), workers=0, progress=False)
    with pytest.raises(ValueError, match="float16 range"):
        write_dataset(tmp_path / "b.zarr", 2, TINY, model=cloud_model, model_kwargs={"scale": 1e6},
                      dtype="float16", workers=0, progress=False)
    assert not store_info(tmp_path / "b.zarr").done.any()


@pytest.mark.slow
def test_dask_client_writes_the_same_store(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, \
            distributed.Client(cluster) as client:
        a = write_dataset(tmp_path / "dask.zarr", 4, TINY, model=cloud_model, chunk_size=2, client=client,
                          progress=False)
    b = write_dataset(tmp_path / "local.zarr", 4, TINY, model=cloud_model, chunk_size=2, workers=0, progress=False)
    assert _files(a) == _files(b)


# --------------------------------------------------------------------------- batched torch gas model
def test_batched_gas_model_store_holds_its_fields_and_continues_only_with_it(tmp_path):
    from iris_nb.sim import CMZModel
    from iris_nb.sim.columnize import columnize_tensors

    gas = CMZModel(TINY, cloud_count=4)
    path = tmp_path / "torch.zarr"
    write_dataset(path, 5, TINY, model=gas, observer=SimpleObserver(TINY), seed=2, chunk_size=2, progress=False)
    ds = xr.open_zarr(path)
    assert ds.attrs["model"] == "iris_nb.sim.cmz_model.CMZModel@cpu"
    seeds = [sample_seed(2, i) for i in range(5)]
    assert ds["sample_seed"].values.tolist() == seeds
    fields = gas.sample(seeds)
    cube = SimpleObserver(TINY)(fields)
    np.testing.assert_allclose(ds["observation"].values, cube.mean(dim=2).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds["target"].values, columnize_tensors(fields).numpy(), rtol=1e-5, atol=1e-7)
    drawn = gas.parameters(seeds)
    assert ds["ring_semi_major"].values.tolist() == [p["ring_semi_major"] for p in drawn]
    assert set(ds["cloud_count"].values.tolist()) == {4.0}
    before = _files(path)
    write_dataset(path, 5, TINY, model=gas, observer=SimpleObserver(TINY), seed=2, chunk_size=2, progress=False)
    assert _files(path) == before  # complete: nothing redone
    with pytest.raises(ValueError, match="model"):
        write_dataset(path, 5, TINY, observer=SimpleObserver(TINY), seed=2, chunk_size=2, progress=False,
                      model_kwargs={"cloud_count": 4})
    with pytest.raises(ValueError, match="augment"):
        write_dataset(tmp_path / "a.zarr", 2, TINY, model=gas, observer=SimpleObserver(TINY), augment={"size": 0.5},
                      progress=False)
    with pytest.raises(ValueError, match="workers"):
        write_dataset(tmp_path / "b.zarr", 2, TINY, model=gas, observer=SimpleObserver(TINY), workers=2,
                      progress=False)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            write_dataset(tmp_path / "c.zarr", 2, TINY, observer=SimpleObserver(TINY), device="cuda", progress=False)
        assert not (tmp_path / "c.zarr").exists()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_store_is_drawn_on_the_gpu(tmp_path):
    path = tmp_path / "gpu.zarr"
    write_dataset(path, 4, TINY, observer=SimpleObserver(TINY), seed=1, device="cuda", progress=False)
    ds = xr.open_zarr(path)
    assert ds.attrs["model"] == "iris_nb.sim.cmz_model.CMZModel@cuda"
    assert float(ds["target"].max()) > 0 and np.isfinite(ds["observation"].values).all()


def test_store_with_velocity_maps_feeds_two_output_models(tmp_path, cmz_store):
    from iris_nb.data.datasets import PreObservedDataset
    from iris_nb.sim.columnize import columnize_velocity

    path = tmp_path / "velocity.zarr"
    write_dataset(path, 4, TINY, observer=SimpleObserver(TINY), seed=3, workers=0, chunk_size=2, progress=False,
                  velocity=True)
    ds = xr.open_zarr(path)
    assert ds["target_velocity"].attrs["units"] == "km / s"
    field = make_cmz(TINY, seed=sample_seed(3, 1))
    np.testing.assert_allclose(ds["target_velocity"][1].values, columnize_velocity(field).values, rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(ds["target"].values, xr.open_zarr(cmz_store)["target"][:4].values)  # same gas
    pairs = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0, velocity=True)
    observation, target = pairs[1]
    assert observation.shape == (1, 64, 64) and target.shape == (2, 64, 64)
    memory = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0, velocity=True,
                                in_memory=True)
    assert torch_equal(memory[1][1], target)
    with pytest.raises(ValueError, match="velocity"):
        PreObservedDataset(cmz_store, velocity=True)
    with pytest.raises(ValueError, match="velocity"):
        write_dataset(path, 4, TINY, observer=SimpleObserver(TINY), seed=3, workers=0, chunk_size=2, progress=False)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


# --------------------------------------------------------------------------- processes sharing a store
def _script(path: Path, workers: int) -> str:
    return (f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
            "from data._models import TINY, cloud_model\n"
            "from iris_nb.data.store import write_dataset\n"
            "def three_clouds(grid, seed=0):  # defined in the piped script itself\n"
            "    return cloud_model(grid, seed=seed, n_clouds=3)\n"
            f"write_dataset({str(path)!r}, 6, TINY, model=three_clouds, workers={workers}, chunk_size=2, "
            "progress=False)\n")


@pytest.mark.slow
def test_spawned_workers_run_from_stdin_and_dash_c_scripts(tmp_path):
    """Worker processes start for a script piped on stdin or given with -c, and write what one process writes."""
    def three_clouds(grid, seed=0):
        return cloud_model(grid, seed=seed, n_clouds=3)

    reference = xr.open_zarr(write_dataset(tmp_path / "one.zarr", 6, TINY, model=three_clouds, workers=0,
                                           chunk_size=2, progress=False))
    stdin, dash_c = tmp_path / "stdin.zarr", tmp_path / "dash_c.zarr"
    runs = [subprocess.run([sys.executable, "-"], input=_script(stdin, 2), text=True, capture_output=True,
                           timeout=300),
            subprocess.run([sys.executable, "-c", _script(dash_c, 2)], text=True, capture_output=True,
                           timeout=300)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    for path in (stdin, dash_c):
        written = xr.open_zarr(path)
        for name in ("observation", "target", "sample_seed"):
            np.testing.assert_array_equal(written[name].values, reference[name].values)


def test_a_second_writer_of_the_same_store_is_refused_and_the_first_completes(tmp_path):
    from iris_nb.data.store import StoreBusyError, lock_path

    path = tmp_path / "shared.zarr"
    script = tmp_path / "writer.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from data._models import TINY, slow_cmz\n"
        "from iris_nb.data.store import write_dataset\n"
        f"write_dataset({str(path)!r}, 6, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (lock_path(path).is_file() and f"pid {proc.pid}" in lock_path(path).read_text()):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the first writer never took the store"
        time.sleep(0.02)
    with pytest.raises(StoreBusyError, match=f"being written by pid {proc.pid}.*wait"):
        write_dataset(path, 6, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)
    assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()
    assert store_info(path).complete  # the refused call touched nothing
    # the lock went with its process: a later call (here a no-op continuation) is let in
    write_dataset(path, 6, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)
    clean = write_dataset(tmp_path / "clean.zarr", 6, TINY, model=slow_cmz, workers=0, chunk_size=2, progress=False)
    a, b = xr.open_zarr(path), xr.open_zarr(clean)
    np.testing.assert_array_equal(a.observation.values, b.observation.values)


def test_progress_in_a_log_is_a_few_plain_lines(tmp_path):
    """Piped (not a terminal), write_dataset's progress is newline-ended lines, one per 10% at most."""
    script = (f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
              "from data._models import TINY, cloud_model\n"
              "from iris_nb.data.store import write_dataset\n"
              f"write_dataset({str(tmp_path / 'log.zarr')!r}, 40, TINY, model=cloud_model, workers=0, chunk_size=2)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("write_dataset:")]
    assert "\r" not in run.stderr
    assert 2 <= len(lines) <= 11, run.stderr
    assert lines[-1].startswith("write_dataset: 40/40 sample (100%)")
