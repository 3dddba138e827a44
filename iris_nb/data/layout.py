"""On-disk layout of an iris_nb dataset store (a zarr v3 group) and its inspection helpers.

A store holds ``n`` training pairs made on one :class:`~iris_nb.grids.Grid`:

=================  ==========================  =============================================
variable           dims                        meaning
=================  ==========================  =============================================
``observation``    (sample, lon, velocity)     latitude-reduced observation (PV image), in
                                               ``attrs["units"]`` (the observer's unit)
``target``         (sample, distance, lon)     H2 mass density averaged over latitude,
                                               solMass / pc3
``sample_seed``    (sample,)                   gas-model seed of each sample (-1: none)
parameters         (sample,)                   one float64 variable per numeric gas-model
                                               parameter (NaN where a sample lacks it)
``done``           (chunk,)                    1 once chunk ``k`` (samples ``k*C .. k*C+C-1``)
                                               is completely written, else 0
``lon``, ...       (lon,), (velocity,), ...    pixel centres with ``units`` attrs
=================  ==========================  =============================================

Observation, target and per-sample variables are chunked by ``C = chunk_size`` samples
along ``sample``; ``done[k]`` is written only after every array of chunk ``k`` is on disk,
so a killed writer never leaves a half-written chunk counted as done.  Root attrs describe
how the store was made (grid JSON, observer, reduction, seed, dtype, gas model, iris_nb
version).  ``xarray.open_zarr(path)`` opens it with named dims and units.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..grids import Grid
from ..units import input_space_name

__all__ = ["STORE_FORMAT", "StoreInfo", "store_info", "open_store", "is_store"]

STORE_FORMAT = 1
"""Version of this layout, kept in the root attribute ``iris_nb_store``."""

TARGET_UNITS = "solMass / pc3"
RESERVED_NAMES = ("observation", "target", "sample_seed", "done", "sample", "chunk",
                  "lon", "lat", "velocity", "distance")
_CHUNK_BYTES = 8 * 2**20  # uncompressed bytes of observation + target per chunk (auto size)
_MAX_CHUNK = 256


COMPRESSIONS = ("lz4", "zstd", None)
"""Codecs of observation and target chunks: Blosc LZ4 (fast to decode, default), Blosc Zstd
(smaller, slower to decode) or None (raw bytes: largest, fastest to read from a warm cache)."""


def check_compression(compression) -> None:
    """ValueError unless ``compression`` is one of :data:`COMPRESSIONS`."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not known; use 'lz4' (default, fast), 'zstd' "
                         "(smaller files) or None (raw, fastest reads from memory)")


def _codec(dtype: str, compression):
    # Byte-shuffled Blosc: the many empty velocity channels of a PV image compress well.
    if compression is None:
        return None
    return BloscCodec(cname=compression, clevel=5 if compression == "lz4" else 3, shuffle="shuffle",
                      typesize=np.dtype(dtype).itemsize)


def auto_chunk_size(grid: Grid, n: int, dtype: str) -> int:
    """Samples per chunk: about 8 MiB of observation + target, at most 256 and at most ``n``."""
    itemsize = np.dtype(dtype).itemsize
    per_sample = itemsize * (grid.lon.steps * grid.velocity.steps + grid.distance.steps * grid.lon.steps)
    return int(max(1, min(_MAX_CHUNK, n, _CHUNK_BYTES // per_sample)))


def parameter_variable(key: str) -> str:
    """Name of the store variable holding gas-model parameter ``key``."""
    return f"parameter_{key}" if key in RESERVED_NAMES else key


# --------------------------------------------------------------------------- info
@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What a dataset store holds, read from its metadata (no sample data is read).

    Attributes
    ----------
    path: the store folder.  grid: the :class:`Grid` of every pair.  n_samples, chunk_size,
    n_chunks: sizes.  done: ``(n_chunks,)`` bool, chunks completely written.  dtype:
    storage dtype.  compression: chunk codec (``"lz4"``, ``"zstd"`` or None).  reduction:
    ``"mean"`` or ``"max"`` over latitude.  units:
    ``{"observation": ..., "target": ...}`` astropy strings.  observer: description dict.
    seed: the store seed.  model: gas-model name.  model_kwargs: dict.  parameters: list of
    per-sample parameter variable names.  attrs: all root attributes.  augment: the
    :class:`~iris_nb.sim.augment.FieldAugmentation` dict the fields were augmented with, or None.
    velocity: whether the store also holds ``target_velocity``, the H2-weighted velocity map (km/s).
    """

    path: Path
    grid: Grid
    n_samples: int
    chunk_size: int
    done: np.ndarray
    dtype: str
    compression: str | None
    reduction: str
    units: dict
    observer: dict
    seed: int
    model: str
    model_kwargs: dict
    parameters: list
    attrs: dict
    augment: dict | None = None
    velocity: bool = False  # the store also holds target_velocity (km/s)

    @property
    def n_chunks(self) -> int:
        """Number of chunks along ``sample``."""
        return len(self.done)

    @property
    def n_done(self) -> int:
        """Number of samples in completely written chunks."""
        return int(self.done_samples().size)

    @property
    def complete(self) -> bool:
        """True when every chunk is written."""
        return bool(np.all(self.done))

    def chunk_samples(self, chunk: int) -> range:
        """Sample indices of chunk ``chunk``."""
        start = chunk * self.chunk_size
        return range(start, min(self.n_samples, start + self.chunk_size))

    def done_samples(self) -> np.ndarray:
        """Indices (int64, ascending) of the samples in completely written chunks."""
        chunks = np.flatnonzero(self.done)
        if chunks.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.chunk_samples(int(k)).start, self.chunk_samples(int(k)).stop)
                               for k in chunks]).astype(np.int64)

    def __repr__(self) -> str:
        return (f"StoreInfo({str(self.path)!r}: {self.n_done}/{self.n_samples} samples done in "
                f"{int(np.sum(self.done))}/{self.n_chunks} chunks of {self.chunk_size}; {self.dtype} "
                f"({self.compression or 'raw'}), "
                f"reduction={self.reduction!r}, observation in {self.units['observation']!r}, "
                f"target in {self.units['target']!r}; observer {self.observer.get('class', '?')}; "
                f"model {self.model!r}, seed {self.seed}; grid {self.grid!r})")


def is_store(path) -> bool:
    """True when ``path`` is a folder holding an iris_nb dataset store."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return "iris_nb_store" in attrs


def open_group(path, mode: str = "r"):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset store at {str(path)!r}; write one with "
                                "iris_nb.data.write_dataset(path, n, grid)")
    if not is_store(path):
        raise ValueError(f"{str(path)!r} is not an iris_nb dataset store (no zarr.json with an "
                         "'iris_nb_store' attribute); give the folder write_dataset wrote")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)


def info_from_group(group, path) -> StoreInfo:
    """Build a :class:`StoreInfo` from an open zarr group."""
    attrs = dict(group.attrs)
    version = attrs.get("iris_nb_store")
    if version != STORE_FORMAT:
        raise ValueError(f"store {str(path)!r} has layout version {version!r}; this iris_nb reads "
                         f"version {STORE_FORMAT}; rewrite it with this version's write_dataset")
    done = np.asarray(group["done"][:], dtype=bool)
    return StoreInfo(
        path=Path(path), grid=Grid.from_json(attrs["grid"]), n_samples=int(attrs["n_samples"]),
        chunk_size=int(attrs["chunk_size"]), done=done, dtype=str(attrs["dtype"]),
        compression=attrs.get("compression"),
        reduction=str(attrs["reduction"]),
        units={"observation": str(attrs["observation_units"]), "target": str(attrs["target_units"])},
        observer=_observer_description(attrs["observer"]), seed=int(attrs["seed"]), model=str(attrs["model"]),
        model_kwargs=json.loads(attrs["model_kwargs"]), parameters=list(attrs["parameters"]),
        attrs=attrs, augment=json.loads(attrs["augment"]) if "augment" in attrs else None,
        velocity=bool(attrs.get("velocity_target", 0)))


def _observer_description(text: str) -> dict:
    """The store's observer description, its input space under its current name (stores written
    before the rename say ``"T"``, ``"I"`` or ``"vrho"``)."""
    observer = json.loads(text)
    if isinstance(observer, dict) and observer.get("input_space"):
        observer["input_space"] = input_space_name(observer["input_space"], "the store's observer input_space")
    return observer


def store_info(path) -> StoreInfo:
    """Describe the store at ``path`` (metadata and the ``done`` record only)."""
    return info_from_group(open_group(path), path)


def open_store(path, done_only: bool = True):
    """Open a store as an :class:`xarray.Dataset` (lazy, dask-backed).

    Parameters
    ----------
    path:
        Store folder written by :func:`~iris_nb.data.store.write_dataset`.
    done_only:
        Keep only the samples of completely written chunks (default), so unfinished chunks
        (NaN) never reach an analysis.

    Returns
    -------
    xarray.Dataset
        ``observation (sample, lon, velocity)`` in the observer's unit, ``target (sample,
        distance, lon)`` in solMass / pc3, per-sample parameters ``(sample,)``, coords with
        units; attrs as written, with ``grid`` and ``observer`` as JSON text.
    """
    import xarray as xr

    info = store_info(path)
    ds = xr.open_zarr(str(path), consolidated=True)
    if done_only:
        ds = ds.isel(sample=info.done_samples())
    return ds


# --------------------------------------------------------------------------- creation
def create_store(path, *, grid: Grid, n: int, chunk_size: int, dtype: str, observation_units: str,
                 parameters: dict, attrs: dict, compression="lz4"):
    """Create an empty store (every chunk not done) and return its open zarr group.

    ``parameters`` maps gas-model parameter keys to store variable names; ``attrs`` are the
    extra root attributes (seed, reduction, observer, model, ...); ``compression`` one of
    :data:`COMPRESSIONS`.
    """
    check_compression(compression)
    n_chunks = -(-n // chunk_size)
    root_attrs = {"iris_nb_store": STORE_FORMAT, "title": "iris_nb training pairs",
                  "grid": grid.to_json(), "n_samples": int(n), "chunk_size": int(chunk_size),
                  "n_chunks": int(n_chunks), "dtype": dtype, "observation_units": observation_units,
                  "target_units": TARGET_UNITS, "compression": compression,
                  "parameters": sorted(parameters.values()),
                  "parameter_keys": json.dumps(parameters, sort_keys=True)}
    root_attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=root_attrs)
        lon, vel, dist = grid.lon.steps, grid.velocity.steps, grid.distance.steps
        group.create_array(
            "observation", shape=(n, lon, vel), chunks=(chunk_size, lon, vel), dtype=dtype,
            fill_value=np.nan, compressors=_codec(dtype, compression),
            dimension_names=("sample", "lon", "velocity"),
            attributes={"units": observation_units, "reduction": attrs.get("reduction", ""),
                        "long_name": "latitude-reduced synthetic observation (PV image)"})
        group.create_array(
            "target", shape=(n, dist, lon), chunks=(chunk_size, dist, lon), dtype=dtype,
            fill_value=np.nan, compressors=_codec(dtype, compression),
            dimension_names=("sample", "distance", "lon"),
            attributes={"units": TARGET_UNITS, "long_name": "H2 mass density averaged over latitude"})
        if attrs.get("velocity_target"):
            group.create_array(
                "target_velocity", shape=(n, dist, lon), chunks=(chunk_size, dist, lon), dtype=dtype,
                fill_value=np.nan, compressors=_codec(dtype, compression),
                dimension_names=("sample", "distance", "lon"),
                attributes={"units": "km / s", "long_name": "H2-weighted line-of-sight velocity, latitude average"})
        group.create_array(
            "sample_seed", shape=(n,), chunks=(chunk_size,), dtype="int64", fill_value=-1,
            dimension_names=("sample",), attributes={"long_name": "gas-model seed (sample_seed(seed, i))"})
        for key, name in sorted(parameters.items()):
            group.create_array(name, shape=(n,), chunks=(chunk_size,), dtype="float64", fill_value=np.nan,
                               dimension_names=("sample",),
                               attributes={"long_name": f"gas-model parameter {key!r}"})
        group.create_array("done", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                           dimension_names=("chunk",),
                           attributes={"long_name": f"1 when the {chunk_size} samples of a chunk are written"})
        sample = group.create_array("sample", shape=(n,), chunks=(n,), dtype="int64", fill_value=0,
                                    dimension_names=("sample",), attributes={"long_name": "sample index"})
        sample[:] = np.arange(n, dtype=np.int64)
        for name in ("distance", "lon", "velocity"):
            coord = group.create_array(name, shape=(getattr(grid, name).steps,), dtype="float64",
                                       fill_value=0.0, dimension_names=(name,),
                                       attributes={"units": grid.coord(name)[2]["units"],
                                                   "long_name": f"{name} (pixel centres)"})
            coord[:] = getattr(grid, name).centers()
        zarr.consolidate_metadata(str(path), zarr_format=3)
    return zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)


def write_chunk(group, chunk: int, chunk_size: int, result: dict, parameters: dict) -> None:
    """Write one chunk's arrays, then mark it done (the order that makes resuming safe).

    ``result`` holds ``observation (m, lon, velocity)``, ``target (m, distance, lon)``,
    ``sample_seed (m,)`` and ``parameters`` (dict key -> ``(m,)`` float64).
    """
    start = chunk * chunk_size
    stop = start + len(result["sample_seed"])
    region = slice(start, stop)
    dtype = group["observation"].dtype
    group["observation"][region] = np.asarray(result["observation"]).astype(dtype, copy=False)
    group["target"][region] = np.asarray(result["target"]).astype(dtype, copy=False)
    if "target_velocity" in result:
        group["target_velocity"][region] = np.asarray(result["target_velocity"]).astype(dtype, copy=False)
    group["sample_seed"][region] = np.asarray(result["sample_seed"], dtype=np.int64)
    for key, name in parameters.items():
        group[name][region] = np.asarray(result["parameters"].get(key, np.full(stop - start, np.nan)),
                                         dtype=np.float64)
    group["done"][chunk] = 1


def remove_partial_files(path) -> int:
    """Delete temporary ``*.partial`` files a killed writer left behind; return how many."""
    removed = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
