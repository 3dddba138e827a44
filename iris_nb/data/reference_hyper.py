"""The ``hyper.json`` of a reference IRIS dataset: its grid, its unit factors, its H2 fraction,
and the resampling of its ``linspace`` samples onto iris_nb pixel centres.

The conventions behind each function are set out in :mod:`iris_nb.data.reference`, which
reads the datasets with them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from ..grids import SEDIGISM, Axis, Grid

__all__ = ["REFERENCE_MOLAR_MASSES", "load_json", "hyper_value", "grid_from_hyper", "resample_to_pixel_centres",
           "h2_mass_fraction", "iris_to_si"]

REFERENCE_MOLAR_MASSES = {"mw_H2": 2.01568, "mw_H": 1.00784, "mw_He": 4.002602, "abundance_He": 0.1}
"""Defaults of the reference's ``ObserverHyper`` (g/mol; He nuclei per H nucleus)."""


def load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{str(path.parent)!r} is not a reference IRIS dataset: {path.name} is missing "
                         f"({what}); give the folder that holds hyper.json and attributes.json")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None


def hyper_value(section: dict, group: str, key: str):
    value = section.get(key)
    if value is None:
        raise ValueError(f"hyper.json has no {group}.{key}; the reference dataset is incomplete "
                         "(or was never unit-normalised); pass grid= or fix hyper.json")
    return value


def _sampled_axis(low: float, high: float, steps: int, sampling: str, keep: tuple[int, int] | None = None,
                  negate: bool = False) -> Axis:
    """The iris_nb axis of samples ``keep[0]:keep[1]`` of ``linspace(low, high, steps)``."""
    first, last = keep if keep is not None else (0, steps)
    n = last - first
    if sampling == "relabel" or steps < 2:
        width = (high - low) / steps
        axis = Axis(low + first * width, high - (steps - last) * width, n)
    else:
        spacing = (high - low) / (steps - 1)
        a, b = low + first * spacing, high - (steps - last) * spacing  # first and last kept sample
        if sampling == "exact" or n < 2:
            axis = Axis(a - 0.5 * spacing, b + 0.5 * spacing, n)
        else:
            axis = Axis(a, b, n)
    return Axis(-axis.stop, -axis.start, axis.steps) if negate else axis


def grid_from_hyper(hyper: dict, flip_velocity: bool, mirror_lon: bool, sampling: str) -> Grid:
    coords, cube = hyper.get("coordinate_hyper", {}), hyper.get("cube_hyper", {})

    def axis(section: dict, group: str, name: str, **kwargs) -> Axis:
        return _sampled_axis(float(hyper_value(section, group, f"{name}_min")),
                             float(hyper_value(section, group, f"{name}_max")),
                             int(hyper_value(section, group, f"{name}_steps")), sampling, **kwargs)

    r_steps = int(hyper_value(coords, "coordinate_hyper", "r_steps"))
    keep = (int(coords.get("r_crop_min_index") or 0), int(coords.get("r_crop_max_index") or r_steps))
    beam = hyper.get("observer_hyper", {}).get("out_blur_fwhm")
    return SEDIGISM.replace(
        distance=axis(coords, "coordinate_hyper", "r", keep=keep),
        lon=axis(coords, "coordinate_hyper", "lon", negate=mirror_lon), lat=axis(coords, "coordinate_hyper", "lat"),
        velocity=axis(cube, "cube_hyper", "v", negate=flip_velocity),
        observer_distance=float(coords.get("observer_radius") or SEDIGISM.observer_distance),
        beam_fwhm=float(beam) if beam else 0.0, name="IRIS reference")


@functools.lru_cache(maxsize=16)
def _resample_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower sample index and upper weight taking ``n`` linspace samples to ``n`` pixel centres."""
    position = (np.arange(n) + 0.5) * (n - 1) / n  # pixel centre k in units of the sample spacing
    low = np.clip(np.floor(position), 0, max(n - 2, 0)).astype(np.int64)
    return low, (position - low).astype(np.float32)


def resample_to_pixel_centres(array: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from samples at ``linspace(a, b, n)`` to the pixel
    centres of the window ``[a, b]`` cut into ``n`` pixels (same shape)."""
    n = array.shape[axis]
    if n < 2:
        return array
    low, weight = _resample_weights(n)
    shape = [1] * array.ndim
    shape[axis] = n
    weight = weight.reshape(shape)
    high = np.take(array, np.minimum(low + 1, n - 1), axis=axis)
    return np.take(array, low, axis=axis) * (1.0 - weight) + high * weight


def h2_mass_fraction(hyper: dict) -> float:
    """H2 mass over total gas mass of every cell of a reference dataset, or a clear error."""
    dataset = hyper.get("dataset_hyper", {})
    if dataset.get("use_AREPO_abundances", True) is not False:
        raise ValueError("this reference dataset's observations bin total gas, and its H2 abundances came cell by "
                         "cell from the AREPO snapshots (dataset_hyper.use_AREPO_abundances is true or missing "
                         "in hyper.json), so no single factor turns them into H2; read it with gas=None (total "
                         "gas; pair it with SimpleObserver(grid, gas='total') data) or observe the snapshots "
                         "again with iris_nb (from_arepo and SimpleObserver(grid, gas='h2'))")
    observer = hyper.get("observer_hyper", {})
    mw = {key: float(observer[key]) if observer.get(key) is not None else default
          for key, default in REFERENCE_MOLAR_MASSES.items()}
    return 0.5 * mw["mw_H2"] / (mw["mw_H"] + mw["abundance_He"] * mw["mw_He"])


def iris_to_si(hyper: dict, observable: str) -> tuple[float, float]:
    """SI value per IRIS value of the observation and of the target."""
    units = hyper.get("dataset_hyper", {})
    mass = float(hyper_value(units, "dataset_hyper", "_mass_iris_per_SI"))
    length = float(hyper_value(units, "dataset_hyper", "_length_iris_per_SI"))
    density = mass / length**3
    if observable == "brightness":
        observation = 1.0 / float(hyper_value(units, "dataset_hyper", "_temperature_iris_per_SI"))
    else:
        observation = 1.0 / (density * float(hyper_value(units, "dataset_hyper", "_time_iris_per_SI")))
    return observation, 1.0 / density
