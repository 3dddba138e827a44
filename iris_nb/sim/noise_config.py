"""The settings of survey noise: :class:`NoiseConfig` (an rms with the channel width it was
measured in, mean, fade, beam correlation) and :func:`as_noise_config`, the ``noise`` field of a
run.  :mod:`iris_nb.sim.noise` draws the noise; this module only describes and checks it.

The rms per cube pixel on a grid with channels ``dv`` km/s wide is
``sigma * sqrt(channel_width / dv)``: each grid channel averages ``dv / channel_width``
independent survey channels.  The defaults are SEDIGISM 13CO(2-1), 0.9 K in 0.25 km/s channels
(Schuller et al. 2021): 0.255 K per pixel on SMALL (3.125 km/s), 0.509 K on SEDIGISM (0.78 km/s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from .._files import ConfigFiles, check_fields
from ..grids import Grid, get_grid

__all__ = ["NoiseConfig", "as_noise_config", "PER_PIXEL", "SEDIGISM_RMS", "SEDIGISM_CHANNEL_WIDTH"]

SEDIGISM_RMS = 0.9
"""SEDIGISM 13CO(2-1) rms, K (Schuller et al. 2021: 0.8-1.0 K), in channels of :data:`SEDIGISM_CHANNEL_WIDTH`."""
SEDIGISM_CHANNEL_WIDTH = 0.25
"""Channel width (km/s) at which :data:`SEDIGISM_RMS` is measured."""
PER_PIXEL = "grid"
"""``channel_width`` meaning "sigma is the rms per pixel of the grid the noise is drawn on"."""
# What a noise dict without "channel_width" meant when it was written (before channel widths).
_LEGACY_DEFAULTS = {"sigma": 1.0, "channel_width": PER_PIXEL, "mean": 0.0, "fade": True, "correlated_beam": False}


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _channel_width(value) -> float | str:
    """``"grid"`` or a positive finite channel width in km/s."""
    if isinstance(value, str):
        if value.strip().lower() == PER_PIXEL:
            return PER_PIXEL
        raise ValueError(f"channel_width must be a width in km/s or 'grid', got {value!r}; give the channel "
                         "width the rms was measured in (SEDIGISM: 0.25), or 'grid' if sigma is already the "
                         "rms per pixel of the grid")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"channel_width must be a number of km/s or 'grid', got {value!r} ({type(value).__name__})")
    width = float(value)
    if not math.isfinite(width) or width <= 0:
        raise ValueError(f"channel_width must be > 0 km/s and finite, got {value}; give the channel width the "
                         "rms was measured in (SEDIGISM: 0.25)")
    return width


@dataclasses.dataclass(frozen=True)
class NoiseConfig(ConfigFiles):
    """Settings of :class:`~iris_nb.sim.noise.Noise`; validates itself and round-trips through JSON/YAML.

    ``NoiseConfig()`` is the SEDIGISM survey noise: 0.9 K rms in 0.25 km/s channels,
    beam-correlated, with a per-sample fade.  Give ``sigma`` and ``channel_width`` together
    (a survey rms means nothing without its channel width); every field after ``sigma`` is
    keyword-only.

    Parameters
    ----------
    sigma:
        Noise rms per cube pixel in channels of ``channel_width``, K (>= 0, finite).
        Default 0.9 (SEDIGISM, Schuller et al. 2021).
    channel_width:
        Velocity width of the channels ``sigma`` was measured in, km/s (> 0), default 0.25.
        On a grid with channels ``dv`` km/s wide the rms per pixel is
        ``sigma * sqrt(channel_width / dv)`` (:meth:`sigma_for`).  ``"grid"``: ``sigma`` is
        already the rms per pixel of the grid the noise is drawn on.
    mean:
        Noise mean (a baseline offset) per cube pixel, K (finite; not scaled with channels).
    fade:
        Scale the noise of each sample by its own ``U(0, 1)`` factor (default True).
    correlated_beam:
        Smooth the noise with the grid's Gaussian beam over (lon, lat) pixels (default True).

    Examples
    --------
    >>> round(NoiseConfig().sigma_for("SMALL"), 3)    # K per pixel of 3.125 km/s channels
    0.255
    >>> NoiseConfig(sigma=1.0, channel_width="grid").sigma_for("SMALL")
    1.0
    """

    sigma: float | None = None
    _: dataclasses.KW_ONLY
    channel_width: float | str | None = None
    mean: float = 0.0
    fade: bool = True
    correlated_beam: bool = True

    def __post_init__(self) -> None:
        if self.sigma is None and self.channel_width is None:
            object.__setattr__(self, "sigma", SEDIGISM_RMS)
            object.__setattr__(self, "channel_width", SEDIGISM_CHANNEL_WIDTH)
        elif self.channel_width is None:
            raise ValueError(
                f"sigma={self.sigma!r} needs the channel width it was measured in, because a survey rms falls "
                "as 1/sqrt(channel width): pass channel_width= in km/s (SEDIGISM 13CO(2-1): sigma=0.9, "
                "channel_width=0.25), or channel_width='grid' if sigma is already the rms per pixel of the "
                "grid the noise is drawn on")
        elif self.sigma is None:
            raise ValueError(f"channel_width={self.channel_width!r} without sigma=: give the rms (K) measured in "
                             "channels of that width too (SEDIGISM: sigma=0.9, channel_width=0.25)")
        sigma = _real(self.sigma, "sigma")
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be >= 0 K and finite, got {self.sigma}; give the noise rms in K "
                             "per channel of channel_width (SEDIGISM: 0.9 K per 0.25 km/s)")
        mean = _real(self.mean, "mean")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be a finite number of K, got {self.mean}")
        for flag in ("fade", "correlated_beam"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "channel_width", _channel_width(self.channel_width))
        object.__setattr__(self, "mean", mean)

    @property
    def per_pixel(self) -> bool:
        """Whether ``sigma`` is already the rms per grid pixel (``channel_width="grid"``)."""
        return self.channel_width == PER_PIXEL

    def sigma_for(self, grid=None) -> float:
        """Noise rms (K) per cube pixel on ``grid``: ``sigma * sqrt(channel_width / dv)``.

        ``grid`` is a :class:`~iris_nb.grids.Grid`, a preset name, or the grid's channel width
        ``dv`` in km/s.  With ``channel_width="grid"`` this is ``sigma`` and ``grid`` may be
        ``None``.  For the default (0.9 K per 0.25 km/s): 0.255 K on SMALL (3.125 km/s
        channels), 0.509 K on SEDIGISM (0.781 km/s).
        """
        if self.per_pixel:
            return self.sigma
        if grid is None:
            raise ValueError(f"sigma={self.sigma:g} K is the rms in {self.channel_width:g} km/s channels; the rms "
                             "per pixel needs the grid's channel width: pass a grid (or its channel width in km/s)")
        if isinstance(grid, (Grid, str, dict)):
            dv = get_grid(grid).velocity.step
        else:
            dv = _real(grid, "grid channel width")
            if not math.isfinite(dv) or dv <= 0:
                raise ValueError(f"the grid's channel width must be > 0 km/s, got {grid}")
        return self.sigma * math.sqrt(self.channel_width / dv)

    def describe(self) -> str:
        """``"0.9 K per 0.25 km/s channel"`` or ``"1 K per grid pixel"``."""
        if self.per_pixel:
            return f"{self.sigma:g} K per grid pixel"
        return f"{self.sigma:g} K per {self.channel_width:g} km/s channel"

    def to_dict(self) -> dict:
        """Plain dictionary (JSON/YAML-safe); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NoiseConfig":
        """Build a config from :meth:`to_dict` output; unknown keys are an error.

        A dict without ``channel_width`` was written before channel widths existed and is
        read with its meaning then: ``sigma`` per grid pixel, default 1 K, white noise
        (``correlated_beam=False``), fade on.
        """
        data = check_fields(cls, data, "NoiseConfig")
        if "channel_width" not in data:
            data = {**_LEGACY_DEFAULTS, **data}
        return cls(**data)


def as_noise_config(value) -> NoiseConfig | None:
    """The ``noise`` setting of a run: a :class:`NoiseConfig`, or ``None`` for no noise.

    Accepts ``None``/``False`` (no noise), ``True`` (the defaults: SEDIGISM 0.9 K per
    0.25 km/s channel, beam-correlated, fade), a NoiseConfig or a mapping of its fields
    (:meth:`NoiseConfig.from_dict`: without ``channel_width`` the old per-pixel meaning).
    Anything else raises TypeError; an impossible setting (``sigma < 0``, unknown keys,
    ``channel_width <= 0``) raises ValueError.
    """
    if value is None or value is False:
        return None
    if value is True:
        return NoiseConfig()
    if isinstance(value, NoiseConfig):
        return value
    if isinstance(value, Mapping):
        return NoiseConfig.from_dict(dict(value))
    raise TypeError(f"noise must be a NoiseConfig, a dict such as {{'sigma': 0.9, 'channel_width': 0.25}}, True "
                    f"(SEDIGISM defaults) or None (no noise), got {type(value).__name__} {value!r}")
