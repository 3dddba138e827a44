"""Small gas fields and dataset stores for training tests (64 x 64 x 8 x 64 grid, CPU-cheap)."""

from __future__ import annotations

import functools

import numpy as np

from iris_nb.data.store import write_dataset
from iris_nb.grids import SMALL
from iris_nb.sim.fields import field_from_arrays
from iris_nb.sim.observers import SimpleObserver

G64 = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                    lat=SMALL.lat.with_steps(8), velocity=SMALL.velocity.with_steps(64), name="G64")


def ring_field(grid, seed=0):
    """Gas on a ring segment at a random distance and velocity (Msun/pc3, km/s)."""
    rng = np.random.default_rng(seed)
    d = grid.distance.centers()[:, None, None]
    lon = grid.lon.centers()[None, :, None]
    density = rng.uniform(5, 50) * np.exp(-((d - rng.uniform(8150, 8400)) / 25) ** 2) * (np.abs(lon) < 1.0)
    velocity = rng.uniform(-120, 120) + 40.0 * lon + 0.0 * d
    return field_from_arrays(grid, density=density, velocity_los=velocity, seed=int(seed % 2**31), model="ring")


def clump_field(grid, seed=0, clumps=3, peak=(5, 50), depth_pc=30.0, lon_span=1.2, lon_width=0.25, model="blobs"):
    """``clumps`` Gaussian gas clumps at random places, each with its own velocity
    (peak densities in Msun/pc3, depth in pc, longitudes in deg, velocities within +-150 km/s)."""
    rng = np.random.default_rng(seed)
    d = grid.distance.centers()[:, None, None]
    lon = grid.lon.centers()[None, :, None]
    density = np.zeros((grid.distance.steps, grid.lon.steps, grid.lat.steps))
    momentum = np.zeros_like(density)
    for _ in range(clumps):
        clump = rng.uniform(*peak) * np.exp(-((d - rng.uniform(8100, 8450)) / depth_pc) ** 2
                                            - ((lon - rng.uniform(-lon_span, lon_span)) / lon_width) ** 2)
        density += clump
        momentum += clump * rng.uniform(-150, 150)
    velocity = np.where(density > 0, momentum / np.maximum(density, 1e-30), 0.0)
    return field_from_arrays(grid, density=density, velocity_los=velocity, seed=int(seed % 2**31), model=model)


arc_field = functools.partial(clump_field, clumps=2, peak=(10, 60), depth_pc=35.0, lon_span=1.0, lon_width=0.3,
                              model="arc")
"""Two clouds on an arc, each with its own velocity."""


def write_store(path, n: int, model=ring_field, grid=G64, **options) -> str:
    """A finished store of ``n`` SimpleObserver pairs of ``model`` fields at ``path``
    (``options``, e.g. ``seed``, go to :func:`~iris_nb.data.store.write_dataset`)."""
    write_dataset(path, n, grid, model=model, observer=SimpleObserver(grid), workers=0, progress=False, **options)
    return str(path)
