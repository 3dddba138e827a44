"""Published CMZ geometry drawn over the package's views, and l-b integrated-intensity maps.

:func:`overlay_orbits` draws the orbit models of :mod:`iris_nb.plot.orbits` on a top-down map
(:func:`~iris_nb.plot.top_down`, polar wedge or Cartesian ``x, y``), as l-v tracks on a PV
image (:func:`~iris_nb.plot.pv_image`) or as l-b tracks on an :func:`lb_map`, in the data
coordinates of that view.  :func:`lb_map` integrates a PPV cube over velocity (K km/s).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import xarray as xr

from ..grids import galactocentric_xy, get_grid
from ..regrid import axis_edges
from . import orbits as _orbits
from ._common import (
    add_colorbar,
    add_note,
    axis_values,
    check_dims,
    colormap,
    data_units,
    make_norm,
    new_axes,
    parse_plot_unit,
    prepare_image,
    quantity_name,
    remember_view,
    view_of,
)
from ._common import observer_distance_pc

__all__ = ["overlay_orbits", "lb_map", "integrated_intensity"]

OVERLAY_KINDS = ("top-down", "polar", "cartesian", "pv", "lb")
_COLORS = {"molinari2011": "cyan", "kdl2015": "lime"}
_LABELS = {"molinari2011": "Molinari+2011 ring", "kdl2015": "KDL15 orbit"}


# ------------------------------------------------------------------------ orbit overlays
def _orbit_names(orbits) -> list[str]:
    if orbits is None or (isinstance(orbits, str) and orbits.lower() == "all"):
        return list(_orbits.ORBITS)
    if isinstance(orbits, str):
        orbits = [orbits]
    try:
        names = list(orbits)
    except TypeError:
        raise TypeError(f"orbits must be 'all', a name or a list of names from {sorted(_orbits.ORBITS)}, "
                        f"got {type(orbits).__name__}") from None
    return [_orbits._canonical(name) for name in names]


def _overlay_kind(ax, kind) -> str:
    recorded = view_of(ax).get("kind")
    polar = getattr(ax, "name", None) == "polar"
    if kind is None:
        kind = recorded or ("polar" if polar else None)
        if kind is None:
            raise ValueError("cannot tell what this Axes shows; pass kind='pv' (l-v), 'lb' (l-b) or "
                             "'cartesian' (Galactocentric x, y in pc), or draw it with iris_nb.plot first")
    if kind not in OVERLAY_KINDS:
        raise ValueError(f"kind={kind!r} is not known; choose one of {OVERLAY_KINDS}")
    if kind == "top-down":
        kind = "polar" if polar else "cartesian"
    if (kind == "polar") != polar:
        raise ValueError(f"kind={kind!r} does not fit a {'polar' if polar else 'rectilinear'} Axes; "
                         "a polar wedge takes kind='polar', the other views a rectilinear Axes")
    return kind


def _observer_distance(ax, grid, observer_distance) -> float:
    if observer_distance is None and grid is not None:
        observer_distance = get_grid(grid).observer_distance
    if observer_distance is None:
        observer_distance = view_of(ax).get("observer_distance", _orbits.R0_DEFAULT)
    return observer_distance_pc(observer_distance)


def _unit_factor(unit: str, base: u.UnitBase, what: str) -> float:
    """How many ``unit`` make one ``base`` (the Axes unit recorded by the view)."""
    target = parse_plot_unit(unit, what, str(base))
    if not target.is_equivalent(base):
        raise ValueError(f"{what} is in {unit!r}, which cannot show {base}")
    return float((1.0 * base).to_value(target))


def _velocity_scale(ax) -> float:
    """Factor from km/s to the velocity unit of a PV image's vertical axis."""
    return _unit_factor(view_of(ax).get("velocity_unit", "km/s"), u.km / u.s, "the PV image's velocity axis")


def _orbit_xy(ds, kind: str, ax, r0: float):
    """The orbit's points in the data coordinates of the view, two arrays (NaN = not drawn)."""
    lon = ds["lon"].values
    if kind == "cartesian":  # where top_down puts a pixel at (distance, lon)
        return galactocentric_xy(ds["distance"].values, lon, r0)
    if kind == "polar":
        scale = _unit_factor(view_of(ax).get("distance_unit", "pc"), u.pc, "the wedge's distance axis")
        r = ds["distance"].values * scale
        low, high = sorted(ax.get_ylim())
        r = np.where((r >= low) & (r <= high), r, np.nan)  # below r_min a polar Axes would fold the line over
        return np.deg2rad(lon), r
    if kind == "pv":
        return lon, ds["velocity"].values * _velocity_scale(ax)
    return lon, ds["lat"].values


def _split_near_far(x, y, near):
    """Two copies of the line: near-side points only and far-side points only (joined at the
    crossings), NaN elsewhere, so the far side can be drawn dashed."""
    near = np.asarray(near, dtype=bool)
    grow = near | np.r_[near[1:], False] | np.r_[False, near[:-1]]
    far = ~near
    grow_far = far | np.r_[far[1:], False] | np.r_[False, far[:-1]]
    return ((np.where(grow, x, np.nan), np.where(grow, y, np.nan)),
            (np.where(grow_far, x, np.nan), np.where(grow_far, y, np.nan)))


def _draw_landmarks(ax, kind: str, scale: float) -> None:
    marks = _orbits.landmarks()
    y_name = "velocity" if kind == "pv" else "lat"
    x, y = marks["lon"].values, marks[y_name].values * (scale if kind == "pv" else 1.0)
    ax.scatter(x, y, marker="x", s=22, color="white", linewidths=1.8, zorder=4, gid="landmarks")
    ax.scatter(x, y, marker="x", s=18, color="black", linewidths=0.9, zorder=5, label="_nolegend_")
    for name, xi, yi in zip(marks["landmark"].values, x, y):
        ax.annotate(str(name), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=7, color="white",
                    clip_on=True, annotation_clip=True, zorder=5,
                    bbox={"facecolor": "black", "alpha": 0.45, "edgecolor": "none", "pad": 0.5})


def overlay_orbits(ax, orbits="all", kind=None, grid=None, observer_distance=None, landmarks=None,
                   colors=None, legend=True, samples=None, **line_kwargs):
    """Draw published CMZ orbit models (and landmark clouds) over an existing view.

    Parameters
    ----------
    ax:
        An Axes drawn by :func:`~iris_nb.plot.top_down` (polar or Cartesian),
        :func:`~iris_nb.plot.pv_image` or :func:`lb_map`; any other Axes with ``kind`` given
        (then a PV image in lon [deg] x v_LSR [km/s], a Cartesian map in x, y [pc], a wedge in
        theta = lon [rad], r = distance [pc]).
    orbits:
        ``"all"`` (default), a name or a list of names from
        :data:`iris_nb.plot.orbits.ORBITS` (``"molinari2011"``, ``"kdl2015"``).
    kind:
        ``"top-down"`` (polar or Cartesian, from the Axes), ``"polar"``, ``"cartesian"``,
        ``"pv"`` (l-v tracks) or ``"lb"`` (l-b tracks); default: what the view recorded.
    grid, observer_distance:
        R0 in pc for placing the orbits: ``observer_distance``, else ``grid.observer_distance``,
        else the map's own R0 (top-down views), else 8277.
    landmarks:
        Mark Sgr A*, Sgr B2, Sgr C, the 20 and 50 km/s clouds and the Brick (l-v and l-b views
        only: their distances are too uncertain for a top-down map); default True there.
    colors:
        ``{name: colour}`` overriding cyan (Molinari) and lime (KDL15).
    samples:
        Points per orbit, as in :func:`iris_nb.plot.orbits.orbit`.
    line_kwargs:
        Passed to :meth:`~matplotlib.axes.Axes.plot` (e.g. ``linewidth``, ``alpha``).

    In the l-v and l-b views, where near and far side overlap, the near side (in front of the
    Galactic Centre, ``y < 0``) is drawn solid and the far side dashed.  The view limits are
    kept.  Returns the Axes; each orbit's lines carry ``gid`` = the orbit's name.
    """
    names = _orbit_names(orbits)
    kind = _overlay_kind(ax, kind)
    r0 = _observer_distance(ax, grid, observer_distance)
    colors = {**_COLORS, **(colors or {})}
    landmarks = kind in ("pv", "lb") if landmarks is None else bool(landmarks)
    if landmarks and kind not in ("pv", "lb"):
        raise ValueError("landmarks have no reliable distances and are drawn only on l-v ('pv') "
                         "and l-b ('lb') views")
    has_data = bool(ax.collections or ax.lines or ax.images)
    limits = (ax.get_xlim(), ax.get_ylim())
    style = {"linewidth": 1.3, **line_kwargs}
    for name in names:
        ds = _orbits.orbit(name, observer_distance=r0, samples=samples)
        x, y = _orbit_xy(ds, kind, ax, r0)
        color = colors.get(name, "white")
        if kind in ("pv", "lb"):
            (nx, ny), (fx, fy) = _split_near_far(x, y, ds["y"].values < 0)
            ax.plot(nx, ny, color=color, label=_LABELS[name], gid=name, **style)
            ax.plot(fx, fy, color=color, linestyle="--", label="_nolegend_", gid=name, **style)
        else:
            ax.plot(x, y, color=color, label=_LABELS[name], gid=name, **style)
    if landmarks:
        _draw_landmarks(ax, kind, _velocity_scale(ax) if kind == "pv" else 1.0)
    if has_data:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    if legend and names:
        title = "dashed: far side" if kind in ("pv", "lb") else None
        ax.legend(loc="upper right", fontsize=7, title=title, title_fontsize=7, framealpha=0.6)
    return ax


# ----------------------------------------------------------------------------- l-b maps
def _check_ppv(cube) -> None:
    if not isinstance(cube, xr.DataArray):
        raise TypeError(f"lb_map needs a PPV cube as an xarray.DataArray (lon, lat, velocity), "
                        f"got {type(cube).__name__}")
    if "velocity" not in cube.dims and {"lon", "lat"} <= set(cube.dims):
        raise ValueError(f"the cube has dims {tuple(cube.dims)} and no 'velocity' axis to integrate over; "
                         "pass the PPV cube (lon, lat, velocity) itself, or rename its spectral dim "
                         "to 'velocity'")
    check_dims(cube, ("lon", "lat", "velocity"), "PPV cube")


def _velocity_weights(edges_kms: np.ndarray, velocity_range) -> np.ndarray:
    """Width (km/s) of each channel inside ``velocity_range`` (all of it when None)."""
    lower, upper = edges_kms[:-1], edges_kms[1:]
    if velocity_range is None:
        return upper - lower
    try:
        low, high = (v.to_value(u.km / u.s) if isinstance(v, u.Quantity) else float(v) for v in velocity_range)
    except (TypeError, ValueError, u.UnitConversionError):
        raise ValueError(f"velocity_range must be (low, high) in km/s (or speed Quantities), "
                         f"got {velocity_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"velocity_range must be (low, high) with low < high, got ({low}, {high}) km/s")
    weights = np.clip(np.minimum(upper, high) - np.maximum(lower, low), 0.0, None)
    if not np.any(weights > 0):
        raise ValueError(f"velocity_range ({low:g}, {high:g}) km/s misses the cube's channels, "
                         f"which span {edges_kms[0]:g} to {edges_kms[-1]:g} km/s")
    return weights


def integrated_intensity(cube, velocity_range=None) -> xr.DataArray:
    """Velocity-integrated intensity (moment 0) of a PPV cube.

    ``cube``: DataArray with dims ``(lon, lat, velocity)`` in any order, brightness in
    ``attrs["units"]`` (e.g. K), velocity coordinate in any speed unit.  Each channel counts
    with its width (from the channel edges, km/s), or with the part of it inside
    ``velocity_range = (low, high)`` km/s.  NaN channels are left out; a sightline with no
    finite channel in the range stays NaN.  Returns a DataArray ``(lat, lon)`` (deg) in
    ``"<data unit> km/s"`` (e.g. ``"K km/s"``).
    """
    _check_ppv(cube)
    units = data_units(cube, "PPV cube", density=False)
    values, v_unit = axis_values(cube, "velocity", "PPV cube")
    velocity = (values * parse_plot_unit(v_unit, "velocity", "km/s")).to_value(u.km / u.s)
    order = np.argsort(velocity, kind="stable")
    if np.any(np.diff(velocity[order]) <= 0):
        raise ValueError("PPV cube coordinate 'velocity' has repeated values; "
                         "each channel needs its own velocity")
    weights = _velocity_weights(axis_edges(velocity[order]), velocity_range)
    data = np.asarray(cube.transpose("lat", "lon", "velocity").values, dtype=float)[..., order]
    finite = np.isfinite(data) & (weights > 0)
    moment = np.sum(np.where(finite, data, 0.0) * weights, axis=-1)
    moment[~finite.any(axis=-1)] = np.nan
    coords = {dim: (dim, axis_values(cube, dim, "PPV cube")[0], {"units": "deg"}) for dim in ("lat", "lon")}
    name = quantity_name(cube, units, "T_B")
    return xr.DataArray(moment, dims=("lat", "lon"), coords=coords,
                        attrs={"units": f"{units} km/s", "long_name": f"∫ {name} dv"})


def lb_map(cube, ax=None, velocity_range=None, orbits=None, landmarks=False, stretch="asinh",
           cmap="inferno", vmin=None, vmax=None, linear_width=None, title=None, colorbar=True,
           observer_distance=None):
    """Draw the velocity-integrated intensity of a PPV cube on the sky (l, b).

    Parameters
    ----------
    cube:
        DataArray ``(lon, lat, velocity)`` in any order, brightness units (e.g. K), see
        :func:`integrated_intensity` (channel widths, ``velocity_range`` in km/s, NaNs).
    ax:
        Cartesian Axes to draw on; a new figure is made when ``None``.
    orbits, landmarks, observer_distance:
        Published orbits to draw as l-b tracks (``"all"``, a name or a list; default none) and
        whether to mark the landmark clouds, through :func:`overlay_orbits`.
    stretch, cmap, vmin, vmax, linear_width:
        As in :func:`~iris_nb.plot.pv_image`, limits in the map's unit (e.g. K km/s).

    Longitude increases to the left and both axes are in deg at equal scale.  Returns the
    Axes; the map is ``ax.collections[0]`` (a QuadMesh with ``.colorbar``).
    """
    moment = integrated_intensity(cube, velocity_range)
    names = _orbit_names(orbits) if orbits is not None else []  # bad names fail before drawing
    (lat_edges, lon_edges), _, data = prepare_image(moment, ("lat", "lon"), "integrated map")
    norm = make_norm(stretch, data, vmin, vmax, linear_width)
    ax = new_axes(ax, polar=False)
    mesh = ax.pcolormesh(lon_edges, lat_edges, data, norm=norm, cmap=colormap(cmap), shading="flat", rasterized=True)
    ax.set_xlim(lon_edges[-1], lon_edges[0])  # positive longitude on the left
    ax.set_ylim(lat_edges[0], lat_edges[-1])
    ax.set_aspect("equal")
    ax.set_xlabel("Galactic longitude [deg]")
    ax.set_ylabel("Galactic latitude [deg]")
    remember_view(ax, "lb")
    if colorbar:
        add_colorbar(ax, mesh, f"{moment.attrs['long_name']} [{moment.attrs['units']}]")
    if velocity_range is not None:
        low, high = (v.to_value(u.km / u.s) if isinstance(v, u.Quantity) else float(v) for v in velocity_range)
        add_note(ax, f"v_LSR {low:g} to {high:g} km/s")
    if names or landmarks:
        overlay_orbits(ax, names, kind="lb", landmarks=landmarks, observer_distance=observer_distance,
                       legend=bool(names))
    if title is not None:
        ax.set_title(title)
    return ax
