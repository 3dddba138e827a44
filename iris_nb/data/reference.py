"""Read datasets written by the reference IRIS code, and convert them to dataset stores.

Layout of a reference dataset folder (facts of the reference code; pairs are made by
observing AREPO snapshots):

* ``hyper.json``: the reference's hyperparameters, one JSON object per group
  (``coordinate_hyper``, ``cube_hyper``, ``dataset_hyper``, ``observer_hyper``, ...).
  Used here: ``coordinate_hyper.r_min/r_max/r_steps`` (heliocentric distance, pc, sampled
  at ``linspace(r_min, r_max, r_steps)``) and ``r_crop_min_index/r_crop_max_index`` (the
  rows kept in the top-down map), ``lon_min/lon_max/lon_steps``, ``lat_min/lat_max/lat_steps``
  (deg), ``observer_radius`` (pc); ``cube_hyper.v_min/v_max/v_steps`` (km/s) and
  ``reduction``; ``observer_hyper.out_blur_fwhm`` (beam, arcsec); the unit factors
  ``dataset_hyper._mass_iris_per_SI``, ``_length_iris_per_SI``, ``_time_iris_per_SI``,
  ``_temperature_iris_per_SI`` ("how many IRIS units make one SI unit").
* ``attributes.json``: ``{"cardinality": N, "index": [[target_file, observation_file], ...]}``
  with paths relative to the folder, e.g. ``"node_0/columnized_3.npy"``.
* ``node_*/columnized_{k}.npy``: top-down H2 mass density ``(1, distance, lon)``, float32,
  IRIS density units (mass / length**3 of the factors above).
* ``node_*/observed_{k}.npy``: the latitude-reduced observation ``(1, lon, velocity)``,
  float32, in IRIS temperature units (line observer) or IRIS velocity-resolved column
  units (mass / length**3 * time; the reference's "simple" observer).

Conventions that differ from this package: the reference measures line-of-sight velocity
positive *towards* the observer, the opposite of v_LSR; by default the velocity axis of
every observation is reversed (``flip_velocity=True``) so that items follow this package's
convention (the reference also ignores the observer's own motion, which cannot be undone
here).  Its axes are sampled at ``linspace(min, max, steps)``; here ``[min, max]`` is taken
as the pixel-edge window of each axis (a shift of at most half a pixel), so that the
SEDIGISM windows map onto :data:`iris_nb.grids.SEDIGISM`; pass ``grid=`` to override.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..grids import SEDIGISM, Axis, Grid
from ..units import per_si
from .datasets import _unit_factors
from .layout import TARGET_UNITS, write_chunk

__all__ = ["read_iris_dataset", "convert_iris_dataset", "IrisReferenceDataset"]

OBSERVABLE_UNITS = {"brightness": "K", "column": "solMass s / (km pc2)"}


def _load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{str(path.parent)!r} is not a reference IRIS dataset: {path.name} is missing "
                         f"({what}); give the folder that holds hyper.json and attributes.json")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None


def _need(section: dict, group: str, key: str):
    value = section.get(key)
    if value is None:
        raise ValueError(f"hyper.json has no {group}.{key}; the reference dataset is incomplete "
                         "(or was never unit-normalised); pass grid= or fix hyper.json")
    return value


def _grid_from_hyper(hyper: dict, flip_velocity: bool) -> Grid:
    coords, cube = hyper.get("coordinate_hyper", {}), hyper.get("cube_hyper", {})

    def axis(section: dict, group: str, name: str) -> Axis:
        return Axis(float(_need(section, group, f"{name}_min")), float(_need(section, group, f"{name}_max")),
                    int(_need(section, group, f"{name}_steps")))

    r = axis(coords, "coordinate_hyper", "r")
    lo = int(coords.get("r_crop_min_index") or 0)
    hi = int(coords.get("r_crop_max_index") or r.steps)
    velocity = axis(cube, "cube_hyper", "v")
    if flip_velocity:
        velocity = Axis(-velocity.stop, -velocity.start, velocity.steps)
    beam = hyper.get("observer_hyper", {}).get("out_blur_fwhm")
    return SEDIGISM.replace(
        distance=Axis(r.start + lo * r.step, r.start + hi * r.step, hi - lo),
        lon=axis(coords, "coordinate_hyper", "lon"), lat=axis(coords, "coordinate_hyper", "lat"),
        velocity=velocity, observer_distance=float(coords.get("observer_radius") or SEDIGISM.observer_distance),
        beam_fwhm=float(beam) if beam else 0.0, name="IRIS reference")


def _iris_to_si(hyper: dict, observable: str) -> tuple[float, float]:
    """SI value per IRIS value of the observation and of the target."""
    units = hyper.get("dataset_hyper", {})
    mass = float(_need(units, "dataset_hyper", "_mass_iris_per_SI"))
    length = float(_need(units, "dataset_hyper", "_length_iris_per_SI"))
    density = mass / length**3
    if observable == "brightness":
        observation = 1.0 / float(_need(units, "dataset_hyper", "_temperature_iris_per_SI"))
    else:
        observation = 1.0 / (density * float(_need(units, "dataset_hyper", "_time_iris_per_SI")))
    return observation, 1.0 / density


def _index_files(root: Path, attributes: dict) -> list[tuple[Path, Path]]:
    index = attributes.get("index")
    if index:
        pairs = [(root / str(target), root / str(observation)) for target, observation in index]
    else:  # no index: pair node_*/columnized_{k}.npy with observed_{k}.npy
        pairs = []
        for node in sorted(p for p in root.glob("node_*") if p.is_dir()):
            found = {int(m.group(1)): f for f in node.glob("columnized_*.npy")
                     if (m := re.fullmatch(r"columnized_(\d+)\.npy", f.name))}
            pairs += [(found[k], node / f"observed_{k}.npy") for k in sorted(found)]
    cardinality = attributes.get("cardinality")
    if cardinality is not None and int(cardinality) != len(pairs):
        raise ValueError(f"attributes.json says cardinality {cardinality} but lists {len(pairs)} pairs; "
                         "the reference dataset is inconsistent")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} files listed by {str(root)!r} are missing, e.g. {missing[0]!r}")
    if not pairs:
        raise ValueError(f"the reference dataset {str(root)!r} holds no pairs (no node_*/columnized_k.npy)")
    return pairs


class IrisReferenceDataset(torch.utils.data.Dataset):
    """Pairs of a reference IRIS dataset folder (see the module notes).

    Items are ``(observation, target)``: float32 tensors ``(1, lon, velocity)`` in
    ``units["observation"]`` (K for line observations, solMass s / (km pc2) for column
    observations) and ``(1, distance, lon)`` in ``units["target"]`` (solMass / pc3).

    Attributes: path, hyper (the parsed hyper.json), grid, units, reduction, observable
    (``"brightness"`` or ``"column"``), observer (description), flip_velocity, files.
    """

    def __init__(self, path, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                 units: dict | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"{str(self.path)!r} is not a folder; give a reference IRIS dataset folder")
        self.hyper = _load_json(self.path / "hyper.json", "the hyperparameters")
        attributes = _load_json(self.path / "attributes.json", "the list of pairs")
        if observable == "auto":
            normalised = self.hyper.get("dataset_hyper", {}).get("_v_density_iris_per_processing")
            observable = "column" if normalised is not None else "brightness"
        if observable not in OBSERVABLE_UNITS:
            raise ValueError(f"observable {observable!r} is not known; use 'auto', 'brightness' (line "
                             "observations, K) or 'column' (the reference's simple observer)")
        self.observable = observable
        self.flip_velocity = bool(flip_velocity)
        self.grid = grid if grid is not None else _grid_from_hyper(self.hyper, self.flip_velocity)
        if not isinstance(self.grid, Grid):
            raise TypeError(f"grid must be an iris_nb.grids.Grid, got {type(self.grid).__name__}")
        self.reduction = str(self.hyper.get("cube_hyper", {}).get("reduction") or "mean")
        self.files = _index_files(self.path, attributes)
        obs_si, target_si = _iris_to_si(self.hyper, observable)
        space = "temperature" if observable == "brightness" else "v_density"
        self._base_units = {"observation": OBSERVABLE_UNITS[observable], "target": TARGET_UNITS}
        self._obs_from_iris = obs_si * per_si(self._base_units["observation"], space)
        self._target_from_iris = target_si * per_si(TARGET_UNITS, "density")
        self.units, self._obs_scale, self._target_scale = _unit_factors(self._base_units, units)
        self.observer = {"class": "IRIS reference", "units": self._base_units["observation"],
                         "input_space": "T" if observable == "brightness" else "vrho",
                         "settings": {"flip_velocity": self.flip_velocity, "observable": observable}}

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path, shape: tuple, what: str) -> np.ndarray:
        array = np.load(path)
        if array.ndim == 2:
            array = array[None]
        if array.shape != shape:
            raise ValueError(f"{str(path)!r} has shape {array.shape}; expected {what} {shape} from hyper.json "
                             "(or from grid=)")
        return array

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``item``: observation ``(1, lon, velocity)``, target ``(1, distance, lon)``, float32."""
        target_file, observation_file = self.files[item]
        lon, vel, dist = self.grid.lon.steps, self.grid.velocity.steps, self.grid.distance.steps
        observation = self._load(observation_file, (1, lon, vel), "(1, lon, velocity)")
        target = self._load(target_file, (1, dist, lon), "(1, distance, lon)")
        if self.flip_velocity:
            observation = observation[..., ::-1]
        observation = torch.tensor(np.ascontiguousarray(observation), dtype=torch.float32)
        target = torch.tensor(target, dtype=torch.float32)
        observation.mul_(self._obs_from_iris * self._obs_scale)
        target.mul_(self._target_from_iris * self._target_scale)
        return observation, target

    def chunk_ids(self) -> np.ndarray:
        """One chunk per item (every pair is its own pair of files)."""
        return np.arange(len(self), dtype=np.int64)

    def with_units(self, units: dict) -> "IrisReferenceDataset":
        """The same pairs converted to ``units`` (``{"observation": ..., "target": ...}``)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.units, other._obs_scale, other._target_scale = _unit_factors(self._base_units, units)
        return other

    def to_store(self, path, dtype: str = "float32", chunk_size: int | None = None, progress: bool = True,
                 compression: str | None = "lz4") -> Path:
        """Write these pairs (in the dataset's base units) to a dataset store at ``path``.

        Resumable like :func:`~iris_nb.data.store.write_dataset`: calling it again on the
        same store continues.  Returns the store path.
        """
        from tqdm.auto import tqdm

        from .. import __version__
        from .layout import info_from_group
        from .store import prepare_store

        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype {dtype!r} is not supported; use 'float32' or 'float16'")
        source = self.with_units(self._base_units)
        n = len(source)
        settings = {"source": str(self.path.resolve()), "flip_velocity": self.flip_velocity,
                    "observable": self.observable}
        wanted = {"grid": self.grid.to_dict(), "n": n, "dtype": dtype, "reduction": self.reduction, "seed": -1,
                  "model": "iris-reference", "model_kwargs": settings, "observer": self.observer}
        attrs = {"seed": -1, "reduction": self.reduction, "model": "iris-reference",
                 "model_kwargs": json.dumps(settings, sort_keys=True),
                 "observer": json.dumps(self.observer, sort_keys=True), "iris_nb_version": __version__,
                 "source": f"converted from the reference IRIS dataset {settings['source']}"}
        group = prepare_store(path, grid=self.grid, n=n, chunk_size=chunk_size, dtype=dtype,
                              observation_units=self._base_units["observation"], wanted=wanted,
                              attrs=attrs, parameters_fn=dict, compression=compression)
        info = info_from_group(group, path)
        with tqdm(total=n, initial=info.n_done, disable=not progress, unit="sample", desc="convert") as bar:
            for chunk in np.flatnonzero(~info.done):
                rows = info.chunk_samples(int(chunk))
                pairs = [source[i] for i in rows]
                observation = np.stack([p[0][0].numpy() for p in pairs])
                target = np.stack([p[1][0].numpy() for p in pairs])
                if dtype == "float16" and max(np.abs(observation).max(), np.abs(target).max()) > 65504:
                    raise ValueError("values beyond the float16 range (65504); convert with dtype='float32'")
                result = {"observation": observation, "target": target,
                          "sample_seed": np.full(len(rows), -1, dtype=np.int64), "parameters": {}}
                write_chunk(group, int(chunk), info.chunk_size, result, {})
                bar.update(len(rows))
        return Path(path)

    def __repr__(self) -> str:
        return (f"IrisReferenceDataset({str(self.path)!r}: {len(self)} pairs, {self.observable} observations in "
                f"{self.units['observation']!r}, targets in {self.units['target']!r}, grid {self.grid!r})")


def read_iris_dataset(path, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                      units: dict | None = None) -> IrisReferenceDataset:
    """Open a dataset folder written by the reference IRIS code as a torch Dataset.

    Parameters
    ----------
    path:
        Folder with ``hyper.json``, ``attributes.json`` and ``node_*/`` (module notes).
    observable:
        ``"auto"`` (column when hyper.json carries a velocity-resolved column unit factor,
        else brightness), ``"brightness"`` (K) or ``"column"`` (solMass s / (km pc2)).
    flip_velocity:
        Reverse the velocity axis to this package's v_LSR sign (default True).
    grid:
        Override the grid derived from hyper.json.
    units:
        Optional ``{"observation": ..., "target": ...}`` to convert items to.

    Returns
    -------
    IrisReferenceDataset
        Items ``(observation (1, lon, velocity), target (1, distance, lon))``, float32;
        ``.to_store(path)`` writes an iris_nb dataset store.
    """
    return IrisReferenceDataset(path, observable=observable, flip_velocity=flip_velocity, grid=grid, units=units)


def convert_iris_dataset(src, dst, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                         dtype: str = "float32", chunk_size: int | None = None, progress: bool = True,
                         compression: str | None = "lz4") -> Path:
    """Convert the reference IRIS dataset folder ``src`` into a dataset store at ``dst``.

    Returns the store path; see :func:`read_iris_dataset` for the reading options.
    """
    dataset = read_iris_dataset(src, observable=observable, flip_velocity=flip_velocity, grid=grid)
    return dataset.to_store(dst, dtype=dtype, chunk_size=chunk_size, progress=progress, compression=compression)
