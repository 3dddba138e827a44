"""Read speed and disk use of a dataset store beside the reference's one-.npy-file-per-array layout.

The same pairs (real make_cmz gas seen by SimpleObserver) are held three ways:

* ``store_f32``: an iris_nb zarr store, float32 (write_dataset);
* ``store_f16``: the same pairs in a float16 store;
* ``store_f32_raw``, ``store_f16_raw``: the same without compression (``compression=None``);
* ``npy``: the reference IRIS layout, ``node_0/observed_k.npy`` + ``node_0/columnized_k.npy``
  (one float32 file per array) read the way the reference reads it (``np.load`` then
  ``torch.tensor`` for each file).

Each is read for one full epoch in random order through a DataLoader (batch 8, workers 0 and
2, persistent workers, timed after a warm-up epoch; the layouts are timed in turn, round
after round, and the median epoch is reported, so that load changes hit all alike): the stores with ``ChunkShuffleSampler``
(and, for comparison, a plain random permutation), the npy layout with a plain random
permutation.  ``--cold`` also evicts the files from the page cache before each timed epoch
(``posix_fadvise``), to mimic data that is not in memory.

Run::

    python benchmarks/bench_store.py --n 256 --grid SMALL
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from iris_nb.data.datasets import ChunkShuffleSampler, PreObservedDataset
from iris_nb.data.layout import create_store, store_info, write_chunk
from iris_nb.data.store import write_dataset
from iris_nb.grids import get_grid


class NpyPairs(torch.utils.data.Dataset):
    """The reference's read path: one np.load per array, then torch.tensor, per item."""

    def __init__(self, root: Path):
        self.files = [(root / t, root / o) for t, o in json.loads((root / "attributes.json").read_text())["index"]]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, item):
        target_file, observation_file = self.files[item]
        target = torch.tensor(np.load(target_file), dtype=torch.float32)
        observation = torch.tensor(np.load(observation_file), dtype=torch.float32)
        return observation, target


VARIANTS = {"store_f32": ("float32", "lz4"), "store_f16": ("float16", "lz4"), "store_f32_raw": ("float32", None),
            "store_f16_raw": ("float16", None)}


def copy_store(source, info, path: Path, dtype: str, compression) -> None:
    """The pairs of ``source`` in another dtype / codec (same chunking)."""
    params = json.loads(info.attrs["parameter_keys"])
    keep = ("seed", "reduction", "model", "model_kwargs", "observer", "iris_nb_version")
    attrs = {k: info.attrs[k] for k in keep}
    group = create_store(path, grid=info.grid, n=info.n_samples, chunk_size=info.chunk_size, dtype=dtype,
                         observation_units=info.units["observation"], parameters=params, attrs=attrs,
                         compression=compression)
    for k in range(info.n_chunks):
        rows = info.chunk_samples(k)
        result = {"observation": source["observation"][rows.start:rows.stop],
                  "target": source["target"][rows.start:rows.stop],
                  "sample_seed": source["sample_seed"][rows.start:rows.stop],
                  "parameters": {key: source[name][rows.start:rows.stop] for key, name in params.items()}}
        write_chunk(group, k, info.chunk_size, result, params)


def make_data(root: Path, n: int, grid_name: str, workers: int) -> dict:
    import zarr

    grid = get_grid(grid_name)
    paths = {name: root / f"{grid_name}_{n}_{name}.zarr" for name in VARIANTS}
    write_dataset(paths["store_f32"], n, grid, seed=0, workers=workers, progress=True)
    info = store_info(paths["store_f32"])
    source = zarr.open_group(str(paths["store_f32"]), mode="r")
    for name, (dtype, compression) in VARIANTS.items():
        if name != "store_f32" and not (paths[name] / "zarr.json").exists():
            copy_store(source, info, paths[name], dtype, compression)
    npy = root / f"{grid_name}_{n}_npy"
    if not (npy / "attributes.json").exists():
        (npy / "node_0").mkdir(parents=True, exist_ok=True)
        index = []
        for i in range(n):
            np.save(npy / "node_0" / f"columnized_{i}.npy", source["target"][i][None].astype(np.float32))
            np.save(npy / "node_0" / f"observed_{i}.npy", source["observation"][i][None].astype(np.float32))
            index.append([f"node_0/columnized_{i}.npy", f"node_0/observed_{i}.npy"])
        (npy / "attributes.json").write_text(json.dumps({"cardinality": n, "index": index}))
    return dict(paths, npy=npy)


def disk_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def drop_cache(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def interleaved_rates(cases: dict, workers: int, cold: bool, repeats: int) -> dict:
    """Median samples/s of one epoch per case; cases are timed in turn, round after round, so a
    change of machine load hits them alike.  ``cases``: label -> (dataset, sampler, path)."""
    loaders = {label: DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers,
                                 persistent_workers=workers > 0)
               for label, (ds, sampler, _) in cases.items()}
    for loader in loaders.values():  # warm-up epoch: worker start-up, imports, first opens
        for _ in loader:
            pass
    rates = {label: [] for label in cases}
    for _ in range(repeats):
        for label, loader in loaders.items():
            if cold:
                drop_cache(cases[label][2])
            start = time.perf_counter()
            count = sum(len(obs) for obs, _ in loader)
            rates[label].append(count / (time.perf_counter() - start))
    del loaders
    return {label: float(np.median(r)) for label, r in rates.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="samples (default 256)")
    parser.add_argument("--grid", default="SMALL", help="grid preset (default SMALL)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/iris_nb_bench_store"), help="data folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers")
    parser.add_argument("--write-workers", type=int, default=2, help="processes making the data")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs (median reported)")
    parser.add_argument("--cold", action="store_true", help="also time reads with the page cache dropped")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    paths = make_data(args.data, args.n, args.grid, args.write_workers)
    results = {"grid": args.grid, "n": args.n, "cpu_count": os.cpu_count(), "machine": platform.processor() or
               platform.machine(), "load_average": os.getloadavg(), "disk": {}, "samples_per_s": {}}
    for name, path in paths.items():
        apparent, allocated = disk_bytes(path)
        results["disk"][name] = {"bytes_per_sample": apparent / args.n, "allocated_per_sample": allocated / args.n}
        print(f"{name:10s} disk {apparent / args.n / 1024:8.1f} KiB/sample "
              f"(allocated {allocated / args.n / 1024:8.1f} KiB/sample)")
    modes = [False, True] if args.cold else [False]
    for cold in modes:
        for workers in args.workers:
            key = f"workers={workers}" + (", cold cache" if cold else "")
            npy = NpyPairs(paths["npy"])
            cases = {"npy (reference layout), random": (npy, RandomSampler(npy), paths["npy"])}
            for name in VARIANTS:
                ds = PreObservedDataset(paths[name], validation_fraction=0, test_fraction=0)
                cases[f"{name}, ChunkShuffleSampler"] = (
                    ds, ChunkShuffleSampler(ds, num_workers=workers, batch_size=8), paths[name])
                if name in ("store_f32", "store_f16"):
                    cases[f"{name}, plain random"] = (ds, RandomSampler(ds), paths[name])
            row = interleaved_rates(cases, workers, cold, args.repeats)
            base = row["npy (reference layout), random"]
            print(f"\n{key}:")
            for label, rate in row.items():
                print(f"  {label:40s} {rate:9.0f} samples/s  ({rate / base:5.2f}x the npy layout)")
            results["samples_per_s"][key] = row
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
