"""The paper's views: PV images, top-down maps, ensembles, residuals and loss curves.

Every function draws with matplotlib, labels every axis and colorbar with its unit, leaves
NaN pixels blank, returns the :class:`~matplotlib.axes.Axes` it drew on (or the
:class:`~matplotlib.figure.Figure` for multi-panel views) and never calls ``plt.show``.

Inputs follow DESIGN.md section 3: a PV image is a DataArray with dims ``(lon, velocity)``
(any order), a top-down map has dims ``(distance, lon)``; the data and every coordinate carry
astropy-parsable ``attrs["units"]``.  Longitude is shown in deg, wrapped to (-180, 180] and
increasing to the *left* (Galactic convention) in every view, so panels line up.
"""

from __future__ import annotations

import warnings

import astropy.units as u
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
from matplotlib.ticker import AsinhLocator, MaxNLocator
import numpy as np
import xarray as xr

from .grids import galactocentric_xy

__all__ = ["pv_image", "top_down", "side_by_side", "ensemble", "truth_vs_prediction", "loss_curves"]

STRETCHES = ("asinh", "linear", "log")
KINDS = ("polar", "cartesian")
_AXES = {  # dim -> (axis label, unit it must be equivalent to, example unit string)
    "lon": ("Galactic longitude", u.deg, "deg"),
    "velocity": ("v_LSR", u.km / u.s, "km/s"),
    "distance": ("heliocentric distance", u.pc, "pc"),
}


# ------------------------------------------------------------------ validation helpers
def _parse(value, what: str, example: str) -> u.UnitBase:
    """Astropy unit from an ``attrs["units"]`` value, or a ValueError saying how to set it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{what} has no units; set attrs['units'] (for example {example!r})")
    try:
        return u.Unit(str(value).replace("Msun", "solMass"), parse_strict="raise")
    except (ValueError, TypeError):
        raise ValueError(f"{what} has units {value!r} that astropy cannot parse; use e.g. {example!r}") from None


def _check_dims(da, dims: tuple[str, ...], what: str, hint: str = "") -> None:
    if not isinstance(da, xr.DataArray):
        extra = " (pick a variable, e.g. ds['mean'])" if isinstance(da, xr.Dataset) else ""
        raise TypeError(f"{what} must be an xarray.DataArray, got {type(da).__name__}{extra}")
    if set(da.dims) != set(dims):
        raise ValueError(
            f"{what} has dims {tuple(da.dims)}, expected {dims} in any order{hint}; "
            "rename dimensions with .rename({'old': 'new'})"
        )


def _axis(da, dim: str, what: str) -> tuple[np.ndarray, str]:
    """Coordinate values of ``dim`` (lon converted to deg and wrapped) and their unit label."""
    name, unit_needed, example = _AXES[dim]
    if dim not in da.coords:
        raise ValueError(
            f"{what} has no coordinate values along '{dim}'; add them with "
            f".assign_coords({dim}=(('{dim}',), values, {{'units': '{example}'}}))"
        )
    raw = da[dim].attrs.get("units")
    unit = _parse(raw, f"{what} coordinate '{dim}'", example)
    if not unit.is_equivalent(unit_needed):
        raise ValueError(f"{what} coordinate '{dim}' is in {raw!r}, which is not a {name} unit like {example!r}")
    values = np.asarray(da[dim].values, dtype=float)
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"{what} coordinate '{dim}' needs at least 2 finite values, "
                         f"got {values.size} ({values[:4]})")
    if dim == "lon":
        values = (values * unit).to_value(u.deg)
        values = -((180.0 - values) % 360.0 - 180.0)  # wrap into (-180, 180]
        return values, "deg"
    return values, str(raw)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges, shape ``(n + 1,)``, from ascending pixel centres, shape ``(n,)``."""
    mids = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - mids[0]], mids, [2 * centres[-1] - mids[-1]]])


def _prepare(da, dims: tuple[str, str], what: str):
    """Sorted edges of both dims, their unit labels and the data, shape ``(dims[0], dims[1])``."""
    data = np.asarray(da.transpose(*dims).values, dtype=float)
    edges, labels = [], []
    for axis_index, dim in enumerate(dims):
        values, label = _axis(da, dim, what)
        order = np.argsort(values, kind="stable")
        values = values[order]
        if np.any(np.diff(values) <= 0):
            raise ValueError(f"{what} coordinate '{dim}' has repeated values; each pixel needs its own position")
        data = np.take(data, order, axis=axis_index)
        edges.append(_edges(values))
        labels.append(label)
    if not np.any(np.isfinite(data)):
        raise ValueError(f"{what} has no finite values (all NaN or inf): nothing to draw")
    return edges, labels, np.ma.masked_invalid(data)


def _data_units(da, what: str, density: bool) -> str:
    raw = da.attrs.get("units")
    unit = _parse(raw, what, "Msun/pc3" if density else "K")
    if density and not (unit.is_equivalent(u.kg / u.m**3) or unit.is_equivalent(u.m**-3)):
        raise ValueError(
            f"{what} is in {raw!r}, which is not a density; expected a mass density such as "
            "'Msun/pc3' or an H2 number density such as 'cm-3'"
        )
    return str(raw)


def _quantity_name(da, units: str, default: str) -> str:
    if da.attrs.get("long_name"):
        return str(da.attrs["long_name"])
    unit = _parse(units, "data", "K")
    if default == "T_B" and not unit.is_equivalent(u.K):
        return "brightness"
    if default == "ρ_H2" and unit.is_equivalent(u.m**-3):
        return "n_H2"
    return default


def _norm(stretch, data, vmin=None, vmax=None, linear_width=None) -> mcolors.Normalize:
    """Colour normalisation for ``data`` (any shape, same unit as vmin/vmax/linear_width)."""
    if isinstance(stretch, mcolors.Normalize):
        return stretch
    if stretch not in STRETCHES:
        raise ValueError(f"stretch={stretch!r} is not known; choose one of {STRETCHES} or pass a Normalize")
    finite = np.ma.masked_invalid(np.asarray(data, dtype=float)).compressed()
    if finite.size == 0:
        raise ValueError("the data have no finite values (all NaN or inf): nothing to draw")
    lo = float(np.min(finite)) if vmin is None else float(vmin)
    if vmin is None and stretch == "asinh" and lo > 0:
        lo = 0.0  # non-negative maps (densities) start at zero
    hi = float(np.max(finite)) if vmax is None else float(vmax)
    if lo > hi:
        raise ValueError(f"vmin ({lo}) is larger than vmax ({hi}); swap them")
    if lo == hi:
        lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
    if stretch == "linear":
        return mcolors.Normalize(vmin=lo, vmax=hi)
    if stretch == "log":
        positive = finite[finite > 0]
        if hi <= 0 or (lo <= 0 and positive.size == 0):
            raise ValueError("stretch='log' needs positive values; use stretch='asinh' for data with zeros")
        return mcolors.LogNorm(vmin=lo if lo > 0 else float(np.min(positive)), vmax=hi)
    width = float(linear_width) if linear_width is not None else max(abs(lo), abs(hi)) / 20.0
    return mcolors.AsinhNorm(linear_width=width if width > 0 else 1.0, vmin=lo, vmax=hi)


def _cmap(cmap) -> mcolors.Colormap:
    """A copy of the colormap whose NaN (bad) colour is fully transparent."""
    return plt.get_cmap(cmap).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def _spread_ticks(ticks, vmin: float, vmax: float, linear_width: float, min_gap: float) -> np.ndarray:
    """The ``ticks`` inside ``[vmin, vmax]`` that lie at least ``min_gap`` apart on an asinh bar.

    Positions are fractions of the bar length, ``asinh(x / linear_width)`` rescaled to 0..1.
    Zero is kept first, then ticks of larger magnitude, so the small ticks crowding zero
    (0.01 and 0.1 next to 0) are the ones dropped.
    """
    lo, hi = sorted((float(vmin), float(vmax)))
    ticks = np.asarray(ticks, dtype=float)
    span = hi - lo
    ticks = ticks[(ticks >= lo - 1e-9 * span) & (ticks <= hi + 1e-9 * span)]
    ends = np.arcsinh(np.array([lo, hi]) / linear_width)
    if ticks.size < 2 or ends[1] <= ends[0]:
        return ticks
    position = (np.arcsinh(ticks / linear_width) - ends[0]) / (ends[1] - ends[0])
    kept: list[int] = []
    for index in sorted(range(ticks.size), key=lambda i: (ticks[i] != 0, -abs(ticks[i]))):
        if all(abs(position[index] - position[other]) >= min_gap for other in kept):
            kept.append(index)
    return np.sort(ticks[kept])


class _SpreadAsinhLocator(AsinhLocator):
    """AsinhLocator whose tick labels do not collide on a colorbar.

    An asinh stretch packs 0, 0.01 and 0.1 into the bottom few percent of the bar, where
    their labels print over each other.  Ticks closer than ``min_fraction`` of the bar length
    (or than one label height on the drawn bar, when that is more) are dropped.
    """

    def __init__(self, linear_width: float, numticks: int = 7, min_fraction: float = 0.06) -> None:
        super().__init__(linear_width, numticks=numticks)
        self.min_fraction = float(min_fraction)

    def _min_gap(self) -> float:
        """Smallest allowed tick spacing as a fraction of the bar length."""
        axis = self.axis
        axes = getattr(axis, "axes", None)
        if axes is None:
            return self.min_fraction
        from matplotlib.font_manager import FontProperties

        vertical = axis.axis_name == "y"
        length = axes.bbox.height if vertical else axes.bbox.width  # pixels
        size = plt.rcParams["ytick.labelsize" if vertical else "xtick.labelsize"]
        label = FontProperties(size=size).get_size_in_points() * axes.figure.dpi / 72.0
        if not vertical:
            label *= 4.0  # horizontal bars: labels are a few characters wide
        return max(self.min_fraction, 1.25 * label / length) if length > 0 else self.min_fraction

    def __call__(self):
        ticks = super().__call__()
        vmin, vmax = self.axis.get_view_interval()
        return _spread_ticks(ticks, vmin, vmax, self.linear_width, self._min_gap())


def _colorbar(ax, mesh, label: str, pad: float = 0.05):
    """Colorbar of ``mesh`` labelled ``label``; asinh stretches get few, plainly written ticks
    spaced so that their labels do not overlap."""
    colorbar = ax.figure.colorbar(mesh, ax=ax, label=label, pad=pad)
    if isinstance(mesh.norm, mcolors.AsinhNorm):
        colorbar.set_ticks(_SpreadAsinhLocator(mesh.norm.linear_width, numticks=7))
        colorbar.ax.yaxis.set_major_formatter("{x:.3g}")
    return colorbar


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def _new_axes(ax, polar: bool):
    if ax is None:
        _, ax = plt.subplots(subplot_kw={"projection": "polar"} if polar else None, layout="constrained")
    return ax


# ------------------------------------------------------------------------- PV image
def _reduce_ppv(cube, reduce: str):
    """PV image ``(lon, velocity)`` from a PPV cube ``(lon, lat, velocity)`` by nanmean/nanmax over lat."""
    if reduce not in ("mean", "max"):
        raise ValueError(f"got a PPV cube with dims {tuple(cube.dims)}; "
                         f"pass reduce='mean' or 'max', not {reduce!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN sightlines stay NaN
        func = np.nanmean if reduce == "mean" else np.nanmax
        reduced = xr.apply_ufunc(func, cube, input_core_dims=[["lat"]], kwargs={"axis": -1})
    return reduced.assign_attrs(cube.attrs)


def pv_image(pv, ax=None, stretch="asinh", cmap="inferno", vmin=None, vmax=None, title=None,
             reduce=None, linear_width=None, colorbar=True):
    """Draw a position-velocity image with Galactic longitude increasing to the left.

    Parameters
    ----------
    pv:
        DataArray with dims ``(lon, velocity)`` in any order, brightness in ``attrs["units"]``
        (e.g. K), coordinates with units (lon: an angle, velocity: a speed, shown in the
        coordinate's own unit).  A PPV cube ``(lon, lat, velocity)`` is accepted with
        ``reduce="mean"`` (nanmean over lat) or ``reduce="max"``.
    ax:
        Cartesian Axes to draw on; a new figure is made when ``None``.
    stretch:
        ``"asinh"`` (default; linear below ``linear_width``, logarithmic above), ``"linear"``,
        ``"log"`` or a :class:`matplotlib.colors.Normalize`.
    vmin, vmax, linear_width:
        Colour limits and asinh linear width, in the data unit; default: data min/max and
        1/20 of the largest absolute limit.

    Returns the Axes; the image is ``ax.collections[0]`` (a QuadMesh with ``.colorbar``).
    """
    if isinstance(pv, xr.DataArray) and set(pv.dims) == {"lon", "lat", "velocity"}:
        pv = _reduce_ppv(pv, reduce)
    _check_dims(pv, ("lon", "velocity"), "PV image", " (or a PPV cube with lat and reduce='mean')")
    units = _data_units(pv, "PV image", density=False)
    (v_edges, lon_edges), (v_unit, _), data = _prepare(pv, ("velocity", "lon"), "PV image")
    ax = _new_axes(ax, polar=False)
    mesh = ax.pcolormesh(lon_edges, v_edges, data, norm=_norm(stretch, data, vmin, vmax, linear_width),
                         cmap=_cmap(cmap), shading="flat", rasterized=True)
    ax.set_xlim(lon_edges[-1], lon_edges[0])  # positive longitude on the left
    ax.set_ylim(v_edges[0], v_edges[-1])
    ax.set_xlabel("Galactic longitude [deg]")
    ax.set_ylabel(f"v_LSR [{v_unit}]")
    if colorbar:
        _colorbar(ax, mesh, f"{_quantity_name(pv, units, 'T_B')} [{units}]")
    if title is not None:
        ax.set_title(title)
    return ax


# ------------------------------------------------------------------------ top-down
def _observer_distance(td, observer_distance) -> float:
    value = td.attrs.get("observer_distance", 8277.0) if observer_distance is None else observer_distance
    if isinstance(value, u.Quantity):
        value = value.to_value(u.pc)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"observer_distance must be a number in pc, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"observer_distance must be a positive distance in pc, got {value}")
    return value


def _fit_wedge(ax) -> None:
    """Frame a polar Axes tightly around its wedge.

    Matplotlib sizes a polar wedge's frame so that it always contains r = 0, which shrinks a
    few-degree wedge far from the observer to a sliver; this replaces the frame computation
    of this one Axes by the bounding box of the annulus sector alone (equal aspect kept).
    """
    def wedge_points():
        theta_min, theta_max = ax.viewLim.intervalx
        theta = np.linspace(theta_min, theta_max, 181) * ax.get_theta_direction() + ax.get_theta_offset()
        r_origin, r_min, r_max = ax.get_rorigin(), ax.get_rmin(), ax.get_rmax()
        inner = 0.5 * max(r_min - r_origin, 0.0) / (r_max - r_origin)
        radius = np.array([inner, 0.5])[:, None]
        x, y = 0.5 + radius * np.cos(theta), 0.5 + radius * np.sin(theta)
        lower, upper = np.array([x.min(), y.min()]), np.array([x.max(), y.max()])
        half = 0.5 * (upper - lower).max()
        centre = 0.5 * (upper + lower)
        return np.array([centre - half, centre + half])

    ax.axesLim.get_points = wedge_points
    ax.axesLim.invalidate()


def _draw_top_down(ax, prepared, kind, norm, cmap, label, observer_distance, colorbar):
    """Draw a top-down map prepared by ``_prepare(td, ("distance", "lon"))``; returns the QuadMesh."""
    (d_edges, lon_edges), (d_unit, _), data = prepared
    if kind == "polar":
        if getattr(ax, "name", None) != "polar":
            raise ValueError("kind='polar' needs a polar Axes: make it with "
                             "fig.add_subplot(projection='polar'), or use kind='cartesian'")
        mesh = ax.pcolormesh(np.deg2rad(lon_edges), d_edges, data, norm=norm, cmap=cmap,
                             shading="flat", rasterized=True)
        ax.set_theta_zero_location("N")  # line of sight to the Galactic Centre points up
        ax.set_theta_direction(1)  # positive longitude to the left, as in the PV image
        ax.set_thetamin(lon_edges[0])
        ax.set_thetamax(lon_edges[-1])
        ax.set_rorigin(0.0)  # true geometry: r is the distance from the observer
        ax.set_rmin(d_edges[0])
        ax.set_rmax(d_edges[-1])
        ax.set_rlabel_position(lon_edges[0])  # keeps constrained layout sane before the first draw
        _fit_wedge(ax)
        ax.set_xlabel("Galactic longitude [deg]")
        ax.set_ylabel(f"heliocentric distance [{d_unit}]")
        ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lon_edges[0], lon_edges[-1])
        ticks = ticks[(ticks >= lon_edges[0] - 1e-9) & (ticks <= lon_edges[-1] + 1e-9)]
        ax.set_xticks(np.deg2rad(ticks), [f"{tick:g}°" for tick in ticks])
        _note(ax, "↓ observer (Sun) at r = 0")
    elif kind == "cartesian":
        if getattr(ax, "name", None) == "polar":
            raise ValueError("kind='cartesian' needs a rectilinear Axes, got a polar one; use kind='polar'")
        d_pc = (d_edges * _parse(d_unit, "distance", "pc")).to_value(u.pc)
        x, y = galactocentric_xy(d_pc[:, None], lon_edges[None, :], observer_distance)
        mesh = ax.pcolormesh(x, y, data, norm=norm, cmap=cmap, shading="flat", rasterized=True)
        ax.set_aspect("equal")
        ax.autoscale_view()
        if not ax.xaxis_inverted():
            ax.invert_xaxis()  # +x (positive longitude) to the left, as in the PV image
        ax.set_xlabel("x [pc]")
        ax.set_ylabel("y [pc]")
        _note(ax, f"↓ Sun at (0, {-observer_distance:.0f}) pc")
    else:
        raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    if colorbar:
        _colorbar(ax, mesh, label, pad=0.12 if kind == "polar" else 0.05)
    return mesh


def top_down(td, kind="polar", ax=None, stretch="asinh", cmap="inferno", vmin=None, vmax=None,
             title=None, linear_width=None, colorbar=True, observer_distance=None):
    """Draw a top-down density map as seen from the observer or from above the Galaxy.

    Parameters
    ----------
    td:
        DataArray with dims ``(distance, lon)`` in any order: heliocentric distance (a length,
        e.g. pc) and Galactic longitude (an angle); data in a density unit in
        ``attrs["units"]`` (e.g. ``"Msun/pc3"`` or ``"cm-3"``).
    kind:
        ``"polar"``: a wedge with theta = longitude (positive to the left) and r = distance
        from the observer at the origin, the true geometry.  ``"cartesian"``: Galactocentric
        ``x, y`` in pc from :func:`iris_nb.grids.galactocentric_xy` (GC at the origin, Sun at
        ``(0, -R0)`` below the map, +x to the left), drawn on the curvilinear pixel grid.
    ax:
        Axes to draw on (polar for ``kind="polar"``); a new figure is made when ``None``.
    stretch, cmap, vmin, vmax, linear_width:
        As in :func:`pv_image`; limits in the data unit.
    observer_distance:
        Sun - Galactic Centre distance in pc; default ``td.attrs["observer_distance"]`` or 8277.

    Returns the Axes; the image is ``ax.collections[0]`` (a QuadMesh with ``.colorbar``).
    """
    _check_dims(td, ("distance", "lon"), "top-down map")
    units = _data_units(td, "top-down map", density=True)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    r0 = _observer_distance(td, observer_distance)
    prepared = _prepare(td, ("distance", "lon"), "top-down map")
    norm = _norm(stretch, prepared[2], vmin, vmax, linear_width)
    ax = _new_axes(ax, polar=kind == "polar")
    label = f"{_quantity_name(td, units, 'ρ_H2')} [{units}]"
    _draw_top_down(ax, prepared, kind, norm, _cmap(cmap), label, r0, colorbar)
    if title is not None:
        ax.set_title(title)
    return ax


# -------------------------------------------------------------------- multi-panel
def _panels(kinds: list[str], figsize):
    """A constrained-layout Figure with one row of Axes, polar where ``kinds[i] == "polar"``."""
    for kind in kinds:
        if kind not in KINDS + ("pv",):
            raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    fig = plt.figure(figsize=figsize or (5.5 * len(kinds), 4.8), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)
    return fig, [fig.add_subplot(1, len(kinds), i + 1, projection="polar" if kind == "polar" else None)
                 for i, kind in enumerate(kinds)]


def side_by_side(pv, td, kind="polar", figsize=None, title=None, pv_kwargs=None, td_kwargs=None):
    """PV image (left) and top-down map (right) in one Figure.

    ``pv``: DataArray ``(lon, velocity)`` (or a PPV cube with ``pv_kwargs={"reduce": "mean"}``),
    brightness units; ``td``: DataArray ``(distance, lon)``, density units.  Extra keyword
    arguments go to :func:`pv_image` and :func:`top_down` through ``pv_kwargs``/``td_kwargs``.
    Returns the Figure; ``fig.axes[0]`` is the PV image, ``fig.axes[1]`` the top-down map.
    """
    _check_dims(td, ("distance", "lon"), "top-down map")
    fig, (pv_ax, td_ax) = _panels(["pv", kind], figsize)
    pv_image(pv, ax=pv_ax, **(pv_kwargs or {}))
    top_down(td, kind=kind, ax=td_ax, **(td_kwargs or {}))
    if title is not None:
        fig.suptitle(title)
    return fig


def ensemble(ds, kind="polar", stretch="asinh", cmap="inferno", std_cmap="viridis", figsize=None,
             title=None, observer_distance=None):
    """Mean and standard deviation of an ensemble of reversions, side by side.

    ``ds``: Dataset with variables ``mean`` and ``std``, each with dims ``(distance, lon)``
    (pc, deg) and a density unit in ``attrs["units"]`` (``std`` may inherit it from ``mean``
    or from ``ds.attrs``).  The std map uses a linear stretch starting at 0.
    Returns the Figure; ``fig.axes[0]`` shows the mean, ``fig.axes[1]`` the std.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ensemble() needs an xarray.Dataset with 'mean' and 'std', got {type(ds).__name__}")
    missing = [name for name in ("mean", "std") if name not in ds.data_vars]
    if missing:
        raise ValueError(f"ensemble Dataset lacks {missing}; it has {list(ds.data_vars)} "
                         "(expected 'mean' and 'std')")
    fallback = ds.attrs.get("units")
    mean, std = (ds[name] for name in ("mean", "std"))
    mean = mean if mean.attrs.get("units") else mean.assign_attrs(units=fallback)
    std = std if std.attrs.get("units") else std.assign_attrs(units=mean.attrs.get("units"))
    for name, da in (("mean", mean), ("std", std)):
        _check_dims(da, ("distance", "lon"), f"ensemble '{name}'")
        _data_units(da, f"ensemble '{name}'", density=True)
        _prepare(da, ("distance", "lon"), f"ensemble '{name}'")  # coordinates checked before drawing
    fig, (mean_ax, std_ax) = _panels([kind, kind], figsize)
    r0 = observer_distance if observer_distance is not None else ds.attrs.get("observer_distance")
    top_down(mean, kind=kind, ax=mean_ax, stretch=stretch, cmap=cmap, title="ensemble mean", observer_distance=r0)
    top_down(std, kind=kind, ax=std_ax, stretch="linear", cmap=std_cmap, vmin=0.0, title="ensemble std",
             observer_distance=r0)
    std_ax.collections[0].colorbar.set_label(f"σ({_quantity_name(std, std.attrs['units'], 'ρ_H2')}) "
                                             f"[{std.attrs['units']}]")
    if title is not None:
        fig.suptitle(title)
    return fig


def truth_vs_prediction(truth, prediction, kind="polar", stretch="asinh", cmap="inferno",
                        residual_cmap="RdBu_r", figsize=None, title=None, observer_distance=None):
    """True map, predicted map (shared colour limits) and residual prediction - truth.

    ``truth`` and ``prediction``: DataArrays ``(distance, lon)`` on the same pixels, density
    units in ``attrs["units"]``; the prediction is converted to the truth's unit when they
    differ (mass densities only).  The residual uses a diverging colormap with limits
    symmetric about 0.  Returns the Figure with the three maps as ``fig.axes[0:3]``.
    """
    _check_dims(truth, ("distance", "lon"), "truth")
    _check_dims(prediction, ("distance", "lon"), "prediction")
    units = _data_units(truth, "truth", density=True)
    pred_units = _data_units(prediction, "prediction", density=True)
    try:
        scale = (1.0 * _parse(pred_units, "prediction", "Msun/pc3")).to_value(_parse(units, "truth", "Msun/pc3"))
    except u.UnitConversionError:
        raise ValueError(f"prediction is in {pred_units!r} and truth in {units!r}; "
                         "convert one to the other's unit first") from None
    prediction = (prediction * scale).assign_attrs({**prediction.attrs, "units": units})
    for dim in ("distance", "lon"):  # put the prediction's pixels in the truth's order
        a, _ = _axis(truth, dim, "truth")
        b, _ = _axis(prediction, dim, "prediction")
        if a.shape != b.shape or not np.allclose(np.sort(a), np.sort(b), rtol=1e-6, atol=1e-9):
            raise ValueError(f"truth and prediction have different '{dim}' pixels ({a.size} vs {b.size} values); "
                             "regrid one onto the other first")
        index = np.argsort(b)[np.argsort(np.argsort(a))]
        prediction = prediction.isel({dim: index}).assign_coords({dim: truth[dim]})
    prediction = prediction.transpose(*truth.dims)
    residual = (prediction - truth).assign_attrs(units=units, long_name="prediction − truth")
    norm = _norm(stretch, np.stack([truth.values, prediction.values]))
    limit = float(np.nanmax(np.abs(residual.values))) if np.any(np.isfinite(residual.values)) else 1.0
    res_norm = _norm("linear", np.ma.masked_invalid(residual.values), -limit, limit)
    r0 = _observer_distance(truth, observer_distance)
    prepared = [_prepare(da, ("distance", "lon"), name)
                for da, name in ((truth, "truth"), (prediction, "prediction"), (residual, "residual"))]
    fig, axes = _panels([kind] * 3, figsize)
    for ax, da, name, ready, panel_norm, panel_cmap in (
            (axes[0], truth, "truth", prepared[0], norm, cmap),
            (axes[1], prediction, "prediction", prepared[1], norm, cmap),
            (axes[2], residual, "residual", prepared[2], res_norm, residual_cmap)):
        label = f"{_quantity_name(da, units, 'ρ_H2')} [{units}]"
        _draw_top_down(ax, ready, kind, panel_norm, _cmap(panel_cmap), label, r0, True)
        ax.set_title(name)
    if title is not None:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------- training
def _series(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of per-epoch values, got shape {array.shape}")
    return array


def loss_curves(train_losses, validation_losses=None, learning_rates=None, ax=None, epochs=None,
                loss_label="loss", loss_units="dimensionless"):
    """Training (and validation) loss per epoch on a log axis, learning rate on a twin axis.

    ``train_losses``, ``validation_losses``: 1-D sequences, one value per epoch, in
    ``loss_units`` (the paper's ScaledDensityLoss is dimensionless); non-positive values are
    left out of the log axis.  ``learning_rates``: 1-D sequence per epoch (dimensionless
    Adam step size).  ``epochs``: x values (default 1, 2, ...), shared by all series, which
    must then have the same length.  Returns the loss Axes; the learning-rate Axes, if any,
    is its twin in ``ax.figure.axes``.
    """
    train = _series(train_losses, "train_losses")
    series = [("train", train, "-")]
    if validation_losses is not None:
        series.append(("validation", _series(validation_losses, "validation_losses"), "--"))
    lr = None if learning_rates is None else _series(learning_rates, "learning_rates")
    x = None if epochs is None else _series(epochs, "epochs")
    for name, values in [(n, v) for n, v, _ in series] + [("learning_rates", lr)]:
        if x is not None and values is not None and values.size != x.size:
            raise ValueError(f"{name} has {values.size} values but epochs has {x.size}; give one value per epoch")
    if not any(np.any(values[np.isfinite(values)] > 0) for _, values, _ in series):
        raise ValueError("no positive finite loss to draw on a log axis; check the loss values")
    ax = _new_axes(ax, polar=False)
    handles = []
    for name, values, style in series:
        xs = np.arange(1, values.size + 1) if x is None else x
        handles += ax.plot(xs, np.where(values > 0, values, np.nan), style, marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{loss_label} [{loss_units}]")
    if lr is not None:
        lr_ax = ax.twinx()
        xs = np.arange(1, lr.size + 1) if x is None else x
        handles += lr_ax.step(xs, lr, where="post", color="0.4", linestyle=":", label="learning rate")
        if np.all(lr[np.isfinite(lr)] > 0):
            lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate [dimensionless]")
    ax.legend(handles=handles, loc="upper right")
    return ax
