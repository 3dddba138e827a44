"""ReversionExplorer: a cube's PV image next to its reversion, with a readout in physical units.

The cube is reverted once, with every model, when the explorer is made; afterwards changing
what is shown (model, ensemble member, mean or std, colour stretch, map kind, density unit,
readout position) only redraws PNG images from the cached result.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Mapping

import ipywidgets as ipw
import numpy as np
import xarray as xr

from ..cube import reduce_cube
from ..grids import galactocentric_xy
from ..plot import KINDS, STRETCHES, pv_image, top_down
from ..regrid import regrid_cube
from ..reversion import check_models, revert
from ..units import density_scale, parse_unit
from .base import ConfigWidget, render_png, report_errors
from .reduction import check_size, preview_cube

__all__ = ["ReversionExplorer", "UNIT_CHOICES"]

UNIT_CHOICES = ("Msun/pc3", "g/cm3", "kg/m3", "cm-3")
"""Density units offered in the units menu (any astropy density unit is accepted in ``value``)."""

_KEYS = ("selection", "stretch", "kind", "units", "lon", "distance")
_MARK = {"color": "#00e5ff", "linewidth": 1.2}
_CACHE_SIZE = 24  # rendered PNGs kept per panel


def _selection_options(n_models: int) -> tuple[str, ...]:
    """Menu entries: ``("model",)`` for one model, else mean, std and one entry per member."""
    if n_models == 1:
        return ("model",)
    return ("mean", "std") + tuple(f"member {i}" for i in range(n_models))


def _check_units(units) -> str:
    """A density unit string that converts to and from kg/m3 (mass or H2 number density)."""
    if not isinstance(units, str):
        raise TypeError(f"units must be a string such as 'Msun/pc3' or 'cm-3', "
                        f"got {type(units).__name__} {units!r}")
    density_scale(parse_unit(units, "density units"), "kg/m3")  # ValueError if not a density
    return units.strip()


def _quantity(units: str, selection: str) -> str:
    """Plain-text name of what is shown, e.g. ``rho_H2`` or ``std(n_H2)``."""
    import astropy.units as u

    name = "n_H2" if parse_unit(units).is_equivalent(u.m**-3) else "rho_H2"
    return f"std({name})" if selection == "std" else name


class ReversionExplorer(ConfigWidget):
    """Explore the reversion of one cube: PV image and top-down map side by side.

    Parameters
    ----------
    cube:
        Cube DataArray ``(lon, lat, velocity)`` (any dim order and coordinate units, data in
        K, mK, Jy/sr or Jy/beam with a beam, NaN where unobserved) covering the models' window.
    models:
        One :class:`~iris_nb.model.Reverter` or a non-empty list of them on one grid (an
        ensemble).  The cube is regridded to that grid and reverted once with all of them.
    units:
        Initial density unit of the map and readout: a mass density (``"Msun/pc3"``,
        ``"g/cm3"``) or an H2 number density (``"cm-3"``).
    value:
        Optional initial view settings (see ``value`` below); missing keys take defaults.
    figsize, dpi:
        Size of *each* panel in inches and its resolution (pixels per inch).
    device:
        Torch device for the reversion (default: cuda, else mps, else cpu).

    Attributes
    ----------
    value : dict
        The view settings ``{"selection", "stretch", "kind", "units", "lon", "distance"}``:
        ``selection`` is ``"model"`` (one model) or ``"mean"``, ``"std"``, ``"member i"``
        (ensembles); ``stretch`` one of ``"asinh"``, ``"linear"``, ``"log"``; ``kind``
        ``"polar"`` or ``"cartesian"``; ``units`` a density unit string; ``lon`` (deg) and
        ``distance`` (pc) the readout pixel centre (snapped to the nearest pixel).  Assigning
        a dict changes the given keys; impossible values show a message and change nothing.
        Observe with ``explorer.observe(handler, names="value")``.
    result : xarray.DataArray or xarray.Dataset
        The cached reversion in the constructor's ``units``: a DataArray ``(distance, lon)``
        for one model, a Dataset with ``mean``, ``std`` ``(distance, lon)`` and ``members``
        ``(member, distance, lon)`` for an ensemble (pc, deg).
    pv : xarray.DataArray
        The PV image ``(lon, velocity)`` the models see (cube regridded to their grid and
        reduced over latitude with the first model's reduction), in the cube's unit.
    map_image, pv_image : ipywidgets.Image
        The PNG panels (``bytes(map_image.value)`` are the PNG bytes).
    readout : ipywidgets.HTML
        ``"rho_H2 = 12.3 Msun/pc3 at l = 0.250 deg, d = 8190 pc"`` for the selected pixel,
        which is also marked on both panels (plain text: :attr:`readout_text`).
    """

    def __init__(self, cube, models, units: str = "Msun/pc3", value: dict | None = None, *,
                 figsize=(4.6, 3.7), dpi: int = 80, device=None) -> None:
        self._figsize, self._dpi = check_size(figsize, dpi)
        cube = preview_cube(cube)
        models, _ = check_models(models)
        self._base_units = _check_units(units)
        self._options = _selection_options(len(models))
        self._grid = models[0].grid
        self._lon = self._grid.lon.centers()
        self._distance = self._grid.distance.centers()
        self._default_point = (0.0, self._grid.observer_distance)
        given = {} if value is None else value
        self.check_value(given)  # bad settings raise here, before any regridding or reversion
        given = dict(given)

        regridded = regrid_cube(cube, self._grid)
        self.pv = reduce_cube(regridded, models[0].reduction)
        self.result = revert(regridded, models[0] if len(models) == 1 else models,
                             units=self._base_units, device=device)
        self._reductions = sorted({m.reduction for m in models})
        first = self._raw_map(self._options[0])
        index = np.unravel_index(int(np.nanargmax(np.nan_to_num(first.values, nan=-np.inf))), first.shape)
        self._default_point = (float(first.lon[index[1]]), float(first.distance[index[0]]))
        self._pv_cache: OrderedDict = OrderedDict()
        self._map_cache: OrderedDict = OrderedDict()
        super().__init__({"units": self._base_units, **given})
        self._build()
        self.observe(self._on_value, names="value")
        self._refresh()

    # ------------------------------------------------------------------ value
    def check_value(self, value) -> dict:
        """The complete, normalised settings dict, or ValueError/TypeError saying what to fix.

        ``value`` is a dict with any of the keys ``selection``, ``stretch``, ``kind``,
        ``units``, ``lon`` (deg), ``distance`` (pc); missing keys keep their current value
        (their default at construction).  ``lon``/``distance`` snap to the nearest pixel centre.
        """
        if not isinstance(value, Mapping):
            raise TypeError(f"the explorer's value must be a dict with keys {list(_KEYS)}, "
                            f"got {type(value).__name__} {value!r}")
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown view settings {unknown}; the keys are {list(_KEYS)}")
        current = self.value if isinstance(self.value, dict) else self._defaults()
        new = {**current, **value}
        if new["selection"] not in self._options:
            raise ValueError(f"selection {new['selection']!r} is not available; choose one of "
                             f"{list(self._options)}")
        for key, allowed in (("stretch", STRETCHES), ("kind", KINDS)):
            if new[key] not in allowed:
                raise ValueError(f"{key} {new[key]!r} is not known; choose one of {list(allowed)}")
        new["units"] = _check_units(new["units"])
        new["lon"] = self._snap("lon", new["lon"], self._lon, "deg")
        new["distance"] = self._snap("distance", new["distance"], self._distance, "pc")
        return new

    def _defaults(self) -> dict:
        lon, distance = self._default_point
        return {"selection": self._options[0], "stretch": "asinh", "kind": "polar",
                "units": self._base_units, "lon": lon, "distance": distance}

    @staticmethod
    def _snap(name: str, given, centres: np.ndarray, unit: str) -> float:
        if isinstance(given, bool) or not isinstance(given, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number in {unit}, got {type(given).__name__} {given!r}")
        half = 0.5 * abs(centres[1] - centres[0])
        lo, hi = float(centres.min()) - half, float(centres.max()) + half
        if not (np.isfinite(given) and lo <= given <= hi):
            raise ValueError(f"{name} = {given} {unit} is outside the map ({lo:g} .. {hi:g} {unit}); "
                             "pick a pixel inside it")
        return float(centres[int(np.argmin(np.abs(centres - given)))])

    def _on_value(self, change) -> None:
        self._refresh()

    # ------------------------------------------------------------------ data
    @property
    def selections(self) -> tuple[str, ...]:
        """The entries of the selection menu."""
        return self._options

    def _raw_map(self, selection: str) -> xr.DataArray:
        """The cached map ``(distance, lon)`` of ``selection`` in the constructor's units."""
        if isinstance(self.result, xr.DataArray):
            return self.result
        if selection.startswith("member "):
            return self.result["members"].sel(member=int(selection.split()[1]))
        return self.result[selection]

    @property
    def data(self) -> xr.DataArray:
        """The map now shown: DataArray ``(distance, lon)`` (pc, deg) in ``value["units"]``."""
        selection, units = self.value["selection"], self.value["units"]
        raw = self._raw_map(selection)
        scale = density_scale(self._base_units, units)
        names = {"mean": "ensemble mean", "std": "ensemble std"}
        label = names.get(selection, selection if selection != "model" else "reversion")
        long_name = _quantity(units, selection).replace("rho_", "ρ_").replace("std(", "σ(")
        return (raw * scale).assign_attrs({**self.result.attrs, "units": units, "long_name": long_name,
                                           "selection": label})

    def _readout_parts(self) -> tuple[str, str]:
        v = self.value
        return (f"{_quantity(v['units'], v['selection'])} = {self.pixel_value():.4g} {v['units']}",
                f"l = {v['lon']:.3f} deg, d = {v['distance']:.0f} pc ({v['selection']})")

    @property
    def readout_text(self) -> str:
        """The readout as plain text, e.g. ``"rho_H2 = 12.3 Msun/pc3 at l = 0.250 deg, d = 8190 pc (mean)"``."""
        return " at ".join(self._readout_parts())

    def pixel_value(self) -> float:
        """The shown map's value at the readout pixel, in ``value["units"]``."""
        point = self.data.sel(lon=self.value["lon"], distance=self.value["distance"], method="nearest")
        return float(point.values)

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        v = self.value
        self.selection = ipw.Dropdown(options=list(self._options), value=v["selection"], description="Show")
        self.units = ipw.Dropdown(options=self._unit_options(v["units"]), value=v["units"], description="Units")
        self.stretch = ipw.ToggleButtons(options=list(STRETCHES), value=v["stretch"], description="Stretch",
                                         style={"button_width": "5em"})
        self.kind = ipw.ToggleButtons(options=list(KINDS), value=v["kind"], description="Map",
                                      style={"button_width": "6em"})
        lon_step = float(self._lon[1] - self._lon[0])
        dist_step = float(self._distance[1] - self._distance[0])
        self.lon = ipw.FloatSlider(value=v["lon"], min=float(self._lon[0]), max=float(self._lon[-1]),
                                   step=lon_step, readout_format=".3f", description="l [deg]",
                                   continuous_update=False)
        self.distance = ipw.FloatSlider(value=v["distance"], min=float(self._distance[0]),
                                        max=float(self._distance[-1]), step=dist_step, readout_format=".0f",
                                        description="d [pc]", continuous_update=False)
        for key in ("selection", "units", "stretch", "kind", "lon", "distance"):
            getattr(self, key).observe(self._control_handler(key), names="value")
        width = f"{round(self._figsize[0] * self._dpi)}px"
        self.pv_image = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="50%"))
        self.map_image = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="50%"))
        self.readout = ipw.HTML(value="")
        self.readout.add_class("iris-nb-readout")
        self.caption = ipw.HTML(value=self._caption())
        self._widget = ipw.VBox([
            ipw.HBox([self.selection, self.units]),
            ipw.HBox([self.stretch, self.kind]),
            self.error.widget,
            ipw.HBox([self.pv_image, self.map_image]),
            ipw.HBox([self.lon, self.distance]),
            self.readout,
            self.caption,
        ])
        self._widget.add_class("iris-nb-reversion-explorer")

    @staticmethod
    def _unit_options(units: str) -> list[str]:
        return list(UNIT_CHOICES) + ([units] if units not in UNIT_CHOICES else [])

    def _control_handler(self, key: str):
        def handler(change) -> None:
            if self.value.get(key) != change["new"]:
                self.value = {key: change["new"]}

        return handler

    def _sync_controls(self) -> None:
        v = self.value
        if v["units"] not in self.units.options:
            self.units.options = self._unit_options(v["units"])
        for key in _KEYS:
            control = getattr(self, key)
            if control.value != v[key]:
                control.value = v[key]

    def _caption(self) -> str:
        grid = self._grid
        n = 1 if isinstance(self.result, xr.DataArray) else self.result.sizes["member"]
        what = "one model" if n == 1 else f"an ensemble of {n} models"
        return (f"<small>Reverted once with {what} on grid {grid.name} "
                f"({grid.distance.steps} distance x {grid.lon.steps} lon pixels); the PV image is the "
                f"model input: the cube regridded to that grid, {'/'.join(self._reductions)} over "
                f"{grid.lat.steps} latitude pixels, in {self.pv.attrs.get('units', '?')}. "
                "Move the sliders to read a pixel (marked in cyan).</small>")

    # ------------------------------------------------------------------ drawing
    def _refresh(self) -> None:
        self._sync_controls()
        with report_errors(self.error):
            v = self.value
            value, where = self._readout_parts()
            self.readout.value = f"<b>{html.escape(value)}</b> at {html.escape(where)}"
            self.pv_image.value = self._cached(self._pv_cache, (v["stretch"], v["lon"]), self._draw_pv)
            key = tuple(v[k] for k in _KEYS)
            self.map_image.value = self._cached(self._map_cache, key, self._draw_map)

    @staticmethod
    def _cached(cache: OrderedDict, key, draw) -> bytes:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        png = draw()
        cache[key] = png
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return png

    def _draw_pv(self) -> bytes:
        v = self.value

        def draw(ax) -> None:
            pv_image(self.pv, ax=ax, stretch=v["stretch"], title="PV image (model input)")
            ax.axvline(v["lon"], linestyle="--", **_MARK)

        return render_png(draw, self._figsize, self._dpi)

    def _draw_map(self) -> bytes:
        v, data = self.value, self.data
        r0 = float(data.attrs.get("observer_distance", self._grid.observer_distance))

        def draw(ax) -> None:
            if v["kind"] == "polar":  # render_png gives a rectilinear Axes: swap in a polar one
                figure = ax.figure
                ax.remove()
                ax = figure.add_subplot(projection="polar")
            top_down(data, kind=v["kind"], ax=ax, stretch=v["stretch"],
                     cmap="viridis" if v["selection"] == "std" else "inferno")
            ax.set_title(data.attrs["selection"], pad=16 if v["kind"] == "polar" else 6)
            limits = ax.get_xlim(), ax.get_ylim()
            if v["kind"] == "polar":
                ax.plot([np.deg2rad(v["lon"])], [v["distance"]], marker="+", markersize=12,
                        markeredgewidth=2, color=_MARK["color"])
            else:
                x, y = galactocentric_xy(v["distance"], v["lon"], r0)
                ax.plot([float(x)], [float(y)], marker="+", markersize=12, markeredgewidth=2,
                        color=_MARK["color"])
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])

        return render_png(draw, self._figsize, self._dpi)

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict:
        """The view settings as a plain-JSON dict (a copy of :attr:`value`)."""
        return dict(self.value)

    @classmethod
    def from_dict(cls, data, cube=None, models=None, **kwargs) -> "ReversionExplorer":
        """An explorer of ``cube`` reverted by ``models``, showing the settings in ``data``.

        ``data`` is the output of :meth:`to_dict` (possibly read back from a JSON or YAML
        file); its ``units`` also become the reversion units.  Unknown keys or impossible
        settings raise ValueError.  ``kwargs`` go to the constructor.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"from_dict expects a dict such as {{'selection': 'mean', 'stretch': 'asinh'}}, "
                            f"got {type(data).__name__}")
        if cube is None or models is None:
            raise TypeError("from_dict needs the cube and the models too: "
                            "ReversionExplorer.from_dict(settings, cube, models)")
        units = kwargs.pop("units", "Msun/pc3")
        units = data.get("units", units)
        return cls(cube, models, units=units, value=dict(data), **kwargs)

    def __repr__(self) -> str:
        v = self.value
        return (f"ReversionExplorer(selection={v['selection']!r}, stretch={v['stretch']!r}, "
                f"kind={v['kind']!r}, units={v['units']!r})")
