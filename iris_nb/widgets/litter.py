"""LitterPicker: choose litter stores (gas in front of / behind the CMZ) and their probabilities.

Litter stores are dataset stores written with ``model=near_side_litter`` (foreground gas,
between the Sun and the CMZ) or ``model=far_side_litter`` (background gas, beyond it); during
training each input independently receives one PV image of each store with probability ``p``
(:class:`~iris_nb.sim.litter.Litter`).  The picker edits the ``litter`` field of a run config:
``None`` or a :class:`~iris_nb.sim.litter_config.LitterConfig`.  The preview is drawn by
:mod:`iris_nb.widgets._litter_preview`.
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as ipw
import traitlets
import xarray as xr

from ..data.datasets import observation_scale
from ..grids import get_grid
from ..sim.litter_config import DEFAULT_P, LitterConfig, check_scale
from ._litter_preview import PREVIEWS, SIDE_LABELS, caption, draw_preview, open_litter, preview_unit, store_side
from .base import ConfigWidget, config_entry, report_errors
from .reduction import check_size, preview_cube

__all__ = ["LitterPicker", "SIDE_LABELS", "store_side"]

CONFIG_KEY = "litter"  # the RunConfig / CLI field this widget edits


class LitterPicker(ConfigWidget):
    """Choose litter stores and the probability of adding their images, with a preview.

    Parameters
    ----------
    stores:
        Paths of litter stores to start with (each with ``p = 0.5``), added after those of
        ``value``.
    value:
        The initial litter, as ``RunConfig.litter``: ``None``, a
        :class:`~iris_nb.sim.litter_config.LitterConfig` or its dict ``{"paths": [...], "p": ...,
        "scale": ...}``.
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
    value : LitterConfig or None
        The chosen stores, their ``p`` (one number when all stores share it) and the scale, as
        ``RunConfig.litter`` holds it; ``None`` without a store.  A dict may be assigned.  A
        missing store, a store of another PV shape or ``p`` outside [0, 1] show a message in
        the widget and keep the previous value.  Observe with
        ``picker.observe(handler, names="value")``.
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
        self._figsize, self._dpi = check_size(figsize, dpi)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        grid = None if grid is None else get_grid(grid)
        self._cube = None if cube is None else preview_cube(cube)
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
        scale = check_scale(1.0 if value is None else value.scale) if scale is None else check_scale(scale)
        stores = [stores] if isinstance(stores, (str, Path)) else list(stores)
        chosen = () if value is None else value.paths
        extra = [str(path) for path in stores if str(path) not in chosen]
        if extra:  # the stores not yet in value, with p = 0.5 each
            value = {"paths": list(chosen) + extra, "p": self._ps(value) + [DEFAULT_P] * len(extra)}
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

    def check_value(self, value) -> LitterConfig | None:
        """``None`` or the :class:`LitterConfig` of ``value`` (a LitterConfig or its dict) with
        stores that exist and fit together, else ValueError/TypeError saying what to fix."""
        if value is None:
            return None
        if isinstance(value, LitterConfig):
            value = value.to_dict()
        if not isinstance(value, Mapping):
            raise TypeError(f"litter must be None, a LitterConfig or a dict {{'paths': [...], 'p': 0.5}}, "
                            f"got {type(value).__name__}")
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
            value["paths"] = paths
        litter = LitterConfig.from_dict(value)
        infos = [self._info(path) for path in litter.paths]
        shape = self._shape or infos[0].grid.pv_shape
        for path, info in zip(litter.paths, infos):
            if info.grid.pv_shape != shape:
                raise ValueError(f"litter store {path} has PV images of shape (lon, velocity) = {info.grid.pv_shape} "
                                 f"but the training inputs are {shape}; write the litter on litter_grid(grid, side) "
                                 "of the run's grid")
        for info in infos[1:]:
            observation_scale(info.units["observation"], infos[0].units["observation"])  # ValueError if apart
        if isinstance(litter.p, tuple) and len(set(litter.p)) == 1:
            litter = litter.replace(p=litter.p[0])  # the same run: one p for every store
        return litter

    @staticmethod
    def _ps(value) -> list[float]:
        """One ``p`` per store of ``value`` (a list; empty for ``None``)."""
        return [] if value is None else list(value.ps)

    @traitlets.validate("scale")
    def _validate_scale(self, proposal):
        with report_errors(self.error):
            scale = check_scale(proposal["value"])
            self.error.clear()
            return scale
        return self.scale  # refused: the message says why

    @property
    def paths(self) -> tuple[str, ...]:
        """The chosen store paths (empty without a store)."""
        return () if self.value is None else self.value.paths

    @property
    def sides(self) -> dict:
        """``{path: "near" | "far" | ""}`` for the chosen stores (recorded side, else the user's choice)."""
        return {path: store_side(self._info(path)) or self._user_sides.get(path, "") for path in self.paths}

    @property
    def hit_fraction(self) -> float:
        """Probability that a training input receives litter from at least one store."""
        return 0.0 if self.value is None else self.value.hit_fraction

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
        if self.value is not None and self.value.scale != change["new"]:
            self.value = self.value.replace(scale=change["new"])  # redraws through _on_value
        else:
            self._update_preview()

    def _on_value(self, change) -> None:
        if self.value is not None and self.value.scale != self.scale:
            self.scale = self.value.scale
        old = () if change["old"] is None else change["old"].paths
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
    @property
    def pv(self) -> xr.DataArray | None:
        """The previewed image ``(lon, velocity)`` (cube PV plus litter, or litter alone), ``None`` without a store."""
        return None if self.value is None else self._render()[1]

    def _render(self):
        """``(png, pv, hit paths or None, whether the cube is shown)`` of the current preview (cached)."""
        kind = self.kind_toggle.value
        key = (tuple(self.paths), tuple(self._ps(self.value)), self.scale, kind, self.seed if kind == "example" else 0)
        if key not in self._cache:
            first = self._info(self.paths[0])
            unit, with_cube = preview_unit(first.units["observation"], self._cube)
            for path in self.paths:
                if (path, unit) not in self._data:
                    self._data[path, unit] = open_litter(path, unit)
            self._cache[key] = draw_preview(kind, self.paths, [self._data[path, unit] for path in self.paths],
                                            self._ps(self.value), self.scale, self.seed, first, unit,
                                            cube=self._cube if with_cube else None,
                                            figsize=self._figsize, dpi=self._dpi)
        return self._cache[key]

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
            self.caption.value = caption(self.paths, self._ps(self.value), self.sides, self.hit_fraction, self.scale,
                                         hits, self._cube, with_cube)

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict:
        """``{"litter": {"paths": [...], "p": ..., ["scale": ...]} or None}``: the ``litter`` field of a
        run config file."""
        return {CONFIG_KEY: None if self.value is None else self.value.to_dict()}

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
