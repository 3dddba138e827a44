"""Peak memory of ``revert`` on a paper-sized cube, naive path versus iris_nb's.

Builds a 512 lon x 128 lat x 512 velocity float32 cube (128 MiB) already on the SEDIGISM
grid and reverts it with a SEDIGISM :class:`~iris_nb.model.Reverter` (random weights) two
ways in the same process:

* **naive**: ``xarray.interp`` onto the grid centres (float64), ``mean(skipna=True)`` over
  latitude, then the network;
* **iris_nb**: :func:`iris_nb.reversion.revert` (identity axes detected and sliced, float32
  kept, latitude reduced slab by slab).

For each it prints the peak resident-memory increase over the memory in use before the
call, and that increase in units of the cube's own size ("cube copies"), for the whole
reversion and for the cube-touching part alone (standardise + regrid + reduce).  Peaks
come from the kernel's ``VmHWM`` (reset through ``/proc/self/clear_refs`` where allowed)
and from a background thread sampling ``VmRSS`` every millisecond; the numpy-only peak
from :mod:`tracemalloc` is printed too.

Run: ``python benchmarks/bench_revert_memory.py`` (about half a minute on 2 CPU cores).
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import numpy as np
import torch
import xarray as xr

from iris_nb.cube import reduce_cube, standardize_cube
from iris_nb.grids import SEDIGISM
from iris_nb.model import Reverter
from iris_nb.regrid import regrid_cube
from iris_nb.reversion import revert

MIB = 2.0**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakRSS:
    """Peak resident memory (bytes) while the ``with`` block runs, above its start."""

    def __enter__(self):
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.start = _status_kib("VmRSS") * 1024
        self.sampled = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def _sample(self) -> None:
        while self.running:
            self.sampled = max(self.sampled, _status_kib("VmRSS") * 1024)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self.numpy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.running = False
        self.thread.join()
        hwm = _status_kib("VmHWM") * 1024 if self.hwm_reset else 0
        self.peak = max(self.sampled, hwm) - self.start


def make_cube(grid=SEDIGISM, seed=0) -> xr.DataArray:
    """A (lon, lat, velocity) float32 cube on ``grid``'s pixels, K, a few NaN pixels."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(grid.ppv_shape, dtype=np.float32)
    data[100:110, 10, 200:210] = np.nan
    coords = {name: grid.coord(name) for name in ("lon", "lat", "velocity")}
    return xr.DataArray(data, dims=("lon", "lat", "velocity"), coords=coords, attrs={"units": "K"})


def naive_pv(cube: xr.DataArray, grid=SEDIGISM) -> np.ndarray:
    """The straightforward preprocessing: interp onto the grid centres, then nanmean."""
    on_grid = cube.astype(np.float64).interp(
        lon=grid.lon.centers(), lat=grid.lat.centers(), velocity=grid.velocity.centers()
    )
    return on_grid.mean("lat", skipna=True).fillna(0.0).values


def naive_revert(cube: xr.DataArray, model: Reverter) -> np.ndarray:
    pv = torch.as_tensor(naive_pv(cube, model.grid), dtype=torch.float32)[None, None]
    model.eval()
    with torch.inference_mode():
        return model(pv, reduce=False)[0, 0].numpy()


def ours_pv(cube: xr.DataArray, grid=SEDIGISM) -> np.ndarray:
    return reduce_cube(regrid_cube(standardize_cube(cube, grid), grid), "mean").values


def report(label: str, meter: PeakRSS, seconds: float, cube_bytes: int) -> None:
    print(f"  {label:<28s} peak RSS +{meter.peak / MIB:7.1f} MiB = {meter.peak / cube_bytes:5.2f} cube copies"
          f"   (numpy peak {meter.numpy_peak / MIB:7.1f} MiB, {seconds:5.1f} s)")


def main() -> None:
    torch.manual_seed(0)
    cube = make_cube()
    cube_bytes = cube.nbytes
    print(f"cube {dict(cube.sizes)} {cube.dtype}: {cube_bytes / MIB:.0f} MiB; device cpu, "
          f"{torch.get_num_threads()} torch threads")
    model = Reverter(grid=SEDIGISM)
    model.eval()
    with torch.inference_mode():  # warm-up, so one-off start-up costs are not measured
        model(torch.zeros((1, 1) + SEDIGISM.pv_shape), reduce=False)

    results = {}
    for label, function in (("naive preprocessing", naive_pv), ("iris_nb preprocessing", ours_pv)):
        start = time.perf_counter()
        with PeakRSS() as meter:
            results[label] = function(cube)
        report(label, meter, time.perf_counter() - start, cube_bytes)
    for label, function in (("naive revert", lambda c: naive_revert(c, model)),
                            ("iris_nb revert", lambda c: revert(c, model, device="cpu").values)):
        start = time.perf_counter()
        with PeakRSS() as meter:
            results[label] = function(cube)
        report(label, meter, time.perf_counter() - start, cube_bytes)
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    print(f"(the revert figures include the network: {model_mib:.0f} MiB of weights, a faster inference "
          "copy of them and the activations)")
    gap = np.abs(results["naive preprocessing"] - results["iris_nb preprocessing"]).max()
    print(f"max |naive - iris_nb| PV difference: {gap:.2e} K (NaN pixels: interp spreads them, we drop them)")


if __name__ == "__main__":
    main()
