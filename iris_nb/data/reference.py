"""Read datasets written by the reference IRIS code, and convert them to dataset stores.

Layout of a reference dataset folder (facts of the reference code; pairs are made by
observing AREPO snapshots):

* ``hyper.json``: the reference's hyperparameters, one JSON object per group
  (``coordinate_hyper``, ``cube_hyper``, ``dataset_hyper``, ``observer_hyper``, ...).
  Used here: ``coordinate_hyper.r_min/r_max/r_steps`` (heliocentric distance, pc) and
  ``r_crop_min_index/r_crop_max_index`` (the rows kept in the top-down map),
  ``lon_min/lon_max/lon_steps``, ``lat_min/lat_max/lat_steps`` (deg), ``observer_radius`` (pc);
  ``cube_hyper.v_min/v_max/v_steps`` (km/s) and ``reduction``; ``observer_hyper.out_blur_fwhm``
  (beam, arcsec) and the molar masses ``mw_H2``, ``mw_H``, ``mw_He``, ``abundance_He``;
  ``dataset_hyper.use_AREPO_abundances`` and the unit factors ``_mass_iris_per_SI``,
  ``_length_iris_per_SI``, ``_time_iris_per_SI``, ``_temperature_iris_per_SI`` ("how many
  IRIS units make one SI unit").
* ``attributes.json``: ``{"cardinality": N, "index": [[target_file, observation_file], ...]}``
  with paths relative to the folder, e.g. ``"node_0/columnized_3.npy"``.
* ``node_*/columnized_{k}.npy``: top-down H2 mass density ``(1, distance, lon)``, float32,
  IRIS density units (mass / length**3 of the factors above).
* ``node_*/observed_{k}.npy``: the latitude-reduced observation ``(1, lon, velocity)``,
  float32, in IRIS temperature units (line observer) or IRIS velocity-resolved column
  units (mass / length**3 * time; the reference's "simple" observer).

Conventions of the reference (function names in its ``iris/`` package) and what reading
does about them, so that items read as iris_nb would have observed the same gas:

* **Longitude is mirrored.**  ``Snapshot._map_spherical_to_arepo`` turns longitude
  counter-clockwise (seen from the snapshot's +z) from the observer-to-centre direction,
  while :func:`~iris_nb.sim.arepo.from_arepo` puts positive longitude on the other side;
  ``Snapshot.make_physical_tensor`` multiplies the lon and lat windows by
  ``coordinate_hyper.spin_orientation``, documented (``CoordinateHyper``) as 1 for
  counter-clockwise and -1 for clockwise snapshots.  Following that rule every disc ends up
  with gas at positive reference longitude *approaching* the observer: the mirror image of
  the Milky Way and of ``from_arepo(prograde=True)``, where positive longitudes recede.
  Latitude is not mirrored.  ``mirror_lon=True`` (default) reverses the longitude axis of
  targets and observations and negates the window; pass ``False`` for a dataset written
  against that rule (discs turning like the Milky Way in the reference frame).
* **Velocity is positive towards the observer** (``Snapshot._project_velocities``), the
  opposite of v_LSR, and the observer is at rest (no solar motion, which cannot be added
  here).  ``flip_velocity=True`` (default) reverses the velocity axis and negates the window.
* **Axes are sampled at** ``linspace(min, max, steps)`` (``Snapshot._interpolate`` for
  r, lon, lat; ``SimpleObserver.__init__`` puts channel centres at ``v_min + j dv`` with
  ``dv = (v_max - v_min) / (v_steps - 1)`` and integrates with ``dr = (r_max - r_min) /
  (r_steps - 1)``), while an iris_nb :class:`~iris_nb.grids.Axis` ``[min, max]`` has its
  pixel centres half a pixel inside the edges: pixel ``k`` of the reference sits
  ``(k / (n - 1) - (k + 0.5) / n)`` windows away from pixel ``k`` here, from -1/2 pixel at
  the first to +1/2 at the last.  ``sampling="resample"`` (default) interpolates linearly
  from the reference's samples onto the pixel centres of the ``[min, max]`` windows (for a
  cropped distance axis: of the first and last kept sample), so the paper windows give
  :data:`iris_nb.grids.SEDIGISM`; ``"exact"`` keeps the values and gives a grid whose pixel
  centres are the reference's samples (each window widened by half a reference pixel);
  ``"relabel"`` keeps the values on the ``[min, max]`` windows (the behaviour before
  resampling existed: up to half a pixel off at the edges).  Latitude is reduced before
  writing and cannot be resampled: a latitude mean over the samples of gas lying inside
  the window reads ``(lat_steps - 1) / lat_steps`` of iris_nb's mean over
  ``[lat_min, lat_max]`` (-0.8 % at 128 pixels; nothing for gas filling the window).
  The reference's simple observer keeps cells up to half a channel outside
  ``[v_min, v_max]`` in the edge channels, i.e. it is iris_nb's
  :class:`~iris_nb.sim.observers.SimpleObserver` on the ``"exact"`` velocity window, and
  its lines of sight run over the whole uncropped ``r`` range.
* **Its "vrho" observations bin total gas**: ``SimpleObserver.forward`` bins channel 1 of the
  physical tensor, the gas mass density (``Snapshot._get_particle_values``), whereas its
  targets (``columnize_physical_tensor``) hold H2, ``rho * x_H2 * mw_H2 / (mw_H +
  abundance_He * mw_He)`` (X = 0.7157 with its defaults; 0.71 here).  Such datasets say
  ``gas = "total"``; they match ``SimpleObserver(grid, gas="total")``.  ``gas="h2"`` converts
  them with the H2 mass fraction of the gas, which is one number only when
  ``dataset_hyper.use_AREPO_abundances`` is false (then ``x_H2 = 0.5`` in every cell and the
  fraction is ``0.5 mw_H2 / (mw_H + abundance_He mw_He)`` = 0.7157); with the reference's
  default (true) ``x_H2`` comes cell by cell from the snapshot, a latitude- and
  distance-integrated spectrum cannot be split into H2 and the rest, and ``gas="h2"`` raises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..grids import Grid
from ..units import per_si
from .datasets import pair_unit_factors
from .layout import TARGET_UNITS, write_chunk
from .reference_hyper import grid_from_hyper, h2_mass_fraction, iris_to_si, load_json, resample_to_pixel_centres

__all__ = ["read_iris_dataset", "convert_iris_dataset", "IrisReferenceDataset"]

OBSERVABLE_UNITS = {"brightness": "K", "column": "solMass s / (km pc2)"}
SAMPLINGS = ("resample", "exact", "relabel")


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
    """Pairs of a reference IRIS dataset folder (see the module notes for its conventions).

    Items are ``(observation, target)``: float32 tensors ``(1, lon, velocity)`` in
    ``units["observation"]`` (K for line observations, solMass s / (km pc2) for column
    observations) and ``(1, distance, lon)`` in ``units["target"]`` (solMass / pc3), with
    longitude and velocity ascending on :attr:`grid` as iris_nb observes (v_LSR sign,
    Milky-Way rotation), unless told otherwise by the options of :func:`read_iris_dataset`.

    Attributes: path, hyper (the parsed hyper.json), grid, units, reduction, observable
    (``"brightness"`` or ``"column"``), gas (``"total"`` for the reference's column
    observations, which bin all gas; ``"h2"`` after conversion; ``None`` for brightness),
    observer (description), flip_velocity, mirror_lon, sampling, files.
    """

    def __init__(self, path, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                 units: dict | None = None, *, mirror_lon: bool = True, sampling: str = "resample",
                 gas: str | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"{str(self.path)!r} is not a folder; give a reference IRIS dataset folder")
        self.hyper = load_json(self.path / "hyper.json", "the hyperparameters")
        attributes = load_json(self.path / "attributes.json", "the list of pairs")
        if observable == "auto":
            normalised = self.hyper.get("dataset_hyper", {}).get("_v_density_iris_per_processing")
            observable = "column" if normalised is not None else "brightness"
        if observable not in OBSERVABLE_UNITS:
            raise ValueError(f"observable {observable!r} is not known; use 'auto', 'brightness' (line "
                             "observations, K) or 'column' (the reference's simple observer)")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling {sampling!r} is not known; use 'resample' (onto the [min, max] pixel "
                             "centres, default), 'exact' (the reference's sample points) or 'relabel'")
        self.observable = observable
        self.flip_velocity = bool(flip_velocity)
        self.mirror_lon = bool(mirror_lon)
        self.sampling = sampling
        self.gas, gas_factor = self._gas(gas)
        self.grid = grid if grid is not None else grid_from_hyper(self.hyper, self.flip_velocity,
                                                                     self.mirror_lon, sampling)
        if not isinstance(self.grid, Grid):
            raise TypeError(f"grid must be an iris_nb.grids.Grid, got {type(self.grid).__name__}")
        self.reduction = str(self.hyper.get("cube_hyper", {}).get("reduction") or "mean")
        self.files = _index_files(self.path, attributes)
        obs_si, target_si = iris_to_si(self.hyper, observable)
        space = "temperature" if observable == "brightness" else "v_density"
        self._base_units = {"observation": OBSERVABLE_UNITS[observable], "target": TARGET_UNITS}
        self._obs_from_iris = obs_si * per_si(self._base_units["observation"], space) * gas_factor
        self._target_from_iris = target_si * per_si(TARGET_UNITS, "density")
        self.units, self._obs_scale, self._target_scale = pair_unit_factors(self._base_units, units)
        self.observer = {"class": "IRIS reference", "units": self._base_units["observation"],
                         "input_space": space,
                         "settings": self.settings}

    def _gas(self, gas) -> tuple[str | None, float]:
        """The gas the observations hold after reading, and the factor that gets them there."""
        if self.observable == "brightness":
            if gas is not None:
                raise ValueError(f"gas={gas!r} applies to column ('vrho') observations; this dataset holds "
                                 "brightness temperatures (leave gas=None)")
            return None, 1.0
        if gas not in (None, "total", "h2"):
            raise ValueError(f"gas must be None or 'total' (keep the total gas the reference's simple observer "
                             f"bins) or 'h2' (convert to H2), got {gas!r}")
        if gas == "h2":
            return "h2", h2_mass_fraction(self.hyper)
        return "total", 1.0

    @property
    def settings(self) -> dict:
        """The reading options (JSON-ready)."""
        return {"flip_velocity": self.flip_velocity, "mirror_lon": self.mirror_lon, "sampling": self.sampling,
                "observable": self.observable, "gas": self.gas}

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
        if self.mirror_lon:
            observation, target = observation[:, ::-1, :], target[:, :, ::-1]
        if self.flip_velocity:
            observation = observation[:, :, ::-1]
        if self.sampling == "resample":
            observation = resample_to_pixel_centres(resample_to_pixel_centres(observation, 1), 2)
            target = resample_to_pixel_centres(resample_to_pixel_centres(target, 1), 2)
        observation = torch.tensor(np.ascontiguousarray(observation), dtype=torch.float32)
        target = torch.tensor(np.ascontiguousarray(target), dtype=torch.float32)
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
        other.units, other._obs_scale, other._target_scale = pair_unit_factors(self._base_units, units)
        return other

    def to_store(self, path, dtype: str = "float32", chunk_size: int | None = None, progress: bool = True,
                 compression: str | None = "lz4") -> Path:
        """Write these pairs (in the dataset's base units) to a dataset store at ``path``.

        Resumable like :func:`~iris_nb.data.store.write_dataset`: calling it again on the
        same store continues.  Returns the store path.
        """
        from .. import __version__
        from .._progress import progress_bar
        from .layout import info_from_group
        from .store import prepare_store, store_lock

        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype {dtype!r} is not supported; use 'float32' or 'float16'")
        source = self.with_units(self._base_units)
        n = len(source)
        settings = {"source": str(self.path.resolve()), **self.settings}
        wanted = {"grid": self.grid.to_dict(), "n": n, "dtype": dtype, "reduction": self.reduction, "seed": -1,
                  "model": "iris-reference", "model_kwargs": settings, "observer": self.observer}
        attrs = {"seed": -1, "reduction": self.reduction, "model": "iris-reference",
                 "model_kwargs": json.dumps(settings, sort_keys=True),
                 "observer": json.dumps(self.observer, sort_keys=True), "iris_nb_version": __version__,
                 "source": f"converted from the reference IRIS dataset {settings['source']}"}
        with store_lock(path):  # one writer per store at a time
            group = prepare_store(path, grid=self.grid, n=n, chunk_size=chunk_size, dtype=dtype,
                                  observation_units=self._base_units["observation"], wanted=wanted,
                                  attrs=attrs, parameters_fn=dict, compression=compression)
            info = info_from_group(group, path)
            with progress_bar(n, "convert", unit="sample", initial=info.n_done, disable=not progress) as bar:
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
        gas = f" of {self.gas} gas" if self.gas else ""
        return (f"IrisReferenceDataset({str(self.path)!r}: {len(self)} pairs, {self.observable} observations{gas} in "
                f"{self.units['observation']!r}, targets in {self.units['target']!r}, grid {self.grid!r})")


def read_iris_dataset(path, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                      units: dict | None = None, *, mirror_lon: bool = True, sampling: str = "resample",
                      gas: str | None = None) -> IrisReferenceDataset:
    """Open a dataset folder written by the reference IRIS code as a torch Dataset.

    The defaults give items as iris_nb would have observed the same gas (module notes):
    longitude mirrored, velocity as v_LSR, values resampled onto the ``[min, max]`` windows.

    Parameters
    ----------
    path:
        Folder with ``hyper.json``, ``attributes.json`` and ``node_*/`` (module notes).
    observable:
        ``"auto"`` (column when hyper.json carries a velocity-resolved column unit factor,
        else brightness), ``"brightness"`` (K) or ``"column"`` (solMass s / (km pc2)).
    flip_velocity:
        Reverse the velocity axis to this package's v_LSR sign (default True; the reference
        counts velocity positive towards the observer).
    grid:
        Override the grid derived from hyper.json (the data are still mirrored, flipped and
        resampled as asked; the arrays must have the grid's shape).
    units:
        Optional ``{"observation": ..., "target": ...}`` to convert items to.
    mirror_lon:
        Reverse the longitude axis of targets and observations (default True: the reference's
        documented ``spin_orientation`` rule makes positive longitudes approach, the mirror
        image of the Milky Way); False for a dataset whose discs already turn like the Milky
        Way in the reference frame (in its raw observations, gas at positive longitude has
        negative reference velocity, i.e. recedes).
    sampling:
        ``"resample"`` (default: linear interpolation from the reference's
        ``linspace(min, max, steps)`` samples onto the pixel centres of the ``[min, max]``
        windows, e.g. :data:`~iris_nb.grids.SEDIGISM`), ``"exact"`` (values kept, grid centred
        on the reference's samples) or ``"relabel"`` (values kept on the ``[min, max]``
        windows, up to half a pixel off at the edges).
    gas:
        For column observations: ``None`` or ``"total"`` keep the total gas the reference's
        simple observer bins (``.gas == "total"``; compare with
        ``SimpleObserver(grid, gas="total")``), ``"h2"`` converts to H2 with the dataset's H2
        mass fraction, possible only when hyper.json has
        ``dataset_hyper.use_AREPO_abundances = false`` (a ValueError explains otherwise).
        Must be ``None`` for brightness observations.

    Returns
    -------
    IrisReferenceDataset
        Items ``(observation (1, lon, velocity), target (1, distance, lon))``, float32;
        ``.to_store(path)`` writes an iris_nb dataset store.
    """
    return IrisReferenceDataset(path, observable=observable, flip_velocity=flip_velocity, grid=grid, units=units,
                                mirror_lon=mirror_lon, sampling=sampling, gas=gas)


def convert_iris_dataset(src, dst, observable: str = "auto", flip_velocity: bool = True, grid: Grid | None = None,
                         dtype: str = "float32", chunk_size: int | None = None, progress: bool = True,
                         compression: str | None = "lz4", *, mirror_lon: bool = True, sampling: str = "resample",
                         gas: str | None = None) -> Path:
    """Convert the reference IRIS dataset folder ``src`` into a dataset store at ``dst``.

    Returns the store path; see :func:`read_iris_dataset` for the reading options.
    """
    dataset = read_iris_dataset(src, observable=observable, flip_velocity=flip_velocity, grid=grid,
                                mirror_lon=mirror_lon, sampling=sampling, gas=gas)
    return dataset.to_store(dst, dtype=dtype, chunk_size=chunk_size, progress=progress, compression=compression)
