"""Headless quickstart: make a small synthetic CMZ cube, revert it, write PNG figures.

Run as ``iris-nb quickstart`` or ``python -m iris_nb``.  The cube comes from the package's
own simulator (a parametric CMZ observed in 13CO(2-1) on the SMALL grid), so a new user sees
the whole data flow (PPV cube -> PV image -> top-down map) in seconds, on a laptop, with no
data download.  :func:`toy_cmz_cube` is a cheaper stand-in (Gaussian clouds on a ring, optically
thin) used by widget previews and tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from .conventions import CUBE_DIMS
from .grids import SMALL, Grid, galactocentric_xy

__all__ = ["toy_cmz_cube", "synthetic_cmz_cube", "run_quickstart"]


def toy_cmz_cube(grid: Grid = SMALL, seed: int = 0, n_clouds: int = 40, peak_temperature: float = 8.0):
    """A toy PPV cube and its true top-down density on ``grid``.

    Clouds sit on an eccentric ring (semi-axes 100 and 60 pc, random orientation) and move
    on it at 80-110 km/s; their line-of-sight velocity includes the observer's own circular
    motion (v_LSR convention, positive = receding), as
    :func:`iris_nb.sim.kinematics.line_of_sight_velocity` computes it for every simulator.

    Returns
    -------
    cube : DataArray (lon, lat, velocity), K
        Brightness temperature, with coords in deg, deg, km/s.
    truth : DataArray (distance, lon), Msun/pc3
        Latitude-averaged gas density of the same clouds.
    """
    from .sim.kinematics import line_of_sight_velocity

    rng = np.random.default_rng(seed)
    r0 = grid.observer_distance
    angle = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi, n_clouds)
    a, b = 100.0, 60.0
    ex, ey = a * np.cos(phase), b * np.sin(phase)
    x = ex * np.cos(angle) - ey * np.sin(angle)
    y = ex * np.sin(angle) + ey * np.cos(angle)
    speed = rng.uniform(80.0, 110.0, n_clouds)
    tx, ty = -a * np.sin(phase), b * np.cos(phase)  # tangent of the ellipse
    tx, ty = tx * np.cos(angle) - ty * np.sin(angle), tx * np.sin(angle) + ty * np.cos(angle)
    norm = np.hypot(tx, ty)
    vx, vy = speed * tx / norm, speed * ty / norm
    los_x, los_y = x, y + r0
    dist = np.hypot(los_x, los_y)
    lon_c = np.rad2deg(np.arctan2(los_x, los_y))
    lat_c = rng.normal(0.0, 0.05, n_clouds)
    v_los = line_of_sight_velocity(x, y, 0.0, vx, vy, 0.0, r0)  # clouds in the plane
    size_pc = rng.uniform(3.0, 8.0, n_clouds)
    size_deg = np.rad2deg(size_pc / dist)
    sigma_v = rng.uniform(5.0, 12.0, n_clouds)
    amplitude = peak_temperature * rng.uniform(0.3, 1.0, n_clouds)

    lon, lat, vel = grid.lon.centers(), grid.lat.centers(), grid.velocity.centers()
    cube = np.zeros(grid.ppv_shape, dtype=np.float32)
    distance = grid.distance.centers()
    truth = np.zeros(grid.top_down_shape, dtype=np.float32)
    gx, gy = galactocentric_xy(distance[:, None], lon[None, :], r0)
    for i in range(n_clouds):
        pl = np.exp(-0.5 * ((lon - lon_c[i]) / size_deg[i]) ** 2)
        pb = np.exp(-0.5 * ((lat - lat_c[i]) / size_deg[i]) ** 2)
        pv = np.exp(-0.5 * ((vel - v_los[i]) / sigma_v[i]) ** 2)
        cube += amplitude[i] * np.einsum("i,j,k->ijk", pl, pb, pv).astype(np.float32)
        blob = np.exp(-0.5 * ((gx - x[i]) ** 2 + (gy - y[i]) ** 2) / size_pc[i] ** 2)
        truth += (amplitude[i] * 10.0 * blob * pb.mean()).astype(np.float32)

    cube_da = xr.DataArray(
        cube,
        dims=CUBE_DIMS,
        coords={name: grid.coord(name) for name in CUBE_DIMS},
        attrs={"units": "K", "rest_frequency": grid.rest_frequency, "line": grid.line,
               "beam_fwhm": grid.beam_fwhm, "source": f"iris_nb toy CMZ (seed {seed})"},
    )
    truth_da = xr.DataArray(
        truth,
        dims=("distance", "lon"),
        coords={name: grid.coord(name) for name in ("distance", "lon")},
        attrs={"units": "solMass / pc3", "observer_distance": r0, "long_name": "true density"},
    )
    return cube_da, truth_da


def synthetic_cmz_cube(grid: Grid = SMALL, seed: int = 0, excitation: str = "escape", **params):
    """A realistic synthetic observation and its truth, from the package's own simulator.

    The gas is :func:`iris_nb.sim.make_cmz` (the default training family: x2 ring or stream
    across the bar, dust lanes, clouds, turbulence; ``params`` fix any of its parameters),
    observed in 13CO(2-1) by :class:`iris_nb.sim.LineObserver` (non-LTE excitation by
    default, radiative transfer and the beam), like the training data of the shipped
    ``cmz-small`` model.  No noise is added.

    Returns
    -------
    cube : DataArray (lon, lat, velocity), K
    truth : DataArray (distance, lon), Msun/pc3 (latitude-averaged H2 density)
    """
    from .sim import LineObserver, columnize, make_cmz

    field = make_cmz(grid, seed=seed, **params)
    cube = LineObserver(grid, excitation=excitation).observe(field)
    cube.attrs["source"] = f"iris_nb synthetic CMZ (make_cmz seed {seed}, LineObserver {excitation})"
    truth = columnize(field)
    truth.attrs.update(observer_distance=grid.observer_distance, long_name="true H2 density")
    return cube, truth


def _load_model(grid: Grid, seed: int):
    """The shipped pretrained model when there is one, else a random model (and say so)."""
    import torch

    from .model import Reverter
    from .model.pretrained import available, pretrained

    if "cmz-small" in available():
        return pretrained("cmz-small"), True
    torch.manual_seed(seed)
    return Reverter(grid=grid, provenance={"note": "randomly initialised, untrained"}), False


def run_quickstart(output: str | Path = "iris_nb_output", seed: int = 0, grid: Grid = SMALL) -> list[Path]:
    """Make a toy cube, revert it, write PNG figures into ``output``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import accessor  # noqa: F401  (registers .iris)
    from . import plot

    start = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    cube, truth = synthetic_cmz_cube(grid, seed=seed)
    model, trained = _load_model(grid, seed)
    if trained:
        tests = model.provenance.get("test_metrics", {})
        metrics = next((tests[k] for k in ("noise", "noise_1K", "noiseless") if k in tests), {})
        print(f"Using the pretrained model 'cmz-small' (test correlation {metrics.get('correlation', float('nan')):.2f}, "
              "see its provenance for how it was trained).")
    else:
        print(
            "NOTE: no trained model is available yet, so this quickstart uses a RANDOMLY "
            "INITIALISED Reverter: the top-down map shows the data flow, not a physical result."
        )
    top_down = cube.iris.revert(model, units="Msun/pc3")
    pv = cube.iris.reduce(model.reduction)

    paths = []
    fig = plot.side_by_side(pv, top_down)
    paths.append(out / "quickstart_pv_and_top_down.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    for kind in ("polar", "cartesian"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained", subplot_kw={"projection": "polar"} if kind == "polar" else {})
        plot.top_down(truth, kind=kind, ax=axes[0])
        axes[0].set_title("truth")
        plot.top_down(top_down, kind=kind, ax=axes[1])
        axes[1].set_title("reverted" + ("" if trained else " (untrained model)"))
        paths.append(out / f"quickstart_top_down_{kind}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    seconds = time.perf_counter() - start
    print(f"Reverted a {grid.name} cube {tuple(cube.shape)} (lon, lat, velocity) in {seconds:.1f} s.")
    for path in paths:
        print(f"wrote {path.resolve()}")
    return paths
