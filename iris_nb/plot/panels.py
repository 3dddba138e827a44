"""Multi-panel comparisons of top-down maps: ensemble mean and spread, truth vs prediction."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import xarray as xr

from ._common import (axis_values, check_dims, colormap, data_units, make_norm, make_panels, parse_plot_unit,
                      prepare_image, quantity_name)
from .maps import draw_top_down, pv_image, top_down, top_down_observer_distance

__all__ = ["ensemble", "truth_vs_prediction", "consistency"]


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
        check_dims(da, ("distance", "lon"), f"ensemble '{name}'")
        data_units(da, f"ensemble '{name}'", density=True)
        prepare_image(da, ("distance", "lon"), f"ensemble '{name}'")  # coordinates checked before drawing
    fig, (mean_ax, std_ax) = make_panels([kind, kind], figsize)
    r0 = observer_distance if observer_distance is not None else ds.attrs.get("observer_distance")
    top_down(mean, kind=kind, ax=mean_ax, stretch=stretch, cmap=cmap, title="ensemble mean", observer_distance=r0)
    top_down(std, kind=kind, ax=std_ax, stretch="linear", cmap=std_cmap, vmin=0.0, title="ensemble std",
             observer_distance=r0)
    std_ax.collections[0].colorbar.set_label(f"σ({quantity_name(std, std.attrs['units'], 'ρ_H2')}) "
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
    check_dims(truth, ("distance", "lon"), "truth")
    check_dims(prediction, ("distance", "lon"), "prediction")
    units = data_units(truth, "truth", density=True)
    pred_units = data_units(prediction, "prediction", density=True)
    try:
        scale = (1.0 * parse_plot_unit(pred_units, "prediction", "Msun/pc3")).to_value(
            parse_plot_unit(units, "truth", "Msun/pc3"))
    except u.UnitConversionError:
        raise ValueError(f"prediction is in {pred_units!r} and truth in {units!r}; "
                         "convert one to the other's unit first") from None
    prediction = (prediction * scale).assign_attrs({**prediction.attrs, "units": units})
    for dim in ("distance", "lon"):  # put the prediction's pixels in the truth's order
        a, _ = axis_values(truth, dim, "truth")
        b, _ = axis_values(prediction, dim, "prediction")
        if a.shape != b.shape or not np.allclose(np.sort(a), np.sort(b), rtol=1e-6, atol=1e-9):
            raise ValueError(f"truth and prediction have different '{dim}' pixels ({a.size} vs {b.size} values); "
                             "regrid one onto the other first")
        index = np.argsort(b)[np.argsort(np.argsort(a))]
        prediction = prediction.isel({dim: index}).assign_coords({dim: truth[dim]})
    prediction = prediction.transpose(*truth.dims)
    residual = (prediction - truth).assign_attrs(units=units, long_name="prediction − truth")
    norm = make_norm(stretch, np.stack([truth.values, prediction.values]))
    limit = float(np.nanmax(np.abs(residual.values))) if np.any(np.isfinite(residual.values)) else 1.0
    res_norm = make_norm("linear", np.ma.masked_invalid(residual.values), -limit, limit)
    r0 = top_down_observer_distance(truth, observer_distance)
    prepared = [prepare_image(da, ("distance", "lon"), name)
                for da, name in ((truth, "truth"), (prediction, "prediction"), (residual, "residual"))]
    fig, axes = make_panels([kind] * 3, figsize)
    for ax, da, name, ready, panel_norm, panel_cmap in (
            (axes[0], truth, "truth", prepared[0], norm, cmap),
            (axes[1], prediction, "prediction", prepared[1], norm, cmap),
            (axes[2], residual, "residual", prepared[2], res_norm, residual_cmap)):
        label = f"{quantity_name(da, units, 'ρ_H2')} [{units}]"
        draw_top_down(ax, ready, kind, panel_norm, colormap(panel_cmap), label, r0, True)
        ax.set_title(name)
    if title is not None:
        fig.suptitle(title)
    return fig


def consistency(ds, stretch="asinh", cmap="inferno", residual_cmap="RdBu_r", figsize=None, title=None):
    """Does a reversion explain its data?  Observed PV, re-observed PV and their residual.

    ``ds``: what ``cube.iris.revert`` returns for a two-output model (or a RIM): a Dataset
    with ``pv``, ``pv_model`` and ``pv_residual`` on ``(lon, velocity)`` (one image; select
    one first for a stack).  The two PV images share one colour scale; the residual is drawn
    on a symmetric linear scale, so red is gas the maps miss and blue gas they invent at that
    longitude and velocity.  Returns the Figure (three axes).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"consistency() needs the Dataset revert returns for a two-output model, got "
                        f"{type(ds).__name__}")
    missing = [name for name in ("pv", "pv_model", "pv_residual") if name not in ds.data_vars]
    if missing:
        raise ValueError(f"the Dataset lacks {missing}: revert with a two-output model "
                         "(Reverter(grid, outputs=('density', 'velocity')) or a RIM) gives them")
    for name in ("pv", "pv_model", "pv_residual"):
        check_dims(ds[name], ("lon", "velocity"), f"'{name}'", " (select one image of a stack first)")
    fig, axes = make_panels(["pv", "pv", "pv"], figsize or (15, 4.2))
    both = np.concatenate([np.ravel(ds["pv"].values), np.ravel(ds["pv_model"].values)])
    low, high = float(np.nanmin(both)), float(np.nanmax(both))
    pv_image(ds["pv"], ax=axes[0], stretch=stretch, cmap=cmap, vmin=low, vmax=high, title="observed")
    pv_image(ds["pv_model"], ax=axes[1], stretch=stretch, cmap=cmap, vmin=low, vmax=high,
             title="re-observed from the reversion")
    limit = float(np.nanmax(np.abs(ds["pv_residual"].values))) or 1.0
    pv_image(ds["pv_residual"], ax=axes[2], stretch="linear", cmap=residual_cmap, vmin=-limit, vmax=limit,
             title="residual (observed - re-observed)")
    if title is not None:
        fig.suptitle(title)
    return fig
