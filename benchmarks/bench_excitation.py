"""Excitation table: time to build it, time to load it from the disk cache, and its accuracy.

Targets (issue 10): the 13CO table builds in under 10 s on 2 CPU cores and a cached table
loads in under 0.5 s.  Each step runs in a fresh process with an empty (build) or filled
(load) cache folder, so nothing is shared through memory:

    build    ExcitationTable.get(...) with an empty cache: solve_excitation on the whole grid
             (33 x 24 x 49 = 38,808 statistical-equilibrium problems, 41 levels) and the atomic write
    load     ExcitationTable.get(...) in a new process with the file in the cache

It also compares the table's trilinear look-up with direct solve_excitation calls at 2000
random points inside the region the observer reaches (n_H2 1e1-1e7 cm-3, T_kin 10-500 K,
N/fwhm up to 1e14 n_H2: x_tracer <= 6e-6 over at most 5 pc per km/s) and prints the
relative error of the two quantities the transfer uses: the emissivity (upper-level
population) and the absorption (x_l g_u/g_l - x_u) of 13CO 2-1.

Last, it observes ``make_cmz(SMALL, seed=3)`` in 13CO(2-1) in LTE, with escape-probability
excitation (the default) and with the trapping length near zero (optically thin populations,
as a solver without trapping gives) and prints the cube peak, the latitude-mean PV peak and
the integrated intensity relative to LTE.

    python benchmarks/bench_excitation.py --threads 2 --json benchmarks/results/excitation_cpu.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timed_get(cache: str, threads: int, queue) -> None:
    os.environ["IRIS_NB_CACHE"] = cache
    torch.set_num_threads(threads)
    from iris_nb.sim.excitation_table import ExcitationTable
    from iris_nb.sim.radiative import T_CMB
    start = time.perf_counter()
    ExcitationTable.get("13CO", "lvg", None, T_CMB)
    queue.put(time.perf_counter() - start)


def timed_in_child(cache: str, threads: int) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_timed_get, args=(cache, threads, queue))
    proc.start()
    seconds = queue.get()
    proc.join()
    return seconds


def accuracy(cache: str) -> dict:
    os.environ["IRIS_NB_CACHE"] = cache
    from iris_nb.sim.excitation import solve_excitation
    from iris_nb.sim.excitation_table import ExcitationTable
    from iris_nb.sim.radiative import T_CMB
    table = ExcitationTable.get("13CO", "lvg", None, T_CMB)
    g = torch.Generator().manual_seed(0)
    n = 10 ** (1 + 6 * torch.rand(2000, generator=g, dtype=torch.float64))
    t = 10 ** (1 + 1.7 * torch.rand(2000, generator=g, dtype=torch.float64))
    cpf = n * 10 ** (8 + 6 * torch.rand(2000, generator=g, dtype=torch.float64))
    exact = solve_excitation("13CO", n, t, cpf, 1.0, geometry="lvg", t_bg=T_CMB)
    up, low = 2, 1
    looked = table.lookup([up, low], n, t, cpf)
    x_u, x_l = exact.populations[:, up], exact.populations[:, low]
    emis = (looked[0] / x_u - 1).abs().numpy()
    absorb = ((looked[1] * 5 / 3 - looked[0]) - (x_l * 5 / 3 - x_u)).abs() / (x_l * 5 / 3)
    absorb = absorb.numpy()
    return {"emissivity_rel_err_median": float(np.median(emis)), "emissivity_rel_err_p99": float(np.percentile(emis, 99)),
            "emissivity_rel_err_max": float(emis.max()),
            "absorption_rel_err_median": float(np.median(absorb)), "absorption_rel_err_p99": float(np.percentile(absorb, 99)),
            "absorption_rel_err_max": float(absorb.max())}


def brightness(cache: str) -> dict:
    os.environ["IRIS_NB_CACHE"] = cache
    from iris_nb.grids import SMALL
    from iris_nb.sim import LineObserver, make_cmz
    field = make_cmz(SMALL, seed=3)
    out = {}
    for label, kwargs in (("lte", {"excitation": "lte"}), ("escape", {}),
                          ("escape, no trapping", {"trapping_length": 1e-6})):
        cube = LineObserver(SMALL, **kwargs).observe(field)
        out[label] = {"cube_peak_K": float(cube.max()), "pv_peak_K": float(cube.mean("lat").max()),
                      "integrated": float(cube.sum())}
    for row in out.values():
        row["integrated_vs_lte"] = row["integrated"] / out["lte"]["integrated"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as cache:
        build = timed_in_child(cache, args.threads)
        load = timed_in_child(cache, args.threads)
        files = list(Path(cache, "excitation").glob("*.pt"))
        size = files[0].stat().st_size / 2**20
        acc = accuracy(cache)
        bright = brightness(cache)
    print(f"13CO table build (empty cache)  {build:6.2f} s   (target < 10 s)")
    print(f"13CO table load (cached, {size:.1f} MiB) {load:6.3f} s   (target < 0.5 s)")
    print("look-up vs direct solve, 2000 random points in the observer's range, 13CO 2-1:")
    print(f"  emissivity x_u:   median {acc['emissivity_rel_err_median']:.1e}, 99% {acc['emissivity_rel_err_p99']:.1e}, "
          f"max {acc['emissivity_rel_err_max']:.1e}")
    print(f"  absorption:       median {acc['absorption_rel_err_median']:.1e}, 99% {acc['absorption_rel_err_p99']:.1e}, "
          f"max {acc['absorption_rel_err_max']:.1e}")
    print("make_cmz(SMALL, seed=3) in 13CO(2-1):")
    for label, row in bright.items():
        print(f"  {label:20s} cube peak {row['cube_peak_K']:5.1f} K, PV peak {row['pv_peak_K']:5.2f} K, "
              f"integrated {row['integrated_vs_lte']:.3f} x LTE")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load_average": os.getloadavg()[0], "threads": args.threads,
                                         "build_seconds": build, "load_seconds": load, "file_MiB": size,
                                         **acc, "make_cmz_small_seed3": bright}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
