"""Small grids and a cheap gas model for the dataset-store tests.

``cloud_model`` is a deliberately simple stand-in (a few Gaussian clouds with random
velocities) used where a test checks store mechanics rather than gas physics; the tests of
the real pipeline use :func:`iris_nb.sim.cmz.make_cmz`.
"""

from __future__ import annotations

import numpy as np

from iris_nb.grids import SMALL
from iris_nb.sim.fields import field_from_arrays

TINY = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     lat=SMALL.lat.with_steps(8), velocity=SMALL.velocity.with_steps(64), name="TINY")
"""64 distance x 64 lon x 8 lat x 64 velocity over the SEDIGISM window."""


def cloud_model(grid, seed=0, n_clouds=4, scale=1.0):
    """A field with ``n_clouds`` Gaussian clouds (random place, size, density and velocity)."""
    rng = np.random.default_rng(seed)
    d = grid.distance.centers()[:, None, None]
    lon = grid.lon.centers()[None, :, None]
    lat = grid.lat.centers()[None, None, :]
    density = np.zeros((grid.distance.steps, grid.lon.steps, grid.lat.steps), dtype=np.float64)
    velocity = np.zeros_like(density)
    peak = rng.uniform(5.0, 50.0, n_clouds) * scale
    for k in range(n_clouds):
        d0 = rng.uniform(grid.distance.start, grid.distance.stop)
        l0 = rng.uniform(grid.lon.start, grid.lon.stop)
        width = rng.uniform(10.0, 40.0)
        blob = peak[k] * np.exp(-((d - d0) / width) ** 2 - ((lon - l0) / 0.2) ** 2 - (lat / 0.1) ** 2)
        density += blob
        velocity += blob * rng.uniform(-150.0, 150.0)
    velocity = np.where(density > 0, velocity / np.maximum(density, 1e-30), 0.0)
    return field_from_arrays(grid, density=density, velocity_los=velocity, seed=int(seed % 2**31),
                             model="cloud_model",
                             parameters={"n_clouds": n_clouds, "scale": scale, "peak_mean": float(peak.mean()),
                                         "shape": {"width_deg": 0.2}, "name": "clouds"})


def slow_cmz(grid, seed=0, **params):
    """:func:`iris_nb.sim.cmz.make_cmz` that takes 0.25 s longer (to kill a writer part-way)."""
    import time

    from iris_nb.sim.cmz import make_cmz

    time.sleep(0.25)
    return make_cmz(grid, seed=seed, **params)


class FailingModel:
    """make_cmz, except that it raises for one gas seed (a writer dying at a known sample)."""

    def __init__(self, bad_seed):
        self.bad_seed = bad_seed

    def __call__(self, grid, seed=0, **params):
        from iris_nb.sim.cmz import make_cmz

        if seed == self.bad_seed:
            raise RuntimeError(f"gas model failed for seed {seed}")
        return make_cmz(grid, seed=seed, **params)
