"""Observer speed and memory: SimpleObserver and LineObserver, windowed channels vs full evaluation.

For each grid it observes a ``make_cmz`` field (a random field when the gas model is missing)
with

    simple            SimpleObserver (velocity-resolved H2 column, tent weights)
    line full         LineObserver(excitation="lte", channel_window=None): every channel for every
                      cell (baseline of the channel windows)
    line windowed     LineObserver(excitation="lte"): only channels within 5 Doppler parameters
    line escape       LineObserver() (non-LTE escape-probability excitation through the cached
                      excitation table, the default), windowed; its time is also given as a ratio
                      to "line windowed" (the LTE path)
    line dust+sub     LineObserver(dust=True, subthermal=True), windowed

and prints voxels/s (distance x lon x lat cells per second; median of --repeats runs, the
baseline once on the big grid; also per CPU second, which a busy machine disturbs less), the
time per full sample, the peak memory and the largest
deviation of the windowed result from the full evaluation (relative to the cube's maximum).
SMALL is timed whole.  SEDIGISM (512 x 512 x 128 cells) is timed on a strip of
``--sedigism-columns`` longitude columns (all latitudes and distances, the same physics per ray)
and extrapolated to the whole sample; ``--full-sample`` also observes one whole SEDIGISM sample
with the windowed LineObserver.

Memory on CPU: each case runs in a fresh process; the figure is the growth of its peak resident
memory (VmHWM, reset after loading the input field) over what it held at that point.  On CUDA: torch.cuda.max_memory_allocated
during the call.

    python benchmarks/bench_observers.py                      # CPU, 1 thread
    python benchmarks/bench_observers.py --threads 2 --json benchmarks/results/observers_cpu.json
    python benchmarks/bench_observers.py --device cuda --full-sample
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from iris_nb.grids import SEDIGISM, SMALL, Axis
from iris_nb.sim.fields import field_from_arrays, field_tensors
from iris_nb.sim.excitation_table import ExcitationTable
from iris_nb.sim.observers import LineObserver, SimpleObserver
from iris_nb.sim.radiative import T_CMB

CASES = {
    "simple": lambda g: SimpleObserver(g),
    "line full": lambda g: LineObserver(g, excitation="lte", channel_window=None),
    "line windowed": lambda g: LineObserver(g, excitation="lte"),
    "line escape": lambda g: LineObserver(g),
    "line dust+sub": lambda g: LineObserver(g, dust=True, subthermal=True),
}


def make_field(grid, seed=0):
    """A make_cmz field on ``grid`` (or a log-normal random field if the gas model is absent)."""
    try:
        from iris_nb.sim.cmz import make_cmz
    except ImportError:
        rng = np.random.default_rng(seed)
        shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
        return field_from_arrays(grid, density=rng.lognormal(0, 2, shape), velocity_los=rng.normal(0, 60, shape),
                                 temperature=rng.uniform(20, 100, shape), temperature_dust=20.0)
    return make_cmz(grid, seed=seed)


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Start a new peak-RSS (VmHWM) measurement (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # then the peak includes what happened before (e.g. loading the field)


def _run_case(case, grid, tensors, repeats, device):
    """Time one observer; returns (wall, CPU) seconds per run, output cube (CPU) and peak memory bytes."""
    observer = CASES[case](grid)
    tensors = {k: v.to(device) for k, v in tensors.items()}
    cuda = torch.device(device).type == "cuda"
    _reset_peak_rss()
    base = _status_bytes("VmRSS")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            cube = observer(tensors)
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start, time.process_time() - cpu_start))
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_bytes("VmHWM") - base
    return times, cube.cpu(), peak


def _child(args):
    case, grid_json, path, repeats, threads, out_path = args
    torch.set_num_threads(threads)
    from iris_nb.grids import Grid
    tensors = torch.load(path)
    times, cube, peak = _run_case(case, Grid.from_json(grid_json), tensors, repeats, "cpu")
    torch.save({"times": times, "cube": cube, "peak": peak}, out_path)


def run_case(case, grid, tensors, repeats, device, threads):
    if torch.device(device).type == "cuda":
        return _run_case(case, grid, tensors, repeats, device)
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp, "field.pt"), Path(tmp, "out.pt")
        torch.save(tensors, path)
        proc = mp.get_context("spawn").Process(target=_child,
                                               args=((case, grid.to_json(), path, repeats, threads, out),))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"benchmark case {case!r} failed in its worker (exit code {proc.exitcode})")
        res = torch.load(out)
    return res["times"], res["cube"], res["peak"]


def strip_of(grid, columns):
    """The first ``columns`` lon pixels at l >= 0 of ``grid`` (all distances and latitudes)."""
    first = int(np.searchsorted(grid.lon.edges(), 0.0))
    start = grid.lon.edges()[first]
    return grid.replace(lon=Axis(start, start + columns * grid.lon.step, columns),
                        name=f"{grid.name} strip of {columns} lon columns")


def bench_grid(label, grid, full_grid, args, rows):
    field = make_field(grid)
    tensors = field_tensors(field)
    voxels = grid.distance.steps * grid.lon.steps * grid.lat.steps
    per_sample = full_grid.distance.steps * full_grid.lon.steps * full_grid.lat.steps
    print(f"\n{label}: timed {grid!r}\n  {voxels:,} voxels timed, {per_sample:,} per sample")
    cubes = {}
    for case in CASES:
        repeats = 1 if (case == "line full" and voxels > 10**6) else args.repeats
        times, cube, peak = run_case(case, grid, tensors, repeats, args.device, args.threads)
        cubes[case] = cube
        seconds = statistics.median(t[0] for t in times)
        cpu_seconds = statistics.median(t[1] for t in times)
        row = {"grid": label, "case": case, "device": args.device, "threads": args.threads,
               "voxels_timed": voxels, "seconds": seconds, "cpu_seconds": cpu_seconds,
               "voxels_per_s": voxels / seconds, "voxels_per_cpu_s": voxels / cpu_seconds,
               "seconds_per_sample": seconds * per_sample / voxels, "peak_memory_MiB": peak / 2**20,
               "repeats": repeats}
        if case == "line windowed":
            ref = cubes["line full"]
            row["max_rel_dev_from_full"] = float((cube - ref).abs().max() / ref.abs().max())
            key = "seconds" if torch.device(args.device).type == "cuda" else "cpu_seconds"
            row["speedup_vs_full"] = rows[-1][key] / row[key]  # CPU time: robust to a busy machine
        if case == "line escape":
            key = "seconds" if torch.device(args.device).type == "cuda" else "cpu_seconds"
            lte = next(r for r in rows if r["grid"] == label and r["case"] == "line windowed")
            row["time_vs_lte"] = row[key] / lte[key]
            row["integrated_vs_lte"] = float(cube.sum() / cubes["line windowed"].sum())
        rows.append(row)
        extra = ""
        if "speedup_vs_full" in row:
            extra = f"  speed-up {row['speedup_vs_full']:.1f}x, max dev {row['max_rel_dev_from_full']:.1e}"
        if "time_vs_lte" in row:
            extra = (f"  time {row['time_vs_lte']:.2f}x the LTE path, "
                     f"integrated intensity {row['integrated_vs_lte']:.2f}x LTE's")
        print(f"  {case:14s} {row['voxels_per_s'] / 1e6:8.3f} Mvox/s ({row['voxels_per_cpu_s'] / 1e6:7.3f} per CPU s)"
              f"  {row['seconds_per_sample']:9.3f} s/sample  peak {row['peak_memory_MiB']:8.1f} MiB{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sedigism-columns", type=int, default=64,
                        help="lon columns of the timed SEDIGISM strip (64 = 1/8 of a sample)")
    parser.add_argument("--full-sample", action="store_true", help="also observe one whole SEDIGISM sample")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but torch sees no CUDA device")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
          f"{args.threads} CPU thread(s), load average {os.getloadavg()[0]:.1f}")
    ExcitationTable.get("13CO", "lvg", None, T_CMB)  # build or load once; the workers load it from the cache
    rows = []
    bench_grid("SMALL", SMALL, SMALL, args, rows)
    bench_grid("SEDIGISM", strip_of(SEDIGISM, args.sedigism_columns), SEDIGISM, args, rows)
    if args.full_sample:
        tensors = field_tensors(make_field(SEDIGISM))
        field_mib = sum(t.nbytes for t in tensors.values()) / 2**20
        voxels = 512 * 512 * 128
        for case in ("simple", "line windowed", "line escape"):
            times, _, peak = run_case(case, SEDIGISM, tensors, 1, args.device, args.threads)
            (wall, cpu), = times
            rows.append({"grid": "SEDIGISM whole sample", "case": case, "device": args.device,
                         "threads": args.threads, "voxels_timed": voxels, "seconds": wall, "cpu_seconds": cpu,
                         "voxels_per_s": voxels / wall, "voxels_per_cpu_s": voxels / cpu,
                         "seconds_per_sample": wall, "peak_memory_MiB": peak / 2**20, "field_MiB": field_mib,
                         "repeats": 1})
            print(f"\nSEDIGISM whole sample, {case}: {wall:.1f} s ({cpu:.1f} CPU s), {voxels / wall / 1e6:.3f} Mvox/s, "
                  f"peak {peak / 2**20:.0f} MiB above the {field_mib:.0f} MiB input field")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load_average": os.getloadavg()[0], "results": rows}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
