"""Single views: a PV image, a top-down map (polar wedge or Cartesian) and the two side by side.

A PV image is a DataArray ``(lon, velocity)`` in a brightness unit, a top-down map a
DataArray ``(distance, lon)`` in a density unit (DESIGN.md section 3).  Longitude increases
to the *left* in every view, so panels line up.
"""

from __future__ import annotations

import warnings

import astropy.units as u
from matplotlib.ticker import MaxNLocator
import numpy as np
import xarray as xr

from ..cube import REDUCTIONS
from ..grids import galactocentric_xy
from ._common import (
    KINDS,
    add_colorbar,
    add_note,
    check_dims,
    colormap,
    data_units,
    make_norm,
    make_panels,
    new_axes,
    parse_plot_unit,
    prepare_image,
    quantity_name,
    remember_view,
)
from ._common import observer_distance_pc

__all__ = ["pv_image", "top_down", "side_by_side"]


# ------------------------------------------------------------------------- PV image
def _reduce_ppv(cube, reduce: str):
    """PV image ``(lon, velocity)`` from a PPV cube ``(lon, lat, velocity)`` by nanmean/nanmax over lat."""
    if reduce not in REDUCTIONS:
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
    check_dims(pv, ("lon", "velocity"), "PV image", " (or a PPV cube with lat and reduce='mean')")
    units = data_units(pv, "PV image", density=False)
    (v_edges, lon_edges), (v_unit, _), data = prepare_image(pv, ("velocity", "lon"), "PV image")
    ax = new_axes(ax, polar=False)
    mesh = ax.pcolormesh(lon_edges, v_edges, data, norm=make_norm(stretch, data, vmin, vmax, linear_width),
                         cmap=colormap(cmap), shading="flat", rasterized=True)
    ax.set_xlim(lon_edges[-1], lon_edges[0])  # positive longitude on the left
    ax.set_ylim(v_edges[0], v_edges[-1])
    ax.set_xlabel("Galactic longitude [deg]")
    ax.set_ylabel(f"v_LSR [{v_unit}]")
    remember_view(ax, "pv", velocity_unit=v_unit)
    if colorbar:
        add_colorbar(ax, mesh, f"{quantity_name(pv, units, 'T_B')} [{units}]")
    if title is not None:
        ax.set_title(title)
    return ax


# ------------------------------------------------------------------------ top-down
def top_down_observer_distance(td, observer_distance) -> float:
    """``observer_distance`` (pc), else the top-down map's attr, else the package default."""
    return observer_distance_pc(td.attrs.get("observer_distance", 8277.0) if observer_distance is None
                                else observer_distance)


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


def draw_top_down(ax, prepared, kind, norm, cmap, label, observer_distance, colorbar):
    """Draw a top-down map prepared by ``prepare_image(td, ("distance", "lon"))``; returns the QuadMesh."""
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
        add_note(ax, "↓ observer (Sun) at r = 0")
    elif kind == "cartesian":
        if getattr(ax, "name", None) == "polar":
            raise ValueError("kind='cartesian' needs a rectilinear Axes, got a polar one; use kind='polar'")
        d_pc = (d_edges * parse_plot_unit(d_unit, "distance", "pc")).to_value(u.pc)
        x, y = galactocentric_xy(d_pc[:, None], lon_edges[None, :], observer_distance)
        mesh = ax.pcolormesh(x, y, data, norm=norm, cmap=cmap, shading="flat", rasterized=True)
        ax.set_aspect("equal")
        ax.autoscale_view()
        if not ax.xaxis_inverted():
            ax.invert_xaxis()  # +x (positive longitude) to the left, as in the PV image
        ax.set_xlabel("x [pc]")
        ax.set_ylabel("y [pc]")
        add_note(ax, f"↓ Sun at (0, {-observer_distance:.0f}) pc")
    else:
        raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    remember_view(ax, kind, distance_unit=d_unit, observer_distance=observer_distance)
    if colorbar:
        add_colorbar(ax, mesh, label, pad=0.12 if kind == "polar" else 0.05)
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
    check_dims(td, ("distance", "lon"), "top-down map")
    units = data_units(td, "top-down map", density=True)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not known; choose one of {KINDS}")
    r0 = top_down_observer_distance(td, observer_distance)
    prepared = prepare_image(td, ("distance", "lon"), "top-down map")
    norm = make_norm(stretch, prepared[2], vmin, vmax, linear_width)
    ax = new_axes(ax, polar=kind == "polar")
    label = f"{quantity_name(td, units, 'ρ_H2')} [{units}]"
    draw_top_down(ax, prepared, kind, norm, colormap(cmap), label, r0, colorbar)
    if title is not None:
        ax.set_title(title)
    return ax


def side_by_side(pv, td, kind="polar", figsize=None, title=None, pv_kwargs=None, td_kwargs=None):
    """PV image (left) and top-down map (right) in one Figure.

    ``pv``: DataArray ``(lon, velocity)`` (or a PPV cube with ``pv_kwargs={"reduce": "mean"}``),
    brightness units; ``td``: DataArray ``(distance, lon)``, density units.  Extra keyword
    arguments go to :func:`pv_image` and :func:`top_down` through ``pv_kwargs``/``td_kwargs``.
    Returns the Figure; ``fig.axes[0]`` is the PV image, ``fig.axes[1]`` the top-down map.
    """
    check_dims(td, ("distance", "lon"), "top-down map")
    fig, (pv_ax, td_ax) = make_panels(["pv", kind], figsize)
    pv_image(pv, ax=pv_ax, **(pv_kwargs or {}))
    top_down(td, kind=kind, ax=td_ax, **(td_kwargs or {}))
    if title is not None:
        fig.suptitle(title)
    return fig

