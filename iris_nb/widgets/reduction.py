"""ReductionPicker: choose how a cube is collapsed over latitude, with a live PV preview."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as ipw
import numpy as np
import traitlets
import xarray as xr

from ..cube import REDUCTIONS, reduce_cube, standardize_cube
from .base import ConfigWidget, render_png, report_errors

__all__ = ["ReductionPicker", "REDUCTIONS"]

CONFIG_KEY = "reduction"  # the RunConfig / CLI field this widget edits
_TOOLTIPS = (
    "average over the observed latitude pixels (NaN ignored); the paper's choice",
    "brightest latitude pixel (NaN ignored)",
)


def check_reduction(value) -> str:
    """``"mean"`` or ``"max"`` from ``value`` (case and spaces ignored), else ValueError/TypeError."""
    if not isinstance(value, str):
        raise TypeError(f"the reduction must be a string 'mean' or 'max', got {type(value).__name__} {value!r}")
    name = value.strip().lower()
    if name not in REDUCTIONS:
        raise ValueError(
            f"reduction {value!r} is not available; choose 'mean' (average over latitude, the "
            "paper's choice) or 'max' (brightest latitude pixel)"
        )
    return name


def preview_cube(cube) -> xr.DataArray:
    """The cube standardised to ``(lon, lat, velocity)`` for previews (checked, no data copy)."""
    if not isinstance(cube, xr.DataArray):
        raise TypeError(
            f"cube must be an xarray.DataArray (lon, lat, velocity), got {type(cube).__name__}; "
            "open a FITS file with iris_nb.open_cube(path)"
        )
    std = standardize_cube(cube, to_kelvin=False)
    if std.ndim != 3:
        raise ValueError(
            f"the preview shows one cube, but this one has dims {tuple(cube.dims)}; "
            f"select one cube of the stack first, e.g. cube.isel({std.dims[0]}=0)"
        )
    return std


def check_size(figsize, dpi) -> tuple[tuple[float, float], int]:
    """Validated preview size: ``(width, height)`` in inches and dots per inch."""
    try:
        width, height = (float(x) for x in figsize)
    except (TypeError, ValueError):
        raise TypeError(f"figsize must be (width, height) in inches, got {figsize!r}") from None
    if not (0 < width <= 30 and 0 < height <= 30):
        raise ValueError(f"figsize must be positive and at most 30 inches, got {figsize!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 400:
        raise ValueError(f"dpi must be a number between 10 and 400, got {dpi!r}")
    return (width, height), int(dpi)


class ReductionPicker(ConfigWidget):
    """Pick the latitude reduction (``"mean"`` or ``"max"``) and preview its PV image.

    Parameters
    ----------
    cube:
        Optional cube DataArray ``(lon, lat, velocity)`` (any dim order, brightness in
        ``attrs["units"]``, e.g. K; NaN where unobserved).  With a cube the widget shows
        the PV image ``(lon, velocity)`` of the chosen reduction and redraws it when the
        value changes.  Regrid large cubes first (``cube.iris.regrid(grid)``) for a quick preview.
    value:
        The initial reduction, ``"mean"`` (default) or ``"max"``.
    figsize, dpi:
        Size of the preview image in inches and its resolution (pixels per inch).

    Attributes
    ----------
    value : str
        The reduction, the package's config value for it (``RunConfig.reduction``,
        ``Reverter(reduction=...)``).  Assigning anything else shows a message in the widget
        and keeps the previous value.  Observe with ``picker.observe(handler, names="value")``.
    widget : ipywidgets.VBox
        The top-level container: the mean|max toggle, the message line, the preview image
        and a caption.
    preview : ipywidgets.Image or None
        The PNG preview (``bytes(preview.value)`` are the PNG bytes), ``None`` without a cube.
    """

    def __init__(self, cube=None, value: str = "mean", *, figsize=(5.5, 3.4), dpi: int = 90) -> None:
        self._figsize, self._dpi = check_size(figsize, dpi)
        self._cube = None if cube is None else preview_cube(cube)
        self._cache: dict[str, tuple[bytes, xr.DataArray]] = {}
        self._nan_fraction = None
        super().__init__(value)
        self.toggle = ipw.ToggleButtons(
            options=[(name, name) for name in REDUCTIONS],
            value=self.value,
            description="Reduction",
            tooltips=list(_TOOLTIPS),
            style={"button_width": "5em"},
        )
        self.toggle.add_class("iris-nb-reduction-toggle")
        self._link = traitlets.link((self, "value"), (self.toggle, "value"))
        children = [self.toggle, self.error.widget]
        self.preview = None
        self.caption = ipw.HTML(value="")
        if self._cube is not None:
            width = f"{round(self._figsize[0] * self._dpi)}px"  # natural size, not stretched
            self.preview = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="100%"))
            self.preview.add_class("iris-nb-preview")
            children += [self.preview, self.caption]
        self._widget = ipw.VBox(children)
        self._widget.add_class("iris-nb-reduction-picker")
        self.observe(self._on_value, names="value")
        self._update_preview()

    # ------------------------------------------------------------------ value
    def check_value(self, value) -> str:
        """``"mean"`` or ``"max"`` (case-insensitive), else ValueError/TypeError."""
        return check_reduction(value)

    def _on_value(self, change) -> None:
        self._update_preview()

    # ---------------------------------------------------------------- preview
    @property
    def pv(self) -> xr.DataArray | None:
        """PV image ``(lon, velocity)`` of the current reduction, in the cube's unit (``None`` without a cube)."""
        if self._cube is None:
            return None
        return self._render(self.value)[1]

    def _render(self, how: str) -> tuple[bytes, xr.DataArray]:
        if how not in self._cache:
            from ..plot import pv_image

            pv = reduce_cube(self._cube, how)
            png = render_png(lambda ax: pv_image(pv, ax=ax, title=f"PV image, {how} over latitude"),
                             self._figsize, self._dpi)
            self._cache[how] = (png, pv)
        return self._cache[how]

    def _update_preview(self) -> None:
        if self._cube is None:
            return
        with report_errors(self.error):
            png, pv = self._render(self.value)
            self.preview.value = png
            n_lat = self._cube.sizes["lat"]
            empty = float(pv.attrs.get("all_nan_fraction", 0.0))
            if self._nan_fraction is None:
                self._nan_fraction = float(np.isnan(np.asarray(self._cube.values)).mean())
            nan_voxels = self._nan_fraction
            self.caption.value = (
                f"<small>{self.value} over {n_lat} latitude pixels, NaN ignored; "
                f"{100 * nan_voxels:.1f}% of the cube's voxels are NaN, "
                f"{100 * empty:.1f}% of PV pixels had no valid latitude (set to 0)</small>"
            )

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict:
        """``{"reduction": value}``: the field of the run config files (``RunConfig.reduction``)."""
        return {CONFIG_KEY: self.value}

    @classmethod
    def from_dict(cls, data, cube=None, **kwargs) -> "ReductionPicker":
        """A picker set from a config dict (or a RunConfig-like object with ``.reduction``).

        ``data`` may be the whole run config: only its ``"reduction"`` entry is used; without
        one the default ``"mean"`` applies, as in the run config.  An unknown reduction raises
        ValueError.  ``cube`` and ``kwargs`` go to the constructor.
        """
        if isinstance(data, Mapping):
            value = data.get(CONFIG_KEY, "mean")
        elif hasattr(data, CONFIG_KEY):
            value = getattr(data, CONFIG_KEY)
        else:
            raise TypeError(
                f"from_dict expects a dict such as {{'reduction': 'mean'}} or a config with a "
                f"'reduction' field, got {type(data).__name__}"
            )
        return cls(cube=cube, value=value, **kwargs)
