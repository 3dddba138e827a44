"""Flux-conserving, NaN-aware regridding of cubes onto a model grid.

Each output pixel is the overlap-weighted average of the input pixels it overlaps
(channel averaging with fractional overlaps along velocity, area weighting along lon and
lat).  The three axes are separable, so the 3-D average is applied one axis at a time with
a sparse overlap matrix per axis, stored in ELLPACK layout: for output pixel ``j`` the
``k`` input indices ``index[j]`` and weights ``weight[j]`` (rows sum to 1).  Applying it
is ``k`` gathers along the axis, never a loop over pixels.

NaN inputs are dropped and the result renormalised: the numerator (data with NaN set to 0)
and the denominator (the valid-pixel mask) go through the same three matrices and the
output is their ratio; an output pixel without any valid input is NaN.  Axes on which the
cube already sits on the grid (same pixels, possibly a larger window) are sliced, not
regridded, so a cube already on the grid costs nothing.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .conventions import CUBE_DIMS
from .cube import standardize_cube
from .grids import AXIS_UNITS, Axis, Grid, get_grid

__all__ = ["axis_edges", "overlap_weights", "overlap_matrix", "regrid_axis", "regrid_cube", "regrid_array"]

_BLOCK_BYTES = 16 * 2**20  # input slab regridded at a time: bounds the temporaries


def axis_edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges ``(n + 1,)`` of an ascending axis given its pixel centres ``(n,)``.

    Inner edges are midpoints between centres; the outer edges lie half the neighbouring
    spacing outside the first and last centre.  A single pixel is given width 0 (no extent
    can be inferred).  Units are those of ``centres``.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0], c[0]])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def overlap_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse overlap matrix from input pixels to output pixels, in ELLPACK layout.

    Parameters
    ----------
    src_edges, dst_edges:
        Ascending pixel edges ``(n_in + 1,)`` and ``(n_out + 1,)`` in the same unit.

    Returns
    -------
    index:
        ``(n_out, k)`` int64 input pixel indices (padding entries repeat a valid index).
    weight:
        ``(n_out, k)`` float64 overlap lengths normalised so every row sums to 1; padding
        entries are 0.  A row that overlaps no input pixel is all NaN, so that output
        pixel comes out NaN.
    """
    src = np.asarray(src_edges, dtype=np.float64)
    dst = np.asarray(dst_edges, dtype=np.float64)
    n_in = src.size - 1
    lo, hi = dst[:-1], dst[1:]
    first = np.clip(np.searchsorted(src, lo, side="right") - 1, 0, n_in - 1)
    last = np.clip(np.searchsorted(src, hi, side="left") - 1, 0, n_in - 1)
    k = int(max(1, np.max(last - first + 1)))
    raw = first[:, None] + np.arange(k)[None, :]
    inside = raw <= last[:, None]
    index = np.minimum(raw, n_in - 1)
    overlap = np.minimum(hi[:, None], src[index + 1]) - np.maximum(lo[:, None], src[index])
    weight = np.where(inside, np.clip(overlap, 0.0, None), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(total > 0, weight / total, np.nan)
    return index, weight


def overlap_matrix(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """Dense ``(n_out, n_in)`` version of :func:`overlap_weights` (for inspection and tests)."""
    index, weight = overlap_weights(src_edges, dst_edges)
    dense = np.zeros((index.shape[0], len(src_edges) - 1))
    np.add.at(dense, (np.repeat(np.arange(index.shape[0]), index.shape[1]), index.ravel()), weight.ravel())
    return dense


def _check_coverage(name: str, src: np.ndarray, axis: Axis) -> None:
    """Raise if the input edges ``src`` miss the model window by more than half a pixel."""
    unit = AXIS_UNITS[name]
    lo_tol = 0.5 * (src[1] - src[0])
    hi_tol = 0.5 * (src[-1] - src[-2])
    gaps = []
    if src[0] > axis.start + lo_tol + 1e-9 * axis.span:
        gaps.append(f"{src[0] - axis.start:.4g} {unit} missing on the low side")
    if src[-1] < axis.stop - hi_tol - 1e-9 * axis.span:
        gaps.append(f"{axis.stop - src[-1]:.4g} {unit} missing on the high side")
    if gaps:
        raise ValueError(
            f"cube covers {name} {src[0]:.4g}..{src[-1]:.4g} {unit} but the model needs "
            f"{axis.start:g}..{axis.stop:g} {unit}: {' and '.join(gaps)}; use a cube that "
            "covers the model window (pad unobserved parts with NaN) or a model whose grid fits"
        )


def _slice_for(src: np.ndarray, dst: np.ndarray) -> slice | None:
    """A slice when the output pixels are a run of the input pixels (same edges), else None."""
    n_out = dst.size - 1
    if src.size < dst.size:
        return None
    start = int(np.argmin(np.abs(src - dst[0])))
    if start + n_out >= src.size:
        return None
    tol = 1e-6 * (dst[-1] - dst[0]) / n_out
    if np.allclose(src[start:start + n_out + 1], dst, rtol=0.0, atol=tol):
        return slice(start, start + n_out)
    return None


def _apply_axis(x: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray,
                den: np.ndarray | None, nan_aware: bool):
    """Apply one overlap matrix along ``axis`` of ``x`` (and of ``den``); return (x, den).

    With ``nan_aware`` the NaN of ``x`` are set to 0 and a denominator (the weights of the
    valid inputs) is started; later calls carry that denominator along.
    """
    shape = [1] * x.ndim
    shape[axis] = -1
    out = out_den = None
    for t in range(index.shape[1]):
        w = weight[:, t].astype(x.dtype).reshape(shape)
        part = np.take(x, index[:, t], axis=axis)
        if nan_aware:
            bad = np.isnan(part)
            part[bad] = 0
            den_part = (~bad) * w
        elif den is not None:
            den_part = np.take(den, index[:, t], axis=axis) * w
        part *= w
        out = part if out is None else np.add(out, part, out=out)
        if nan_aware or den is not None:
            out_den = den_part if out_den is None else np.add(out_den, den_part, out=out_den)
    return out, out_den


def regrid_axis(data: np.ndarray, src_edges: np.ndarray, dst_edges: np.ndarray, axis: int = -1,
                min_coverage: float = 0.0) -> np.ndarray:
    """Overlap-weighted, NaN-aware average of ``data`` along one axis onto new pixels.

    Parameters
    ----------
    data:
        Array ``(..., n_in, ...)`` with the regridded axis at ``axis``, any unit; NaN marks
        blanks, which are left out of every average.
    src_edges, dst_edges:
        Ascending pixel edges ``(n_in + 1,)`` and ``(n_out + 1,)`` of that axis, same unit.
    min_coverage:
        Fraction of an output pixel's width that finite input must cover; below it the
        output pixel is NaN (0: any valid overlap is enough, as in :func:`regrid_cube`).

    Returns
    -------
    Array ``(..., n_out, ...)`` in the unit of ``data`` and its float dtype (float64 for
    integer input).  Each output pixel is the mean of the finite inputs weighted by their
    overlap with it, so ``sum(data * width)`` is conserved where everything is finite; NaN
    where no finite input overlaps it or it is covered less than ``min_coverage``.
    """
    x = np.asarray(data)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    src = np.asarray(src_edges, dtype=np.float64)
    dst = np.asarray(dst_edges, dtype=np.float64)
    if x.shape[axis] != src.size - 1:
        raise ValueError(f"data has {x.shape[axis]} pixels along axis {axis} but src_edges has {src.size} "
                         f"edges; give n + 1 edges for n pixels")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be a fraction of a pixel between 0 and 1, got {min_coverage}")
    index, weight = overlap_weights(src, dst)
    # valid: the overlap-weighted fraction of each output pixel's input that is finite
    mean, valid = _apply_axis(x, axis, index, weight, None, nan_aware=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(mean, valid, out=mean)
    shape = [1] * x.ndim
    shape[axis] = -1
    inside = np.clip(np.minimum(dst[1:], src[-1]) - np.maximum(dst[:-1], src[0]), 0.0, None)
    covered = valid * inside.reshape(shape)  # length of the output pixel with finite input
    kept = (valid > 0) & (covered >= (min_coverage * np.diff(dst)).reshape(shape))
    mean[~kept] = np.nan
    return mean


def _regrid_slab(slab: np.ndarray, matrices: dict, lon_offset: int) -> np.ndarray:
    """Regrid one slab ``(lon rows, lat, velocity)``; ``matrices`` maps axis -> (index, weight).

    The lon matrix (axis 0), if any, must only reference rows ``lon_offset ..`` of the slab.
    """
    nan_aware = bool(np.isnan(slab).any())
    order = sorted((a for a in matrices if a != 0), key=lambda a: matrices[a][0].shape[0] / slab.shape[a])
    if 0 in matrices:
        order.append(0)
    data, den = slab, None
    for count, axis in enumerate(order):
        index, weight = matrices[axis]
        if axis == 0:
            index = index - lon_offset
        data, den = _apply_axis(data, axis, index, weight, den, nan_aware and count == 0)
    if den is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(data, den, out=data)
        data[~(den > 0)] = np.nan
    return data


def regrid_array(data: np.ndarray, src_edges: dict, grid: Grid) -> np.ndarray:
    """Regrid a standard array ``(..., lon, lat, velocity)`` onto ``grid``'s pixel centres.

    ``src_edges`` maps ``"lon"``, ``"lat"``, ``"velocity"`` to ascending input pixel
    edges (deg, deg, km/s).  Leading dims (a stack) are carried along.  Returns
    ``(..., grid lon, grid lat, grid velocity)`` in the unit and float dtype of ``data``;
    a view of ``data`` when the cube is already on the grid (or on a larger window of it).
    The work goes block by block of output longitudes, so besides the output only
    slab-sized temporaries are allocated.
    """
    lead = data.ndim - 3
    slices, matrices = [slice(None)] * lead, {}
    for axis, name in enumerate(CUBE_DIMS):
        src, target = src_edges[name], getattr(grid, name)
        cut = _slice_for(src, target.edges())
        slices.append(cut if cut is not None else slice(None))
        if cut is None:
            matrices[axis] = overlap_weights(src, target.edges())
    data = data[tuple(slices)]
    if not matrices:
        return data
    n_lon = grid.lon.steps
    out = np.empty(data.shape[:lead] + grid.ppv_shape, dtype=data.dtype)
    # one leading stack dim at most (standardize_cube), so these are views, never copies
    stack = data if lead == 1 else data[None] if lead == 0 else data.reshape((-1,) + data.shape[lead:])
    flat_out = out if lead == 1 else out[None] if lead == 0 else out.reshape((-1,) + grid.ppv_shape)
    rows_per_out = stack.shape[1] / n_lon
    per_block = max(1, int(_BLOCK_BYTES / max(1, stack[0, 0].nbytes) / max(rows_per_out, 1.0)))
    for item in range(stack.shape[0]):
        for first in range(0, n_lon, per_block):
            last = min(n_lon, first + per_block)
            if 0 in matrices:
                index, weight = matrices[0]
                lo, hi = int(index[first:last].min()), int(index[first:last].max()) + 1
                block = {**matrices, 0: (index[first:last], weight[first:last])}
            else:
                lo, hi, block = first, last, matrices
            flat_out[item, first:last] = _regrid_slab(stack[item, lo:hi], block, lo)
    return out


def regrid_cube(cube: xr.DataArray, grid) -> xr.DataArray:
    """Regrid a cube onto a model grid's lon, lat and velocity pixel centres.

    Parameters
    ----------
    cube:
        Cube ``(extra?, lon, lat, velocity)`` in any dim order and coordinate units
        (standardised first); data in any unit, NaN where unobserved.
    grid:
        A :class:`~iris_nb.grids.Grid`, a preset name, or a model with a ``grid``.

    Returns
    -------
    DataArray ``(extra?, lon, lat, velocity)`` of shape ``grid.ppv_shape`` (plus the extra
    dim) on the grid's pixel centres (deg, deg, km/s), data in the cube's unit and dtype.
    Each output pixel is the overlap-weighted mean of the valid input pixels it overlaps
    (flux-conserving along velocity); NaN where none is valid.

    Raises
    ------
    ValueError
        When the cube misses the grid's window on some axis by more than half an input
        pixel; the message names the axis and the missing amount.
    """
    if hasattr(grid, "grid") and not isinstance(grid, (Grid, str, dict)):
        grid = grid.grid
    grid = get_grid(grid)
    std = standardize_cube(cube, to_kelvin=False)
    edges = {}
    for name in CUBE_DIMS:
        centres = np.asarray(std.coords[name].values, dtype=np.float64)
        if centres.size < 2:
            raise ValueError(
                f"cube has a single {name} pixel; its extent is unknown, so it cannot be regridded "
                f"onto the model's {getattr(grid, name).steps} {name} pixels"
            )
        edges[name] = axis_edges(centres)
        _check_coverage(name, edges[name], getattr(grid, name))
    out = regrid_array(np.asarray(std.data), edges, grid)
    coords = {name: grid.coord(name) for name in CUBE_DIMS}
    if std.ndim == 4:
        lead = std.dims[0]
        if lead in std.coords:
            coords[lead] = std.coords[lead]
    attrs = {**std.attrs, "grid": grid.name}
    return xr.DataArray(out, dims=std.dims, coords=coords, attrs=attrs, name=std.name)
