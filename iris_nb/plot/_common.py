"""Shared pieces of the plotting views: unit checks and labels, colour norms, colorbar ticks.

Nothing here is advertised; :mod:`iris_nb.plot.maps`, :mod:`iris_nb.plot.panels` and
:mod:`iris_nb.plot.training` build the public views from these helpers.  Inputs follow
DESIGN.md section 3: DataArrays whose data and coordinates carry astropy-parsable
``attrs["units"]``; longitude is converted to deg and wrapped to (-180, 180].
"""

from __future__ import annotations

import astropy.units as u
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
from matplotlib.ticker import AsinhLocator
import numpy as np
import xarray as xr

from ..conventions import wrap_lon
from ..regrid import axis_edges

STRETCHES = ("asinh", "linear", "log")
KINDS = ("polar", "cartesian")
_AXES = {  # dim -> (axis label, unit it must be equivalent to, example unit string)
    "lon": ("Galactic longitude", u.deg, "deg"),
    "lat": ("Galactic latitude", u.deg, "deg"),
    "velocity": ("v_LSR", u.km / u.s, "km/s"),
    "distance": ("heliocentric distance", u.pc, "pc"),
}


# ------------------------------------------------------------------ validation helpers
def parse_plot_unit(value, what: str, example: str) -> u.UnitBase:
    """Astropy unit from an ``attrs["units"]`` value, or a ValueError saying how to set it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{what} has no units; set attrs['units'] (for example {example!r})")
    try:
        return u.Unit(str(value).replace("Msun", "solMass"), parse_strict="raise")
    except (ValueError, TypeError):
        raise ValueError(f"{what} has units {value!r} that astropy cannot parse; use e.g. {example!r}") from None


def check_dims(da, dims: tuple[str, ...], what: str, hint: str = "") -> None:
    if not isinstance(da, xr.DataArray):
        extra = " (pick a variable, e.g. ds['mean'])" if isinstance(da, xr.Dataset) else ""
        raise TypeError(f"{what} must be an xarray.DataArray, got {type(da).__name__}{extra}")
    if set(da.dims) != set(dims):
        raise ValueError(
            f"{what} has dims {tuple(da.dims)}, expected {dims} in any order{hint}; "
            "rename dimensions with .rename({'old': 'new'})"
        )


def axis_values(da, dim: str, what: str) -> tuple[np.ndarray, str]:
    """Coordinate values of ``dim`` (lon converted to deg and wrapped) and their unit label."""
    name, unit_needed, example = _AXES[dim]
    if dim not in da.coords:
        raise ValueError(
            f"{what} has no coordinate values along '{dim}'; add them with "
            f".assign_coords({dim}=(('{dim}',), values, {{'units': '{example}'}}))"
        )
    raw = da[dim].attrs.get("units")
    unit = parse_plot_unit(raw, f"{what} coordinate '{dim}'", example)
    if not unit.is_equivalent(unit_needed):
        raise ValueError(f"{what} coordinate '{dim}' is in {raw!r}, which is not a {name} unit like {example!r}")
    values = np.asarray(da[dim].values, dtype=float)
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"{what} coordinate '{dim}' needs at least 2 finite values, "
                         f"got {values.size} ({values[:4]})")
    if dim == "lon":
        values = (values * unit).to_value(u.deg)
        values = wrap_lon(values)
        return values, "deg"
    if dim == "lat":
        return (values * unit).to_value(u.deg), "deg"
    return values, str(raw)



def prepare_image(da, dims: tuple[str, str], what: str):
    """Sorted edges of both dims, their unit labels and the data, shape ``(dims[0], dims[1])``."""
    data = np.asarray(da.transpose(*dims).values, dtype=float)
    edges, labels = [], []
    for axis_index, dim in enumerate(dims):
        values, label = axis_values(da, dim, what)
        order = np.argsort(values, kind="stable")
        values = values[order]
        if np.any(np.diff(values) <= 0):
            raise ValueError(f"{what} coordinate '{dim}' has repeated values; each pixel needs its own position")
        data = np.take(data, order, axis=axis_index)
        edges.append(axis_edges(values))
        labels.append(label)
    if not np.any(np.isfinite(data)):
        raise ValueError(f"{what} has no finite values (all NaN or inf): nothing to draw")
    return edges, labels, np.ma.masked_invalid(data)


def data_units(da, what: str, density: bool) -> str:
    raw = da.attrs.get("units")
    unit = parse_plot_unit(raw, what, "Msun/pc3" if density else "K")
    if density and not (unit.is_equivalent(u.kg / u.m**3) or unit.is_equivalent(u.m**-3)):
        raise ValueError(
            f"{what} is in {raw!r}, which is not a density; expected a mass density such as "
            "'Msun/pc3' or an H2 number density such as 'cm-3'"
        )
    return str(raw)


def quantity_name(da, units: str, default: str) -> str:
    if da.attrs.get("long_name"):
        return str(da.attrs["long_name"])
    unit = parse_plot_unit(units, "data", "K")
    if default == "T_B" and not unit.is_equivalent(u.K):
        return "brightness"
    if default == "ρ_H2" and unit.is_equivalent(u.m**-3):
        return "n_H2"
    return default


# ----------------------------------------------------------------- colours and colorbars
def make_norm(stretch, data, vmin=None, vmax=None, linear_width=None) -> mcolors.Normalize:
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


def colormap(cmap) -> mcolors.Colormap:
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


def add_colorbar(ax, mesh, label: str, pad: float = 0.05):
    """Colorbar of ``mesh`` labelled ``label``; asinh stretches get few, plainly written ticks
    spaced so that their labels do not overlap."""
    colorbar = ax.figure.colorbar(mesh, ax=ax, label=label, pad=pad)
    if isinstance(mesh.norm, mcolors.AsinhNorm):
        colorbar.set_ticks(_SpreadAsinhLocator(mesh.norm.linear_width, numticks=7))
        colorbar.ax.yaxis.set_major_formatter("{x:.3g}")
    return colorbar


# ---------------------------------------------------------------------- axes and figures
_VIEW = "_iris_nb_view"  # attribute on an Axes recording what a view drew there


def remember_view(ax, kind: str, **info) -> None:
    """Record on ``ax`` which view drew it (``"polar"``, ``"cartesian"``, ``"pv"``, ``"lb"``)
    and the units of its data coordinates, so that overlays land in the same coordinates."""
    setattr(ax, _VIEW, {"kind": kind, **info})


def view_of(ax) -> dict:
    """What :func:`remember_view` recorded on ``ax`` (an empty dict for foreign Axes)."""
    return dict(getattr(ax, _VIEW, {}))


def add_note(ax, text: str) -> None:
    ax.text(0.5, 0.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def new_axes(ax, polar: bool):
    if ax is None:
        _, ax = plt.subplots(subplot_kw={"projection": "polar"} if polar else None, layout="constrained")
    return ax


def make_panels(kinds: list[str], figsize):
    """A constrained-layout Figure with one row of Axes, polar where ``kinds[i] == "polar"``."""
    for kind in kinds:
        if kind not in KINDS + ("pv",):
            raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    fig = plt.figure(figsize=figsize or (5.5 * len(kinds), 4.8), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)
    return fig, [fig.add_subplot(1, len(kinds), i + 1, projection="polar" if kind == "polar" else None)
                 for i, kind in enumerate(kinds)]


def observer_distance_pc(value) -> float:
    """The Sun - Galactic Centre distance in pc, from a number or an astropy length."""
    if isinstance(value, u.Quantity):
        value = value.to_value(u.pc)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"observer_distance must be a number in pc, got {value!r}") from None
    if not (np.isfinite(number) and number > 1000.0):
        raise ValueError(f"observer_distance is the Sun - Galactic Centre distance in pc (about 8277), got {number}")
    return number
