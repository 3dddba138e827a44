"""write_dataset throughput on the SMALL grid with 1 and 2 workers (real make_cmz + SimpleObserver).

For each worker count a fresh store of ``n`` samples is written; the reported figures are

* ``total``: ``n / T``, everything included (process start-up, the gas-model probe, the
  zarr writes);
* ``steady``: samples per second from the first completed chunk to the end (a thread
  watches the store's ``done`` record), i.e. once the workers run.

``workers=1`` runs in this process; ``workers=2`` spawns two processes.  Every job runs torch
single-threaded (that keeps the bytes independent of the worker count), so the steady rate
should scale with the number of free cores.  Also printed: the time of one sample split into
gas model, observer and columnize.

Run::

    python benchmarks/bench_write.py --n 48 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from iris_nb.data.store import sample_seed, write_dataset
from iris_nb.grids import get_grid
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.columnize import columnize_tensors
from iris_nb.sim.fields import field_tensors
from iris_nb.sim.observers import SimpleObserver


def one_sample_breakdown(grid, repeats: int = 3) -> dict:
    observer = SimpleObserver(grid)
    times = {"gas model": [], "observer": [], "columnize": []}
    torch.set_num_threads(1)
    with torch.no_grad():
        for i in range(repeats):
            start = time.perf_counter()
            field = make_cmz(grid, seed=sample_seed(0, i))
            tensors = field_tensors(field)
            times["gas model"].append(time.perf_counter() - start)
            start = time.perf_counter()
            observer(tensors).mean(dim=2)
            times["observer"].append(time.perf_counter() - start)
            start = time.perf_counter()
            columnize_tensors(tensors)
            times["columnize"].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def timed_write(root: Path, n: int, grid, workers: int, chunk_size: int) -> dict:
    """Write a fresh store; return the total time and the steady rate after the first chunk.

    A background thread watches the store's ``done`` record, so the steady rate leaves out
    process start-up and the first chunk of every worker."""
    path = root / f"w{workers}_n{n}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    marks, stop = [], threading.Event()

    def watch() -> None:
        seen = 0
        while not stop.is_set():
            folder = path / "done" / "c"
            count = len(list(folder.iterdir())) if folder.is_dir() else 0
            if count != seen:
                marks.append((time.perf_counter(), count))
                seen = count
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    write_dataset(path, n, grid, seed=0, workers=workers, chunk_size=chunk_size, progress=False)
    total = time.perf_counter() - start
    stop.set()
    watcher.join()
    first_t, first_count = marks[0] if marks else (start, 0)
    steady = (n - min(n, first_count * chunk_size)) / max(start + total - first_t, 1e-9)
    return {"seconds": total, "total_samples_per_s": n / total, "steady_samples_per_s": steady,
            "first_chunk_after_s": first_t - start}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="SMALL")
    parser.add_argument("--n", type=int, default=48, help="samples per run (default 48)")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    grid = get_grid(args.grid)
    results = {"grid": args.grid, "n": args.n, "chunk_size": args.chunk_size,
               "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "runs": {}}
    breakdown = one_sample_breakdown(grid)
    results["one_sample_seconds"] = breakdown
    print("one sample, one thread: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in breakdown.items()))
    with tempfile.TemporaryDirectory(prefix="iris_nb_bench_write_") as tmp:
        for workers in args.workers:
            row = timed_write(Path(tmp), args.n, grid, workers, args.chunk_size)
            results["runs"][f"workers={workers}"] = row
            print(f"workers={workers}: {args.n} samples in {row['seconds']:.1f} s -> total "
                  f"{row['total_samples_per_s']:.2f} samples/s; steady {row['steady_samples_per_s']:.2f} samples/s "
                  f"after the first chunk ({row['first_chunk_after_s']:.1f} s)")
    results["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
