"""The one cube maker of the tests: small ``(lon, lat, velocity)`` DataArrays in any layout.

``from cubes import make_cube`` (``pyproject.toml`` puts ``tests/`` on the path).  FITS files
are made by :mod:`fitsmaker`.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import xarray as xr

from iris_nb.conventions import CUBE_DIMS


def make_cube(data=None, lon=None, lat=None, velocity=None, *, grid=None, shape=(16, 8, 12), units="K",
              velocity_units="km/s", dims=CUBE_DIMS, attrs=None, seed=0) -> xr.DataArray:
    """A cube DataArray with ``attrs["units"]`` on the data and on every coordinate.

    Parameters
    ----------
    data:
        Values ``(lon, lat, velocity)``; a number fills the cube with it; ``None`` gives
        uniform random float32 values in [0, 1) drawn with ``seed``.
    lon, lat, velocity:
        1-D pixel centres in deg, deg and km/s (any order, descending allowed).  Defaults: the
        ``grid``'s centres when a grid is given, else ``linspace(-1.4, 1.4)``,
        ``linspace(-0.3, 0.3)``, ``linspace(-150, 150)`` with the sizes of ``data`` or ``shape``.
    velocity_units:
        Unit the velocity coordinate is written in (``"m/s"`` multiplies the km/s values by 1000).
    dims:
        Order of the returned dims, a permutation of ``("lon", "lat", "velocity")``.
    attrs:
        Further data attrs (``line``, ``rest_frequency``, ``source`` ...).

    Returns
    -------
    DataArray with ``dims``, data in ``units``, coords in deg, deg and ``velocity_units``.
    """
    if data is not None and np.ndim(data) == 3:
        shape = np.shape(data)
    defaults = {"lon": (-1.4, 1.4), "lat": (-0.3, 0.3), "velocity": (-150.0, 150.0)}
    axes = {}
    for size, (name, given) in zip(shape, (("lon", lon), ("lat", lat), ("velocity", velocity))):
        if given is None:
            given = getattr(grid, name).centers() if grid is not None else np.linspace(*defaults[name], size)
        axes[name] = np.asarray(given, dtype=float)
    full_shape = tuple(axes[name].size for name in CUBE_DIMS)
    if data is None:
        data = np.random.default_rng(seed).random(full_shape).astype(np.float32)
    elif np.ndim(data) == 0:
        data = np.full(full_shape, data)
    speed = (axes["velocity"] * u.km / u.s).to_value(velocity_units)
    coords = {
        "lon": ("lon", axes["lon"], {"units": "deg"}),
        "lat": ("lat", axes["lat"], {"units": "deg"}),
        "velocity": ("velocity", speed, {"units": velocity_units}),
    }
    cube = xr.DataArray(data, dims=CUBE_DIMS, coords=coords, attrs={"units": units, **(attrs or {})})
    return cube.transpose(*dims) if tuple(dims) != CUBE_DIMS else cube
