"""Gas-model speed: the numpy ``make_cmz`` (baseline) against the batched torch ``CMZModel``.

Both draw the same seeds (identical parameters and clouds) on the same grid in the same
process with the same number of threads; the runs alternate (baseline, new, baseline, ...)
so that a change in the machine's load hits both, and the median of ``--repeats`` rounds is
reported as fields/s (wall clock) and fields per CPU second (which a busy machine disturbs
less), with the load average before and after.

    python benchmarks/bench_gas.py                                   # SMALL, CPU, all cores
    python benchmarks/bench_gas.py --json benchmarks/results/gas_cpu.json
    python benchmarks/bench_gas.py --grid sedigism --device cuda --batch 8 --baseline-fields 1
    python benchmarks/bench_gas.py --observe --json benchmarks/results/pairs_cpu.json

``--observe`` times pairs instead of fields: each field is also observed with the default
escape-probability ``LineObserver`` (13CO 2-1) on the same device and reduced to a PV image
(the numpy path as ``GasModelDataset`` feeds on-the-fly training: ``make_cmz``, then
``field_tensors``; the torch path as ``FieldStream`` does).

On CUDA the torch model's time includes a synchronisation at the end of each batch, and the
peak GPU memory of a batch is reported; the baseline always runs on the CPU (it is numpy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from iris_nb.grids import get_grid
from iris_nb.sim.cmz import make_cmz
from iris_nb.sim.cmz_model import CMZModel
from iris_nb.sim.fields import field_tensors
from iris_nb.sim.observers import LineObserver


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start):
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16, help="fields per CMZModel.sample call")
    parser.add_argument("--baseline-fields", type=int, default=16, help="make_cmz fields per round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--observe", action="store_true", help="time draw + observe (pairs) instead of fields")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = get_grid(args.grid)
    device = torch.device(args.device)
    model = CMZModel(grid)
    load_before = os.getloadavg()[0]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), "
          f"device {device}, grid {grid.name} {tuple(grid.shape[d] for d in ('distance', 'lon', 'lat'))}, "
          f"load average {load_before:.2f}")

    observer = LineObserver(grid).to(device) if args.observe else None

    def baseline(seed):
        field = make_cmz(grid, seed=seed)
        if observer is not None:
            with torch.no_grad():
                observer(field_tensors(field, device=device)).mean(dim=2)

    def batched(seeds):
        fields = model.sample(seeds, device=device)
        if observer is not None:
            with torch.no_grad():
                observer(fields).mean(dim=2)

    baseline(10**6)  # warm both (imports, FFT plans, caches, the excitation table)
    batched([10**6])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base, new = [], []
    seed = 0
    for _ in range(args.repeats):
        start = _clock()
        for i in range(args.baseline_fields):
            baseline(seed + i)
        wall, cpu = _since(start)
        base.append((args.baseline_fields / wall, args.baseline_fields / cpu))
        start = _clock()
        batched(list(range(seed, seed + args.batch)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = _since(start)
        new.append((args.batch / wall, args.batch / cpu))
        seed += max(args.batch, args.baseline_fields)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    result = {
        "what": "pairs (draw + LineObserver + latitude mean)" if args.observe else "fields",
        "grid": grid.name, "device": str(device), "threads": args.threads, "batch": args.batch,
        "repeats": args.repeats, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
        "numpy_make_cmz_fields_per_s": statistics.median(r[0] for r in base),
        "numpy_make_cmz_fields_per_cpu_s": statistics.median(r[1] for r in base),
        "torch_cmz_model_fields_per_s": statistics.median(r[0] for r in new),
        "torch_cmz_model_fields_per_cpu_s": statistics.median(r[1] for r in new),
        "peak_gpu_memory_bytes": peak,
    }
    result["speedup_wall"] = result["torch_cmz_model_fields_per_s"] / result["numpy_make_cmz_fields_per_s"]
    result["speedup_cpu"] = result["torch_cmz_model_fields_per_cpu_s"] / result["numpy_make_cmz_fields_per_cpu_s"]
    what = "pairs" if args.observe else "fields"
    print(f"numpy make_cmz : {result['numpy_make_cmz_fields_per_s']:8.2f} {what}/s "
          f"({result['numpy_make_cmz_fields_per_cpu_s']:.2f} per CPU s)")
    print(f"torch CMZModel : {result['torch_cmz_model_fields_per_s']:8.2f} {what}/s "
          f"({result['torch_cmz_model_fields_per_cpu_s']:.2f} per CPU s), batch {args.batch}")
    print(f"speed-up       : {result['speedup_wall']:.2f}x wall, {result['speedup_cpu']:.2f}x per CPU second; "
          f"load average after {result['load_average_after']:.2f}")
    if peak is not None:
        print(f"peak GPU memory: {peak / 2**30:.2f} GiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
