"""NoisePicker: edit the survey noise (a NoiseConfig, or no noise) with a seeded noisy PV preview.

The picker edits the ``noise`` field of a run config (:class:`~iris_nb.train.run.RunConfig`):
a :class:`~iris_nb.sim.noise.NoiseConfig` or ``None`` for noise-free training inputs.  It shows
the rms per cube pixel that ``sigma`` (measured in channels of ``channel_width`` km/s) implies on
the grid's channels, the noise level that training really adds to the latitude-reduced PV images
(the mean over ``n_lat`` latitude pixels divides the per-pixel rms by about ``sqrt(n_lat)``)
and, given a cube, one noisy PV image drawn with a fixed seed.  The numbers and the preview's
source image come from :mod:`iris_nb.widgets._noise_preview`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

import ipywidgets as ipw
import numpy as np
import torch
import traitlets
import xarray as xr

from ..grids import get_grid
from ..sim.noise import PER_PIXEL, Noise, NoiseConfig, as_noise_config
from .base import ConfigWidget, config_entry, render_png, report_errors
from ._noise_preview import _MAX_DRAWS, noise_levels, preview_source
from .reduction import REDUCTIONS, check_size, check_reduction

__all__ = ["NoisePicker", "check_noise", "noise_levels"]

check_noise = as_noise_config  # the value check of NoisePicker (and of RunConfig.noise)
CONFIG_KEY = "noise"  # the RunConfig / CLI field this widget edits
_FIELDS = tuple(f.name for f in dataclasses.fields(NoiseConfig))


def _channel_text(width) -> str:
    """The channel-width box's text: ``"grid"`` or the width in km/s."""
    return PER_PIXEL if width == PER_PIXEL else str(width)


def _parse_channel(text):
    """``"grid"`` or a number of km/s from the channel-width box (NoiseConfig checks the range)."""
    text = str(text).strip()
    if text.lower() == PER_PIXEL:
        return PER_PIXEL
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"channel width must be a number of km/s (SEDIGISM: 0.25) or 'grid', got {text!r}") from None


def _is_noise_entry(data) -> bool:
    """Whether ``data`` is a noise setting itself (a NoiseConfig or a dict of its fields only)."""
    return isinstance(data, NoiseConfig) or (isinstance(data, Mapping) and bool(data) and set(data) <= set(_FIELDS))


class NoisePicker(ConfigWidget):
    """Edit the survey noise of a training run, with its level in PV space and a noisy preview.

    Parameters
    ----------
    cube:
        Optional cube DataArray ``(lon, lat, velocity)`` (any dim order; brightness in K, mK,
        Jy/sr or Jy/beam with a beam) or PV image ``(lon, velocity)`` in such a unit.  With
        one, the widget shows the PV image (the cube reduced over latitude with ``reduction``)
        plus one noise draw, in K, seeded by ``seed``.  Without one it shows only the numbers.
    value:
        The initial noise: a :class:`~iris_nb.sim.noise.NoiseConfig`, a dict of its fields,
        ``True`` (defaults: SEDIGISM 0.9 K per 0.25 km/s channel, beam-correlated) or ``None``
        (no noise, the default).
    reduction:
        The latitude reduction of the PV images the noise is added to (``RunConfig.reduction``):
        ``"mean"`` or ``"max"``.  Not part of ``value``; editable as ``picker.reduction``.
    grid:
        The model grid: its channel width (km/s) turns ``sigma`` into the rms per cube pixel,
        its beam FWHM (arcsec) and lon/lat pixel sizes shape beam-correlated noise, and it
        gives ``n_lat`` without a cube.  Default: the cube's pixels, channels and
        ``attrs["beam_fwhm"]`` (else 30"), or SMALL (a PV image's own channels when its
        velocity coordinate has units).
    n_lat:
        Latitude pixels reduced, for a PV-image ``cube`` or no cube (default ``grid.lat.steps``).
    seed:
        Seed of the preview draw (same seed, same image).
    figsize, dpi:
        Size of the preview image in inches and its resolution (pixels per inch).

    Attributes
    ----------
    value : NoiseConfig or None
        The noise, as ``RunConfig.noise`` holds it.  Impossible settings (``sigma < 0``, a
        channel width that is not a positive number or ``grid``) show a message in the widget
        and keep the previous value.  Observe with
        ``picker.observe(handler, names="value")``.
    reduction : str
        ``"mean"`` or ``"max"``; link it to a :class:`ReductionPicker`'s ``value`` with
        ``traitlets.link``.
    levels : dict
        :func:`noise_levels` of the current value: rms per cube pixel, PV noise std and mean in K.
    preview : ipywidgets.Image or None
        The PNG preview, ``None`` without a cube.
    """

    reduction = traitlets.Unicode("mean", help="latitude reduction of the PV images the noise is added to")

    def __init__(self, cube=None, value=None, *, reduction: str = "mean", grid=None, n_lat: int | None = None,
                 seed: int = 0, figsize=(5.5, 3.4), dpi: int = 90) -> None:
        self._figsize, self._dpi = check_size(figsize, dpi)
        reduction = check_reduction(reduction)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        grid = None if grid is None else get_grid(grid)
        self._source, self._grid, self._n_lat = preview_source(cube, grid, n_lat)
        self._pv_clean = None
        self._cache: dict = {}
        self._syncing = False
        super().__init__(value, reduction=reduction)
        shown = self.value or NoiseConfig()
        self.enabled = ipw.Checkbox(value=self.value is not None, description="add noise", indent=False)
        self.sigma_input = ipw.FloatText(value=shown.sigma, step=0.1, description="sigma (K)")
        self.channel_input = ipw.Combobox(value=_channel_text(shown.channel_width), options=["0.25", PER_PIXEL],
                                          ensure_option=False, continuous_update=False,
                                          description="per (km/s)", placeholder="0.25 or grid")
        self.mean_input = ipw.FloatText(value=shown.mean, step=0.1, description="mean (K)")
        self.fade_input = ipw.Checkbox(value=shown.fade, description="fade (x U(0, 1) per sample)", indent=False)
        self.beam_input = ipw.Checkbox(value=shown.correlated_beam, description="beam-correlated", indent=False)
        self.reduction_toggle = ipw.ToggleButtons(options=list(REDUCTIONS), value=self.reduction,
                                                  description="PV", style={"button_width": "4em"})
        self._link = traitlets.link((self, "reduction"), (self.reduction_toggle, "value"))
        for control in self._controls():
            control.observe(self._on_control, names="value")
        self.levels_text = ipw.HTML(value="")
        children = [self.enabled, ipw.HBox([self.sigma_input, self.channel_input]), self.mean_input,
                    ipw.HBox([self.fade_input, self.beam_input]), self.reduction_toggle,
                    self.error.widget, self.levels_text]
        self.preview = None
        if self._source is not None:
            width = f"{round(self._figsize[0] * self._dpi)}px"
            self.preview = ipw.Image(format="png", layout=ipw.Layout(width=width, max_width="100%"))
            self.preview.add_class("iris-nb-preview")
            children.append(self.preview)
        self._widget = ipw.VBox(children)
        self._widget.add_class("iris-nb-noise-picker")
        self.observe(self._on_value, names="value")
        self.observe(self._on_reduction, names="reduction")
        self._sync_controls()
        self._update_preview()

    # ------------------------------------------------------------------ value
    def check_value(self, value) -> NoiseConfig | None:
        """A :class:`NoiseConfig` or ``None`` (see :func:`check_noise`), else ValueError/TypeError."""
        return check_noise(value)

    @traitlets.validate("reduction")
    def _validate_reduction(self, proposal):
        try:
            return check_reduction(proposal["value"])
        except (ValueError, TypeError) as err:
            self.error.show(str(err))
            return self.reduction

    def _controls(self):
        return (self.enabled, self.sigma_input, self.channel_input, self.mean_input, self.fade_input,
                self.beam_input)

    def _on_control(self, change) -> None:
        if self._syncing:
            return
        self._set_disabled()
        if not self.enabled.value:
            self.value = None
            return
        try:
            new = NoiseConfig(sigma=self.sigma_input.value, channel_width=_parse_channel(self.channel_input.value),
                              mean=self.mean_input.value, fade=self.fade_input.value,
                              correlated_beam=self.beam_input.value)
        except (ValueError, TypeError) as err:
            self.error.show(str(err))  # the value keeps its last valid setting
            return
        self.value = new

    def _set_disabled(self) -> None:
        for control in self._controls()[1:]:
            control.disabled = not self.enabled.value

    def _sync_controls(self) -> None:
        """Show ``value`` in the controls (a ``None`` value keeps the last settings, unticked)."""
        self._syncing = True
        try:
            self.enabled.value = self.value is not None
            if self.value is not None:
                self.sigma_input.value = self.value.sigma
                self.channel_input.value = _channel_text(self.value.channel_width)
                self.mean_input.value = self.value.mean
                self.fade_input.value = self.value.fade
                self.beam_input.value = self.value.correlated_beam
        finally:
            self._syncing = False
        self._set_disabled()

    def _on_value(self, change) -> None:
        self._sync_controls()
        self._update_preview()

    def _on_reduction(self, change) -> None:
        self._update_preview()

    # ---------------------------------------------------------------- preview
    @property
    def n_lat(self) -> int:
        """Number of latitude pixels the PV images are reduced over."""
        return self._n_lat

    @property
    def levels(self) -> dict:
        """:func:`noise_levels` of the current value and reduction (K)."""
        return self._render(self.value, self.reduction, image=False)[2]

    @property
    def pv(self) -> xr.DataArray | None:
        """The previewed PV image ``(lon, velocity)`` with its noise draw, in K (``None`` without a cube)."""
        if self._source is None:
            return None
        return self._render(self.value, self.reduction)[1]

    def _clean_pv(self, reduction: str) -> xr.DataArray:
        if self._source.ndim == 2:
            return self._source
        from ..cube import reduce_cube

        if self._pv_clean is None or self._pv_clean[0] != reduction:
            self._pv_clean = (reduction, reduce_cube(self._source, reduction))
        return self._pv_clean[1]

    def _render(self, config, reduction: str, image: bool = True):
        key = (config, reduction, image and self._source is not None)
        if key in self._cache:
            return self._cache[key]
        levels = noise_levels(config, reduction, self._n_lat, self._grid, self.seed)
        png = pv = None
        if key[2]:
            png, pv = self._draw_preview(config, reduction)
        self._cache[key] = (png, pv, levels)
        return self._cache[key]

    def _draw_preview(self, config, reduction: str):
        from ..plot import pv_image

        clean = self._clean_pv(reduction)
        pv = clean.astype(np.float64)
        title = f"PV image ({reduction} over lat), no noise"
        if config is not None:
            generator = torch.Generator().manual_seed(self.seed)
            fade = float(torch.rand(1, generator=generator, dtype=torch.float64)) if config.fade else 1.0
            noise = Noise.from_config(dataclasses.replace(config, fade=False), grid=self._grid)
            shape = (1,) + tuple(clean.shape)
            draw = noise.draw(shape, mode="pv", reduction=reduction, n_lat=self._n_lat,
                              generator=generator, dtype=torch.float64)[0].numpy()
            pv = pv + fade * draw
            faded = f", fade x{fade:.2f}" if config.fade else ""
            title = f"PV ({reduction}) + noise, {noise.sigma_pixel:.3g} K/pixel{faded}, seed {self.seed}"
        pv = pv.assign_attrs(units="K")
        # a linear stretch: asinh would lift the noise floor and hide how it compares to the signal
        png = render_png(lambda ax: pv_image(pv, ax=ax, title=title, stretch="linear"), self._figsize, self._dpi)
        return png, pv

    def _levels_html(self, levels: dict) -> str:
        config, n = self.value, self._n_lat
        if config is None:
            return "<small>No noise: training inputs stay noise-free.</small>"
        sigma = levels["sigma_pixel"]
        dv = self._grid.velocity.step
        if config.per_pixel:
            text = f"rms per cube pixel: <b>{sigma:.3g} K</b> (sigma as given, per grid pixel)"
        else:
            text = (f"rms per cube pixel: <b>{sigma:.3g} K</b> in the grid's {dv:.3g} km/s channels "
                    f"({config.sigma:g} K x sqrt({config.channel_width:g} / {dv:.3g}))")
        white = sigma / math.sqrt(n)
        beam = ""
        if config.correlated_beam and white > 0:
            beam = f", x {levels['pv_std_mean'] / white:.3g} as the pixels are beam-correlated"
        text += (f"; PV noise std for the mean over {n} latitude pixels: "
                 f"<b>{levels['pv_std_mean']:.3g} K</b> ({sigma:.3g} K / sqrt({n}) = {white:.3g} K{beam}), "
                 f"offset {config.mean:g} K")
        if levels["measured"]:
            text += (f"; for the max over {n} pixels: mean <b>{levels['pv_mean']:+.3g} K</b>, "
                     f"std <b>{levels['pv_std']:.3g} K</b> (measured on {_MAX_DRAWS[1] * _MAX_DRAWS[2]} "
                     "seeded pixels; exact on blank sky)")
        if config.fade:
            text += "; with fade each sample's noise is scaled by its own U(0, 1) factor"
        return f"<small>{text}.</small>"

    def _update_preview(self) -> None:
        with report_errors(self.error):
            png, _, levels = self._render(self.value, self.reduction)
            self.levels_text.value = self._levels_html(levels)
            if self.preview is not None:
                self.preview.value = png

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict:
        """``{"noise": NoiseConfig.to_dict() or None}``: the ``noise`` field of a run config file.

        ``None`` means no noise, as in ``RunConfig(noise=None)``; merge the dict into a run
        config dict (``{**run_dict, **picker.to_dict()}``) to set the noise of a run.
        """
        return {CONFIG_KEY: None if self.value is None else self.value.to_dict()}

    @classmethod
    def from_dict(cls, data, cube=None, **kwargs) -> "NoisePicker":
        """A picker set from a config dict, a RunConfig (or like object) or a NoiseConfig dict.

        ``data`` may be a whole run config dict: only its ``"noise"`` entry is used, and a
        dict without one means no noise (the run-config default).  A dict whose keys are all
        NoiseConfig fields (``{"sigma": 0.9, "channel_width": 0.25}``) is read as the noise
        itself (without ``channel_width``: sigma per grid pixel, as such dicts meant before).  ``cube`` and
        ``kwargs`` go to the constructor; bad settings raise ValueError.
        """
        value = config_entry(data, CONFIG_KEY, _is_noise_entry, "{'sigma': 0.9, 'channel_width': 0.25}")
        return cls(cube=cube, value=value, **kwargs)

    @classmethod
    def from_run(cls, run, cube=None, **kwargs) -> "NoisePicker":
        """A picker holding the noise of a run: a RunConfig, a dict of its fields or a YAML/JSON path.

        The run's ``reduction`` and ``grid`` become the picker's unless given in ``kwargs``.
        """
        from ..train.run import as_run

        run = as_run(run)
        kwargs.setdefault("reduction", run.reduction)
        if run.grid is not None and cube is None:
            kwargs.setdefault("grid", run.grid)
        return cls(cube=cube, value=run.noise, **kwargs)
