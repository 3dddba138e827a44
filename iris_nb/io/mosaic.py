"""Mosaicking cube tiles onto one grid and flux-conserving velocity resampling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr

from ..regrid import axis_edges, regrid_axis
from ..conventions import CUBE_DIMS, normalise_line, same_line
from ._common import ALIGN_TOLERANCE, copy_into, make_cube, regular_step

__all__ = ["mosaic", "resample_velocity", "check_compatible"]

_CHUNK_VALUES = 8_000_000


class _ArrayTile:
    """A cube DataArray seen through the tile interface of :class:`~iris_nb.io.spectral.CubeReader`."""

    def __init__(self, tile: xr.DataArray, number: int):
        if not isinstance(tile, xr.DataArray):
            raise TypeError(f"tile {number} is a {type(tile).__name__}; expected an xarray.DataArray")
        self.name = str(tile.attrs.get("source") or f"tile {number}")
        if set(tile.dims) != set(CUBE_DIMS):
            raise ValueError(f"tile {self.name} has dims {tile.dims}; expected {CUBE_DIMS}")
        if str(tile.attrs.get("units", "")).strip() != "K":
            raise ValueError(
                f"tile {self.name} is in {tile.attrs.get('units')!r}; convert every tile to K "
                "first (open_cube does this)"
            )
        self.array = tile.transpose(*CUBE_DIMS)
        self.lon, self.lat, self.velocity = (np.asarray(self.array[n].values, dtype=float) for n in CUBE_DIMS)
        self.attrs, self.dtype = dict(tile.attrs), tile.dtype

    def blocks(self):
        yield slice(0, self.velocity.size), np.asarray(self.array.values)

    def to_dataarray(self):
        return self.array


def check_compatible(rest_frequencies, lines, names) -> None:
    """``ValueError`` when tiles have different rest frequencies (GHz) or line names.

    ``None`` entries (unknown) are not compared.
    """
    known = [(f, n) for f, n in zip(rest_frequencies, names) if f is not None]
    for freq, name in known[1:]:
        if not math.isclose(freq, known[0][0], rel_tol=1e-6):
            raise ValueError(
                f"tiles have different rest frequencies: {known[0][1]} at {known[0][0]} GHz, "
                f"{name} at {freq} GHz; mosaic tiles of one line only"
            )
    named = [(line, n) for line, n in zip(lines, names) if normalise_line(line)]
    for line, name in named[1:]:
        if not same_line(line, named[0][0]):
            raise ValueError(
                f"tiles are of different lines: {named[0][1]} is {named[0][0]!r}, {name} is {line!r}; "
                "mosaic tiles of one line only (or pass line= if the header names are wrong)"
            )


def _union_axis(tiles, name, step, aligned):
    """Union axis on the first tile's pixel phase; per tile its first index and length.

    Clears ``aligned[i]`` for tiles whose pixels are off the phase by more than 0.01 pixel.
    """
    origin = float(getattr(tiles[0], name)[0])
    lows, highs = [], []
    for i, tile in enumerate(tiles):
        values = getattr(tile, name)
        low, high = (values[0] - origin) / step, (values[-1] - origin) / step
        if aligned[i] and max(abs(low - round(low)), abs(high - round(high))) <= ALIGN_TOLERANCE:
            low, high = round(low), round(high)
        else:
            aligned[i] = False
            low, high = math.ceil(low - ALIGN_TOLERANCE), math.floor(high + ALIGN_TOLERANCE)
        lows.append(int(low))
        highs.append(int(high))
    first = min(lows)
    axis = origin + step * np.arange(first, max(highs) + 1)
    return axis, [low - first for low in lows], [h - l + 1 for l, h in zip(lows, highs)]


def _same_step(values, step):
    if values.size < 2:
        return True
    other = (values[-1] - values[0]) / (values.size - 1)
    return abs(other - step) * values.size <= ALIGN_TOLERANCE * step


def _runs(flags):
    """Contiguous runs of equal booleans: ``[(start, stop, flag), ...]``."""
    edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [flags.size]])
    return [(int(a), int(b), bool(flags[a])) for a, b in zip(bounds[:-1], bounds[1:])]


def mosaic(tiles) -> xr.DataArray:
    """Combine cube tiles (lon, lat, velocity), K, into one cube on a single grid.

    Tiles whose pixel size equals the first tile's and whose pixels are offset from it by a
    whole number of pixels (within 0.01 pixel) are placed by index; where tiles overlap the
    finite (non-NaN) values are averaged, so no column is duplicated or lost. Other tiles,
    and tiles whose velocity axis differs, are interpolated onto the first tile's grid
    extended to the union (bilinear in lon/lat, :func:`resample_velocity` in velocity), with a
    warning. Tiles of different rest frequencies or lines raise ``ValueError``.

    ``tiles`` are DataArrays (or the readers :func:`open_cube` uses, which stream the data
    channel block by channel block). Returns a DataArray (lon, lat, velocity), K, of the
    first tile's dtype, NaN where no tile has data; ``attrs["source"]`` lists the tiles.
    Memory: the output plus, for lon columns covered by several tiles, a running sum and a
    one-byte count.
    """
    tiles = [t if hasattr(t, "blocks") else _ArrayTile(t, i) for i, t in enumerate(tiles)]
    if not tiles:
        raise ValueError("mosaic needs at least one tile")
    names = [t.name for t in tiles]
    check_compatible([t.attrs.get("rest_frequency") for t in tiles], [t.attrs.get("line") for t in tiles], names)
    steps = {n: regular_step(getattr(tiles[0], n), n, names[0]) for n in CUBE_DIMS}
    axes, offsets, sizes, on_grid = {}, {}, {}, {}
    for n in CUBE_DIMS:
        on_grid[n] = [_same_step(getattr(t, n), steps[n]) for t in tiles]
        axes[n], offsets[n], sizes[n] = _union_axis(tiles, n, steps[n], on_grid[n])
    aligned = [all(on_grid[n][i] for n in CUBE_DIMS) for i in range(len(tiles))]
    if not all(aligned):
        bad = [name for name, ok in zip(names, aligned) if not ok]
        warnings.warn(
            f"tiles {bad} are not on the pixel grid of {names[0]}; they are interpolated onto it "
            "(bilinear in lon/lat, channel-averaged in velocity)",
            stacklevel=2,
        )
    for i, tile in enumerate(tiles):
        if not aligned[i]:
            sky = on_grid["lon"][i] and on_grid["lat"][i]
            moved = ([] if sky else ["lon", "lat"]) + ([] if on_grid["velocity"][i] else ["velocity"])
            _check_movable(tile, names[0], {n: sizes[n][i] for n in CUBE_DIMS}, moved)
    canvas = _Canvas(axes, offsets, sizes, tiles[0].dtype, len(tiles))
    for i, tile in enumerate(tiles):
        region = {n: slice(offsets[n][i], offsets[n][i] + sizes[n][i]) for n in CUBE_DIMS}
        if aligned[i]:
            source = tile.blocks()
        else:
            sky = on_grid["lon"][i] and on_grid["lat"][i]
            moved = _onto(tile.to_dataarray(), {n: axes[n][region[n]] for n in CUBE_DIMS}, sky, steps["velocity"])
            source = [(slice(0, sizes["velocity"][i]), moved.values)]
        seen = False
        for v_slice, block in source:
            seen = seen or bool(np.isfinite(block).any())
            canvas.add(block, region, v_slice)
        if not seen and aligned[i]:
            raise ValueError(f"cube {tile.name} has no finite values (all NaN or blank); check the file and its mask")
        if not seen:
            raise ValueError(
                f"tile {tile.name} has no finite value left once interpolated onto the grid of {names[0]} "
                "(its finite pixels are too few or too isolated); leave it out, or regrid it first"
            )
    total = canvas.finish()
    return make_cube(total, axes["lon"], axes["lat"], axes["velocity"], _merged_attrs(tiles, names), ", ".join(names))


class _Canvas:
    """The union cube being filled: lon columns covered by one tile are copied, columns
    covered by several keep a running sum and count of finite values."""

    def __init__(self, axes, offsets, sizes, dtype, n_tiles):
        shape = tuple(axes[n].size for n in CUBE_DIMS)
        cover = np.zeros(shape[0], dtype=np.int64)
        for start, size in zip(offsets["lon"], sizes["lon"]):
            cover[start : start + size] += 1
        self.shared = cover >= 2
        self.position = np.cumsum(self.shared) - 1  # row of a shared column in `running`
        self.total = np.full(shape, np.nan, dtype=dtype)
        self.running = np.zeros((int(self.shared.sum()),) + shape[1:], dtype=dtype)
        self.count = np.zeros(self.running.shape, dtype=np.uint8 if n_tiles < 256 else np.uint16)

    def add(self, block, region, v_slice):
        """Add ``block`` (lon, lat, k), K, at the tile's ``region`` and channels ``v_slice``."""
        lon0, lat_slice = region["lon"].start, region["lat"]
        v0 = region["velocity"].start
        v_target = slice(v0 + v_slice.start, v0 + v_slice.stop)
        for a, b, is_shared in _runs(self.shared[region["lon"]]):
            part = block[a:b]
            if not is_shared:
                copy_into(self.total[lon0 + a : lon0 + b, lat_slice, v_target], part)
                continue
            rows = slice(self.position[lon0 + a], self.position[lon0 + a] + b - a)
            target = (rows, lat_slice, v_target)
            valid = np.isfinite(part)
            np.add(self.running[target], part, out=self.running[target], where=valid)
            self.count[target] += valid

    def finish(self):
        """The union cube: shared columns get the mean of their finite values (NaN if none)."""
        for a, b, is_shared in _runs(self.shared):
            if is_shared:
                rows = slice(self.position[a], self.position[a] + b - a)
                running, count = self.running[rows], self.count[rows]
                np.divide(running, count, out=running, where=count > 0)
                running[count == 0] = np.nan
                self.total[a:b] = running
        return self.total


def _check_movable(tile, first, sizes, moved):
    """``ValueError`` when a tile off the grid of tile ``first`` cannot be put onto it.

    ``sizes`` are the tile's pixel counts on the union grid; ``moved`` the axes interpolated.
    """
    for name in CUBE_DIMS:
        values = getattr(tile, name)
        if sizes[name] < 1:
            raise ValueError(
                f"tile {tile.name} covers no {name} pixel centre of the grid of {first}: its {name} "
                f"pixels ({values[0]:g} to {values[-1]:g}) lie between two of them; leave it out, or "
                "regrid the tiles onto one pixel grid first (iris_nb.regrid.regrid_cube)"
            )
        if name in moved and values.size < 2:
            raise ValueError(
                f"tile {tile.name} has a single {name} pixel, off the pixel grid of {first}, so its width "
                f"is unknown and it cannot be interpolated onto that grid; leave it out, or give it at "
                f"least two {name} pixels"
            )


def _onto(tile, coords, sky_aligned, v_step):
    """Put ``tile`` on the union coordinates: bilinear in lon/lat unless ``sky_aligned``,
    channel-averaged in velocity (channels ``v_step`` km/s wide) unless they already match."""
    old, new = tile["velocity"].values, coords["velocity"]
    if old.shape == new.shape and np.allclose(old, new, rtol=0, atol=ALIGN_TOLERANCE * v_step):
        tile = tile.assign_coords(velocity=("velocity", new, dict(tile["velocity"].attrs)))
    else:
        new_edges = np.append(new - 0.5 * v_step, new[-1] + 0.5 * v_step)
        tile = _resample(tile, axis_edges(old), new, new_edges)
    if sky_aligned:
        return tile.assign_coords(lon=("lon", coords["lon"]), lat=("lat", coords["lat"]))
    return tile.interp(lon=coords["lon"], lat=coords["lat"], method="linear").astype(tile.dtype)


def _merged_attrs(tiles, names):
    attrs = {}
    for key in ("rest_frequency", "line"):
        values = [t.attrs.get(key) for t in tiles if t.attrs.get(key) is not None]
        attrs[key] = values[0] if values else None
    beams = [(t.attrs.get("beam_fwhm"), t.attrs.get("beam_fwhm_minor", t.attrs.get("beam_fwhm"))) for t in tiles]
    beams = [b for b in beams if b[0] is not None]
    if beams:
        major, minor = max(beams)
        attrs["beam_fwhm"] = major
        if minor is not None and not math.isclose(major, minor, rel_tol=1e-6):
            attrs["beam_fwhm_minor"] = minor
    attrs["source"] = ", ".join(names)
    units = []
    for t in tiles:
        unit = str(t.attrs.get("original_units", "K"))
        if unit not in units:
            units.append(unit)
    attrs["original_units"] = ", ".join(units)
    return attrs


def resample_velocity(cube: xr.DataArray, velocity) -> xr.DataArray:
    """Resample a cube's velocity axis onto new channel centres, conserving the line integral.

    Each new channel is the average of the input over its width (input channels treated as
    constant across their own width), so ``sum(T * dv)`` is kept; blanks (NaN) are left out
    of the average and a new channel less than half covered by finite input is NaN. The
    averaging is :func:`iris_nb.regrid.regrid_axis` with ``min_coverage=0.5``.

    ``cube`` is a DataArray with a ``velocity`` dim (km/s, ascending); ``velocity`` the new
    ascending centres (km/s), shape (n_new,). Returns the cube with ``velocity`` of length
    n_new, same other dims, values in the same unit.
    """
    old = np.asarray(cube["velocity"].values, dtype=float)
    new = np.asarray(velocity, dtype=float).ravel()
    if new.size < 2 or np.any(np.diff(new) <= 0) or np.any(np.diff(old) <= 0):
        raise ValueError(
            f"resample_velocity needs ascending velocity axes of at least two channels; got "
            f"{old.size} input and {new.size} output channels"
        )
    if old.size < 2:
        raise ValueError("a velocity axis of one channel has no width; resampling needs at least two channels")
    return _resample(cube, axis_edges(old), new, axis_edges(new))


def _resample(cube, old_edges, new, new_edges):
    """:func:`resample_velocity` onto centres ``new`` (km/s) with pixel edges ``new_edges``."""
    old = np.asarray(cube["velocity"].values, dtype=float)
    moved = cube.transpose(..., "velocity")
    data = np.asarray(moved.values)
    flat = data.reshape(-1, old.size)
    out = np.empty((flat.shape[0], new.size), dtype=data.dtype if data.dtype.kind == "f" else float)
    rows = max(1, _CHUNK_VALUES // old.size)
    for start in range(0, flat.shape[0], rows):
        block = flat[start : start + rows].astype(float)
        out[start : start + rows] = regrid_axis(block, old_edges, new_edges, axis=-1, min_coverage=0.5)
    coords = {k: v for k, v in moved.coords.items() if "velocity" not in v.dims}
    coords["velocity"] = ("velocity", new, dict(cube["velocity"].attrs))
    result = xr.DataArray(out.reshape(data.shape[:-1] + (new.size,)), dims=moved.dims, coords=coords, attrs=dict(cube.attrs))
    return result.transpose(*cube.dims)
