"""LitterPicker: choose litter stores (gas in front of / behind the CMZ) and their probabilities.

Litter stores are dataset stores written with ``model=near_side_litter`` (foreground gas,
between the Sun and the CMZ) or ``model=far_side_litter`` (background gas, beyond it); during
training each input independently receives one PV image of each store with probability ``p``
(:class:`~iris_nb.sim.litter.Litter`).  The picker edits the ``litter`` field of a run config:
``None`` or ``{"paths": (store, ...), "p": number or (one per store,)}``.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as ipw
import numpy as np
import torch
import traitlets
import xarray as xr

from ..data.datasets import PreObservedDataset, observation_scale
from ..grids import get_grid
from .base import ConfigWidget, config_entry, render_png, report_errors
from .reduction import _check_size, _preview_cube

__all__ = ["LitterPicker", "SIDE_LABELS", "store_side"]

CONFIG_KEY = "litter"  # the RunConfig / CLI field this widget edits
DEFAULT_P = 0.5
SIDE_LABELS = {"near": "foreground (near side)", "far": "background (far side)", "": "side not recorded"}
PREVIEWS = ("mean", "example")


def store_side(info) -> str:
    """``"near"``, ``"far"`` or ``""`` (unknown): the side of the CMZ a store's gas model fills.

    ``info`` is a :class:`~iris_nb.data.layout.StoreInfo`; the side is read from the gas model
    recorded in the store (``near_side_litter``, ``far_side_litter`` or ``make_litter`` with a
    ``side`` keyword).
    """
    name = str(info.model).rsplit(".", 1)[-1]
    if name in ("near_side_litter", "far_side_litter"):
        return name.split("_", 1)[0]
    side = info.model_kwargs.get("side") if name == "make_litter" else None
    return side if side in ("near", "far") else ""


def _probability(p, where: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p):
        raise TypeError(f"{where} must be a number in [0, 1], got {p!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where} is the probability that an input receives one of the store's images; "
                         f"it must lie in [0, 1], got {p:g}")
    return float(p)


class LitterPicker(ConfigWidget):
    """Choose litter stores and the probability of adding their images, with a preview.

    Parameters
    ----------
    stores:
        Paths of litter stores to start with (each with ``p = 0.5``), added after those of
        ``value``.
    value:
        The initial litter, as ``RunConfig.litter``: ``None`` or ``{"paths": [...], "p": ...}``
        (with ``"scale"`` when it is not 1).
    grid:
        The run's :class:`~iris_nb.grids.Grid` (or preset name): stores whose PV images
        ``(lon, velocity)`` have another shape are refused.  Default: the first store's.
    cube:
        Optional cube DataArray ``(lon, lat, velocity)`` on the stores' lon/velocity pixels;
        the preview adds the litter to its PV image (reduced like the stores) when its unit
        converts to theirs.  Without a cube the litter is drawn on a blank image.
    scale:
        Factor (>= 0) on every litter image (``Litter(scale=...)``), in the preview and in
        training: it is the ``"scale"`` of the run's litter.  Default: ``value``'s, else 1.
    seed:
        Seed of the example draw; the "new draw" button increments it.
    figsize, dpi:
        Size of the preview image in inches and its resolution (pixels per inch).

    Attributes
    ----------
    value : dict or None
        ``{"paths": (str, ...), "p": float or (float, ...)}`` (one ``p`` when all stores share
        it) plus ``"scale"`` when it is not 1, as ``RunConfig.litter`` holds it; ``None`` without a store.  A missing store, a
        store of another PV shape or ``p`` outside [0, 1] show a message in the widget and
        keep the previous value.  Observe with ``picker.observe(handler, names="value")``.
    sides : dict
        ``{path: "near" | "far" | ""}``: from the store's gas model, else the user's choice.
    hit_fraction : float
        Probability that an input receives litter from at least one store, ``1 - prod(1 - p)``.
    preview : ipywidgets.Image
        The PNG preview (empty and hidden without a store); ``pv`` is the image shown
        ``(lon, velocity)`` in the stores' (or the cube's) unit.
    """

    scale = traitlets.Float(1.0, help="factor on every litter image (the run's litter scale)")

    def __init__(self, stores=(), value=None, grid=None, *, cube=None, scale: float | None = None, seed: int = 0,
                 figsize=(5.5, 3.4), dpi: int = 90) -> None:
        self._figsize, self._dpi = _check_size(figsize, dpi)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        grid = None if grid is None else get_grid(grid)
        self._cube = None if cube is None else _preview_cube(cube)
        cube_shape = None if cube is None else (self._cube.sizes["lon"], self._cube.sizes["velocity"])
        if grid is not None and cube_shape not in (None, grid.pv_shape):
            raise ValueError(f"the cube has PV shape {cube_shape} but grid {grid.name!r} has {grid.pv_shape}; "
                             "regrid it first: cube.iris.regrid(grid)")
        self._shape = grid.pv_shape if grid is not None else cube_shape  # PV shape (lon, v) stores must have
        self._infos: dict = {}
        self._user_sides: dict = {}
        self._data: dict = {}
        self._cache: dict = {}
        self._syncing = False
        value = self.check_value(value)
        scale = self._check_scale((value or {}).get("scale", 1.0) if scale is None else scale)
        stores = [stores] if isinstance(stores, (str, Path)) else list(stores)
        extra = [str(path) for path in stores if str(path) not in (value["paths"] if value else ())]
        if extra:  # the stores not yet in value, with p = 0.5 each
            value = {"paths": list(value["paths"] if value else []) + extra,
                     "p": self._ps(value) + [DEFAULT_P] * len(extra)}
        value = self.check_value(None if value is None else {**value, "scale": scale})
        super().__init__(value, scale=scale)
        self.path_input = ipw.Text(placeholder="path/to/litter.zarr", description="Store")
        self.add_button = ipw.Button(description="Add", icon="plus", layout=ipw.Layout(width="6em"))
        self.add_button.on_click(lambda _: self.add(self.path_input.value))
        self.rows_box = ipw.VBox([])
        self.rows: dict = {}
        self.scale_input = ipw.FloatText(value=self.scale, step=0.1, description="scale")
        self._link = traitlets.link((self, "scale"), (self.scale_input, "value"))
        self.kind_toggle = ipw.ToggleButtons(options=list(PREVIEWS), value="mean", description="Preview",
                                             tooltips=["mean litter image, weighted by p", "one seeded draw"],
                                             style={"button_width": "5em"})
        self.redraw_button = ipw.Button(description="new draw", layout=ipw.Layout(width="7em"))
        self.redraw_button.on_click(lambda _: self.redraw())
        width = f"{round(self._figsize[0] * self._dpi)}px"
        self.preview = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="100%"))
        self.preview.add_class("iris-nb-preview")
        self.caption = ipw.HTML(value="")
        self._widget = ipw.VBox([ipw.HBox([self.path_input, self.add_button]), self.rows_box,
                                 ipw.HBox([self.scale_input, self.kind_toggle, self.redraw_button]),
                                 self.error.widget, self.preview, self.caption])
        self._widget.add_class("iris-nb-litter-picker")
        self.observe(self._on_value, names="value")
        self.observe(self._on_scale, names="scale")
        self.kind_toggle.observe(lambda _: self._update_preview(), names="value")
        self._build_rows()
        self._update_preview()

    # ------------------------------------------------------------------ stores
    def _info(self, path: str):
        """StoreInfo of ``path`` (cached), or ValueError saying how to make the store."""
        if path not in self._infos:
            from ..data.layout import store_info

            if not Path(path).exists():
                raise ValueError(f"litter store {path} does not exist; write one with iris_nb.data.write_dataset("
                                 f"'{path}', n, litter_grid(grid, 'near'), model=near_side_litter) or fix the path")
            try:
                info = store_info(path)
            except (ValueError, KeyError, OSError) as err:
                raise ValueError(f"{path} cannot be used as a litter store: {err}") from None
            if info.n_done == 0:
                raise ValueError(f"litter store {path} holds no finished sample yet; run write_dataset on it again")
            self._infos[path] = info
        return self._infos[path]

    def check_value(self, value) -> dict | None:
        """``None`` or the normalised litter dict, else ValueError/TypeError saying what to fix."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise TypeError(f"litter must be None or a dict {{'paths': [...], 'p': 0.5}}, got {type(value).__name__}")
        value = dict(value)
        paths = value.get("paths")
        paths = [paths] if isinstance(paths, (str, Path)) else paths
        if isinstance(paths, (list, tuple)):
            paths = [str(path) for path in paths]
            if not paths:
                return None  # no store chosen: no litter
            duplicates = sorted({path for path in paths if paths.count(path) > 1})
            if duplicates:
                raise ValueError(f"litter store(s) {duplicates} are listed twice; give each store once")
            p = value.get("p", DEFAULT_P)
            if isinstance(p, (list, tuple)) and len(p) == len(paths):
                value["p"] = [_probability(item, f"p of litter store {path}") for item, path in zip(p, paths)]
            elif not isinstance(p, (list, tuple)):
                value["p"] = _probability(p, "the litter probability p")
            value["paths"] = paths
        from ..train._run_io import as_litter

        litter = as_litter(value)  # RunConfigError (a ValueError) for a malformed dict
        infos = [self._info(path) for path in litter["paths"]]
        shape = self._shape or infos[0].grid.pv_shape
        for path, info in zip(litter["paths"], infos):
            if info.grid.pv_shape != shape:
                raise ValueError(f"litter store {path} has PV images of shape (lon, velocity) = {info.grid.pv_shape} "
                                 f"but the training inputs are {shape}; write the litter on litter_grid(grid, side) "
                                 "of the run's grid")
        for path, info in zip(litter["paths"][1:], infos[1:]):
            observation_scale(info.units["observation"], infos[0].units["observation"])  # ValueError if apart
        p = litter["p"]
        if isinstance(p, tuple) and len(set(p)) == 1:
            litter["p"] = p[0]  # the same run: one p for every store
        return litter

    @staticmethod
    def _ps(value) -> list[float]:
        """One ``p`` per store of ``value`` (a list; empty for ``None``)."""
        if value is None:
            return []
        p = value["p"]
        return list(p) if isinstance(p, tuple) else [p] * len(value["paths"])

    @staticmethod
    def _check_scale(scale) -> float:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"the litter scale is a factor >= 0 on every litter image, got {scale!r}")
        return float(scale)

    @traitlets.validate("scale")
    def _validate_scale(self, proposal):
        with report_errors(self.error):
            scale = self._check_scale(proposal["value"])
            self.error.clear()
            return scale
        return self.scale  # refused: the message says why

    @property
    def paths(self) -> tuple[str, ...]:
        """The chosen store paths (empty without a store)."""
        return () if self.value is None else self.value["paths"]

    @property
    def sides(self) -> dict:
        """``{path: "near" | "far" | ""}`` for the chosen stores (recorded side, else the user's choice)."""
        return {path: store_side(self._info(path)) or self._user_sides.get(path, "") for path in self.paths}

    @property
    def hit_fraction(self) -> float:
        """Probability that a training input receives litter from at least one store."""
        return 1.0 - float(np.prod([1.0 - p for p in self._ps(self.value)]))

    # ---------------------------------------------------------------- actions
    def add(self, path, p: float = DEFAULT_P) -> None:
        """Add the store at ``path`` with probability ``p``; a bad store shows a message instead."""
        path = str(path).strip()
        if not path:
            self.error.show("type the path of a litter store (a folder written by write_dataset) first")
            return
        if path in self.paths:
            self.error.show(f"litter store {path} is already chosen")
            return
        before = self.value
        self.value = {"paths": list(self.paths) + [path], "p": self._ps(self.value) + [p], "scale": self.scale}
        if self.value is not before:
            self.path_input.value = ""

    def remove(self, path) -> None:
        """Remove the store at ``path`` from the choice."""
        path = str(path)
        if path not in self.paths:
            self.error.show(f"litter store {path} is not chosen; chosen: {list(self.paths)}")
            return
        keep = [k for k, item in enumerate(self.paths) if item != path]
        ps = self._ps(self.value)
        self.value = None if not keep else {"paths": [self.paths[k] for k in keep], "p": [ps[k] for k in keep],
                                            "scale": self.scale}

    def redraw(self) -> None:
        """Show the example preview with the next seed."""
        self.seed += 1
        self.kind_toggle.value = "example"
        self._update_preview()

    # ------------------------------------------------------------------ rows
    def _build_rows(self) -> None:
        self.rows = {}
        for path, p in zip(self.paths, self._ps(self.value)):
            info = self._info(path)
            side = store_side(info)
            label = ipw.HTML(f"<code>{html.escape(Path(path).name)}</code> <small>({info.n_done} images)</small>",
                             layout=ipw.Layout(width="14em"), tooltip=path)
            choice = ipw.Dropdown(options=[(text, key) for key, text in SIDE_LABELS.items()],
                                  value=side or self._user_sides.get(path, ""), disabled=bool(side),
                                  layout=ipw.Layout(width="14em"))
            choice.observe(lambda change, path=path: self._on_side(path, change["new"]), names="value")
            prob = ipw.FloatText(value=p, step=0.05, description="p", layout=ipw.Layout(width="10em"),
                                 style={"description_width": "1.5em"})
            prob.observe(self._on_p, names="value")
            remove = ipw.Button(description="remove", layout=ipw.Layout(width="6em"))
            remove.on_click(lambda _, path=path: self.remove(path))
            self.rows[path] = {"side": choice, "p": prob, "remove": remove}
            self.rows[path]["box"] = ipw.HBox([label, choice, prob, remove])
        self.rows_box.children = [row["box"] for row in self.rows.values()]

    def _on_side(self, path: str, side: str) -> None:
        self._user_sides[path] = side
        self._update_preview()

    def _on_p(self, change) -> None:
        if self._syncing or self.value is None:
            return
        self.value = {"paths": list(self.paths), "p": [self.rows[path]["p"].value for path in self.paths],
                      "scale": self.scale}

    def _on_scale(self, change) -> None:
        if self.value is not None and self.value.get("scale", 1.0) != change["new"]:
            self.value = {**self.value, "scale": change["new"]}  # redraws through _on_value
        else:
            self._update_preview()

    def _on_value(self, change) -> None:
        if self.value is not None and self.value.get("scale", 1.0) != self.scale:
            self.scale = self.value.get("scale", 1.0)
        old = () if change["old"] is None else change["old"]["paths"]
        if tuple(old) != self.paths:
            self._build_rows()
        else:
            self._syncing = True
            try:
                for path, p in zip(self.paths, self._ps(self.value)):
                    self.rows[path]["p"].value = p
            finally:
                self._syncing = False
        self._update_preview()

    # ---------------------------------------------------------------- preview
    def _units(self) -> tuple[str, bool]:
        """Unit of the preview image and whether the cube's PV is part of it (its unit converts)."""
        store_unit = self._info(self.paths[0]).units["observation"]
        try:
            observation_scale(store_unit, self._cube.attrs["units"])
        except (AttributeError, ValueError):  # no cube, or a cube in another kind of unit
            return store_unit, False
        return str(self._cube.attrs["units"]), True

    def _dataset(self, path: str, unit: str):
        """``(PreObservedDataset of all samples, mean image (lon, v) as float64)`` in ``unit``."""
        if (path, unit) not in self._data:
            from ..data.layout import open_store

            data = PreObservedDataset(path, split="train", validation_fraction=0.0, test_fraction=0.0,
                                      units={"observation": unit})
            factor = observation_scale(data.info.units["observation"], unit)
            mean = open_store(path)["observation"].mean("sample").values.astype(np.float64) * factor
            self._data[path, unit] = (data, mean)
        return self._data[path, unit]

    @property
    def pv(self) -> xr.DataArray | None:
        """The previewed image ``(lon, velocity)`` (cube PV plus litter, or litter alone), ``None`` without a store."""
        return None if self.value is None else self._render()[1]

    def _render(self):
        kind = self.kind_toggle.value
        key = (tuple(self.paths), tuple(self._ps(self.value)), self.scale, kind, self.seed if kind == "example" else 0)
        if key not in self._cache:
            self._cache[key] = self._draw(kind)
        return self._cache[key]

    def _draw(self, kind: str):
        from ..cube import reduce_cube
        from ..plot import pv_image
        from ..sim.litter import Litter

        unit, with_cube = self._units()
        first = self._info(self.paths[0])
        parts = [self._dataset(path, unit) for path in self.paths]
        ps = self._ps(self.value)
        if with_cube:
            base = reduce_cube(self._cube, first.reduction)
            lon, velocity, image = base["lon"].values, base["velocity"].values, base.values.astype(np.float64)
        else:
            lon, velocity = first.grid.lon.centers(), first.grid.velocity.centers()
            image = np.zeros(first.grid.pv_shape)
        if kind == "mean":
            image = image + self.scale * sum(p * mean for p, (_, mean) in zip(ps, parts))
            what, hits = "mean litter image, weighted by p", None
        else:
            litter = Litter([data for data, _ in parts], p=ps, scale=self.scale)
            drawn, hit = litter.draw(1, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
            image = image + drawn[0, 0].numpy()
            what, hits = f"one draw (seed {self.seed})", [path for path, h in zip(self.paths, hit[:, 0]) if bool(h)]
        pv = xr.DataArray(image, dims=("lon", "velocity"),
                          coords={"lon": ("lon", lon, {"units": "deg"}), "velocity": ("velocity", velocity,
                                                                                      {"units": "km/s"})},
                          attrs={"units": unit, "long_name": "cube + litter" if with_cube else "litter"})
        title = f"{'cube + ' if with_cube else ''}{what}"
        png = render_png(lambda ax: pv_image(pv, ax=ax, title=title), self._figsize, self._dpi)
        return png, pv, hits, with_cube

    def _caption(self, hits, with_cube: bool) -> str:
        sides = self.sides
        parts = [f"{html.escape(Path(path).name)} ({SIDE_LABELS[sides[path]].split(' (')[0] if sides[path] else '?'}) "
                 f"p = {p:g}" for path, p in zip(self.paths, self._ps(self.value))]
        text = (f"{'; '.join(parts)}. A training input receives litter from at least one store with probability "
                f"<b>{100 * self.hit_fraction:.1f}%</b>")
        if self.scale != 1.0:
            text += f"; litter images x{self.scale:g}"
        if hits is not None:
            names = ", ".join(html.escape(Path(path).name) for path in hits) or "no store"
            text += f"; this draw got litter from: {names}"
        if self._cube is not None and not with_cube:
            text += (f"; the cube is in {html.escape(str(self._cube.attrs.get('units')))}, which does not convert "
                     "to the litter's unit, so the litter is shown alone")
        return f"<small>{text}.</small>"

    def _update_preview(self) -> None:
        if self.value is None:
            self.preview.value = b""
            self.preview.layout.display = "none"
            self.caption.value = "<small>No litter store chosen: training inputs get no litter.</small>"
            return
        with report_errors(self.error):
            png, _, hits, with_cube = self._render()
            self.preview.value = png
            self.preview.layout.display = None
            self.caption.value = self._caption(hits, with_cube)

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict:
        """``{"litter": {"paths": [...], "p": ..., ["scale": ...]} or None}``: the ``litter`` field of a
        run config file."""
        if self.value is None:
            return {CONFIG_KEY: None}
        p = self.value["p"]
        return {CONFIG_KEY: {**self.value, "paths": list(self.value["paths"]),
                             "p": list(p) if isinstance(p, tuple) else p}}

    @classmethod
    def from_dict(cls, data, **kwargs) -> "LitterPicker":
        """A picker set from a run config dict (its ``"litter"`` entry), a RunConfig or a litter dict.

        A dict with ``"paths"`` is read as the litter itself; a run config dict without
        ``"litter"`` means no litter (the run-config default).  ``kwargs`` (``grid``,
        ``cube``, ``scale``...) go to the constructor; a missing store raises ValueError.
        """
        value = config_entry(data, CONFIG_KEY, lambda item: isinstance(item, Mapping) and "paths" in item,
                             "{'paths': [...], 'p': 0.5}")
        return cls(value=value, **kwargs)

    @classmethod
    def from_run(cls, run, **kwargs) -> "LitterPicker":
        """A picker holding the litter of a run (RunConfig, dict of its fields or YAML/JSON path);
        the run's grid, when it names one, becomes the picker's unless ``grid`` is given."""
        from ..train.run import as_run

        run = as_run(run)
        if run.grid is not None:
            kwargs.setdefault("grid", run.grid)
        return cls(value=run.litter, **kwargs)
