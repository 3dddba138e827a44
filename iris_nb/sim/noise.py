"""Thermal noise of a line survey, in cube space or directly in latitude-reduced PV space.

A survey quotes its noise as an rms ``sigma`` (K) *in channels of a stated width*: SEDIGISM
13CO(2-1) has 0.9 K in 0.25 km/s channels (Schuller et al. 2021), the default here.  On a grid
whose velocity channels are ``dv`` km/s wide, each channel averages ``dv / channel_width``
independent survey channels, so the rms per cube pixel is

    sigma_pixel = sigma * sqrt(channel_width / dv)

(0.255 K on SMALL's 3.125 km/s channels, 0.509 K on SEDIGISM's 0.78 km/s channels).  Only the
channel width is scaled; a (lon, lat) pixel is taken to carry the survey's per-pixel rms, and
the beam sets the spatial correlation.  ``channel_width="grid"`` says that ``sigma`` already
is the rms per pixel of whatever grid the noise is drawn on (the meaning before channel widths
were given; noise dicts and files without a ``channel_width`` key are read this way; see
:mod:`iris_nb.sim.noise_config`).  The noise is Gaussian with mean ``mean`` (a baseline offset, K, not scaled).

Training inputs are PV images, the latitude reduction of the cube, so the noise must follow
the law that the reduction produces (below ``sigma`` stands for ``sigma_pixel``):

* ``reduction="mean"`` over ``n_lat`` pixels: Gaussian, std ``sigma / sqrt(n_lat)`` (the
  latitude count, not the longitude count as in the reference code).
* ``reduction="max"``: the maximum of ``n_lat`` draws, sampled exactly through the inverse CDF
  ``Phi^-1(U**(1/n_lat))`` of that maximum.  This is exact for blank pixels; where the cube has
  signal the true law of ``max(signal + noise)`` depends on the unknown latitude profile, so
  adding max-noise to a max-reduced image is an approximation there (it over-estimates the
  upward bias of bright pixels, whose maximum is dominated by one latitude pixel).
* ``correlated_beam=True`` (the default): white noise smoothed by the grid's Gaussian beam
  over the (lon, lat) pixels and renormalised so the per-pixel rms stays ``sigma``.  Velocity
  channels stay independent.  The latitude mean of such noise has variance
  ``sigma**2 * g / n_lat`` with ``g = 1 + 2 sum_k (1 - k/n_lat) rho_lat(k)`` (``rho_lat`` the
  pixel correlation along latitude), and stays correlated along longitude; both are drawn
  exactly and cheaply.  The max of correlated pixels has no closed form, so it is drawn from
  explicit cube noise (exact but costly: a full (lon, lat, v) draw per sample, seconds per
  SEDIGISM sample on one CPU core; use a GPU, the mean reduction or ``correlated_beam=False``
  for large batches).  A beam much narrower than a pixel (SMALL: 30" beam, 84" pixels; the
  neighbour correlation is below 1e-6) leaves white noise, drawn by the fast laws above.

Fade: with ``fade=True`` every sample of a batch gets its own factor ``f ~ U(0, 1)`` that
multiplies the *whole* noise term, offset included (``x + f * (mean + sigma * z)``): ``f = 0``
gives the clean image and a baseline offset weakens together with the noise it belongs to.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cube import REDUCTIONS
from ..grids import Grid, get_grid
from .noise_config import PER_PIXEL, SEDIGISM_CHANNEL_WIDTH, SEDIGISM_RMS, NoiseConfig, as_noise_config

__all__ = ["NoiseConfig", "Noise", "as_noise_config", "beam_kernel", "PER_PIXEL", "SEDIGISM_RMS",
           "SEDIGISM_CHANNEL_WIDTH"]

MODES = ("pv", "cube")
_CHUNK_ELEMENTS = 1 << 24  # white-noise values drawn at once for correlated cube noise (64 MB)
_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))


def beam_kernel(fwhm_arcsec: float, pixel_arcsec: float) -> np.ndarray:
    """1-D Gaussian beam sampled at pixel centres, normalised to unit sum of squares.

    White noise of unit variance convolved with this kernel keeps unit variance, and the
    correlation of two pixels ``k`` apart is ``sum_i w[i] w[i + k]``.  Shape ``(2 r + 1,)``
    with ``r = max(1, ceil(4 sigma_pix))``; ``[1.0]`` for a zero beam.  ``fwhm_arcsec`` and
    ``pixel_arcsec`` in arcsec.
    """
    if pixel_arcsec <= 0:
        raise ValueError(f"pixel size must be > 0 arcsec, got {pixel_arcsec}")
    sigma_pix = fwhm_arcsec / _FWHM_PER_SIGMA / pixel_arcsec
    if sigma_pix <= 0:
        return np.ones(1)
    radius = max(1, math.ceil(4.0 * sigma_pix))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma_pix) ** 2)
    return weights / math.sqrt(float(np.sum(weights**2)))


def _significant(kernel: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
    """``kernel`` without the tail weights below ``tolerance`` x its peak, renormalised to unit
    sum of squares; ``[1.0]`` when only the centre is left (neighbour correlation < 1e-6)."""
    kept = np.flatnonzero(kernel >= tolerance * kernel.max())
    trimmed = kernel[kept[0]: kept[-1] + 1]
    return trimmed / math.sqrt(float(np.sum(trimmed**2)))


def _autocorrelation(kernel: np.ndarray, lag: int) -> float:
    lag = abs(int(lag))
    if lag >= kernel.size:
        return 0.0
    return float(np.sum(kernel[: kernel.size - lag] * kernel[lag:]))


def _smooth_last(values: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Valid convolution along the last dim: length ``L + 2r`` -> ``L``."""
    if kernel.numel() == 1:
        return values * kernel[0]
    shape = values.shape
    out = F.conv1d(values.reshape(-1, 1, shape[-1]), kernel.view(1, 1, -1))
    return out.reshape(*shape[:-1], out.shape[-1])


def _check_grid_free(config: NoiseConfig) -> None:
    """Raise unless ``config`` can be drawn without a grid (per-pixel sigma, white noise)."""
    needs = []
    if not config.per_pixel:
        needs.append(f"its channel width scales sigma ({config.describe()}) to the rms per pixel")
    if config.correlated_beam:
        needs.append("correlated_beam=True needs its beam_fwhm and lon/lat pixel sizes")
    if needs:
        raise ValueError("Noise needs grid=: " + "; ".join(needs) + ". Pass e.g. grid=iris_nb.grids.SMALL, or, for "
                         "white noise whose sigma is the rms per pixel of whatever it is drawn on, "
                         "Noise(sigma=..., channel_width='grid', correlated_beam=False)")


class Noise(nn.Module):
    """Add survey noise to PV images or cubes (see the module text for the laws).

    ``Noise(grid=grid)`` is the SEDIGISM survey noise on ``grid``: 0.9 K rms in 0.25 km/s
    channels scaled to the grid's channels (:attr:`sigma_pixel`), beam-correlated, with a
    per-sample fade.  Every argument after ``sigma`` is keyword-only.

    Parameters
    ----------
    sigma:
        Noise rms per cube pixel in channels of ``channel_width``, K (>= 0); give it together
        with ``channel_width``.  Default 0.9 K (SEDIGISM).
    channel_width:
        Channel width ``sigma`` was measured in, km/s (default 0.25), or ``"grid"`` when
        ``sigma`` is already the rms per pixel of ``grid`` (or of whatever is drawn on,
        without a grid).
    mean:
        Noise mean per cube pixel, K.
    fade:
        Multiply the noise of each sample by its own factor ``f ~ U(0, 1)`` (default True).
    correlated_beam:
        Beam-correlated noise (default True); needs ``grid`` (beam FWHM and pixel sizes).
    grid:
        :class:`~iris_nb.grids.Grid` or preset name: its channel width scales ``sigma`` to the
        rms per pixel, it gives ``n_lat`` in PV mode (unless passed to :meth:`forward`) and
        the beam and pixel sizes for ``correlated_beam``.  Needed unless
        ``channel_width="grid"`` and ``correlated_beam=False``.

    Attributes
    ----------
    config : NoiseConfig
        The settings.
    sigma_pixel : float
        Noise rms per cube pixel on ``grid``, K (:meth:`NoiseConfig.sigma_for`).
    """

    def __init__(self, sigma: float | None = None, *, channel_width: float | str | None = None, mean: float = 0.0,
                 fade: bool = True, correlated_beam: bool = True, grid: Grid | str | None = None) -> None:
        super().__init__()
        self.config = NoiseConfig(sigma=sigma, channel_width=channel_width, mean=mean, fade=fade,
                                  correlated_beam=correlated_beam)
        self.grid = None if grid is None else get_grid(grid)
        if self.grid is None:
            _check_grid_free(self.config)
        self.sigma_pixel = self.config.sigma_for(self.grid)
        if self.config.correlated_beam:
            self.kernel_lon = _significant(beam_kernel(self.grid.beam_fwhm, self.grid.lon.step * 3600.0))
            self.kernel_lat = _significant(beam_kernel(self.grid.beam_fwhm, self.grid.lat.step * 3600.0))
        else:
            self.kernel_lon = self.kernel_lat = np.ones(1)
        # A beam much narrower than a pixel (SMALL: 30" beam, 84" pixels) leaves no correlation
        # worth drawing, and the fast white-noise laws apply exactly.
        self._correlated = self.kernel_lon.size > 1 or self.kernel_lat.size > 1
        self._gains: dict[int, float] = {}

    @classmethod
    def from_config(cls, config: NoiseConfig | dict, grid: Grid | str | None = None) -> "Noise":
        """Build from a :class:`NoiseConfig` (or its dict, see :meth:`NoiseConfig.from_dict`)."""
        if isinstance(config, dict):
            config = NoiseConfig.from_dict(config)
        if not isinstance(config, NoiseConfig):
            raise TypeError(f"config must be a NoiseConfig or dict, got {type(config).__name__}")
        return cls(**config.to_dict(), grid=grid)

    def extra_repr(self) -> str:
        c = self.config
        grid = f", grid={self.grid.name!r}" if self.grid is not None else ""
        pixel = ""
        if not c.per_pixel:
            pixel = f" = {self.sigma_pixel:.3g} K per {self.grid.velocity.step:.3g} km/s pixel"
        return (f"sigma={c.describe()}{pixel}, mean={c.mean:g} K, fade={c.fade}, "
                f"correlated_beam={c.correlated_beam}{grid}")

    # ----------------------------------------------------------------- laws
    def beam_correlation(self, lag_lon: int = 0, lag_lat: int = 0) -> float:
        """Correlation coefficient of cube noise between pixels ``lag_lon``, ``lag_lat`` apart
        (1 at zero lag; 0 off zero lag for white noise)."""
        return _autocorrelation(self.kernel_lon, lag_lon) * _autocorrelation(self.kernel_lat, lag_lat)

    def latitude_mean_gain(self, n_lat: int) -> float:
        """``g`` such that the latitude mean of ``n_lat`` noise pixels has variance
        ``sigma_pixel**2 * g / n_lat`` (1 for white noise, > 1 for beam-correlated noise)."""
        n_lat = self._check_n_lat(n_lat)
        if n_lat not in self._gains:
            self._gains[n_lat] = 1.0 + 2.0 * sum((1.0 - k / n_lat) * _autocorrelation(self.kernel_lat, k)
                                                 for k in range(1, min(n_lat, self.kernel_lat.size)))
        return self._gains[n_lat]

    def pv_std(self, n_lat: int | None = None) -> float:
        """Standard deviation (K) of the PV noise for ``reduction="mean"`` at fade 1."""
        n_lat = self._resolve_n_lat(n_lat)
        return self.sigma_pixel * math.sqrt(self.latitude_mean_gain(n_lat) / n_lat)

    # ---------------------------------------------------------------- checks
    @staticmethod
    def _check_n_lat(n_lat) -> int:
        if isinstance(n_lat, bool) or not isinstance(n_lat, (int, np.integer)) or n_lat < 1:
            raise ValueError(f"n_lat must be a positive integer (latitude pixels reduced), got {n_lat!r}")
        return int(n_lat)

    def _resolve_n_lat(self, n_lat) -> int:
        if n_lat is None:
            if self.grid is None:
                raise ValueError("PV-mode noise needs the number of latitude pixels that were reduced: "
                                 "pass n_lat= to forward or build Noise(grid=...)")
            n_lat = self.grid.lat.steps
        return self._check_n_lat(n_lat)

    @staticmethod
    def _check_shape(shape, mode: str) -> tuple[int, ...]:
        """Return ``(B, lon, v)`` or ``(B, lon, lat, v)`` from an input shape."""
        shape = tuple(int(s) for s in shape)
        core = {"pv": 3, "cube": 4}[mode]
        if len(shape) == core + 1 and shape[1] == 1:
            return (shape[0],) + shape[2:]
        if len(shape) == core:
            return shape
        expected = "(B, 1, lon, v) or (B, lon, v)" if mode == "pv" else "(B, 1, lon, lat, v) or (B, lon, lat, v)"
        raise ValueError(f"mode={mode!r} noise expects input of shape {expected}, got {shape}; "
                         "use mode='cube' for cubes and mode='pv' for PV images")

    # --------------------------------------------------------------- drawing
    def draw(self, shape, mode: str = "pv", reduction: str = "mean", n_lat: int | None = None,
             generator: torch.Generator | None = None, device=None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw a noise tensor of ``shape`` (the shape of the images it will be added to).

        ``shape`` is ``(B, 1, lon, v)`` / ``(B, lon, v)`` in PV mode or ``(B, 1, lon, lat, v)``
        / ``(B, lon, lat, v)`` in cube mode; the result has that shape, in K, on ``device``.
        Random numbers come from ``generator`` (drawn on its device) or the global RNG.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        core = self._check_shape(shape, mode)
        if mode == "pv":
            n_lat = self._resolve_n_lat(n_lat)
        gen_device = generator.device if generator is not None else torch.device(device or "cpu")
        work = torch.float64 if dtype == torch.float64 else torch.float32
        kw = {"generator": generator, "device": gen_device}
        batch = core[0]
        if self.config.fade:
            fade = torch.rand(batch, dtype=work, **kw)
        else:
            fade = torch.ones(batch, dtype=work, device=gen_device)
        if mode == "cube":
            z = self._cube(core, None, kw, work)
        elif reduction == "mean":
            z = self._pv_mean(core, n_lat, kw, work)
        elif self._correlated and n_lat > 1:
            b, n_lon, n_v = core
            z = self._cube((b, n_lon, n_lat, n_v), "max", kw, work)
        else:
            z = self._pv_max_white(core, n_lat, kw, work)
        fade = fade.view((batch,) + (1,) * (z.ndim - 1))
        noise = fade * (self.config.mean + self.sigma_pixel * z)
        return noise.reshape(tuple(int(s) for s in shape)).to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mode: str = "pv", reduction: str = "mean",
                n_lat: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return ``x`` plus noise, same shape, device and dtype.

        Parameters
        ----------
        x:
            PV images ``(B, 1, lon, v)`` (or ``(B, lon, v)``) for ``mode="pv"``, cubes
            ``(B, 1, lon, lat, v)`` (or ``(B, lon, lat, v)``) for ``mode="cube"``; brightness in K.
        mode:
            ``"pv"`` (noise of a latitude-reduced cube) or ``"cube"`` (per-pixel noise).
        reduction:
            PV mode only: how the latitude axis was reduced, ``"mean"`` or ``"max"``.
        n_lat:
            PV mode only: latitude pixels reduced; default ``grid.lat.steps``.
        generator:
            ``torch.Generator`` for reproducible noise (same seed, same noise).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Noise expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"Noise expects a floating-point tensor, got dtype {x.dtype}")
        noise = self.draw(x.shape, mode=mode, reduction=reduction, n_lat=n_lat,
                          generator=generator, device=x.device, dtype=x.dtype)
        return x + noise

    # ---------------------------------------------------------- unit draws
    def _kernels(self, device, dtype):
        return (torch.as_tensor(self.kernel_lon, device=device, dtype=dtype),
                torch.as_tensor(self.kernel_lat, device=device, dtype=dtype))

    def _pv_mean(self, core, n_lat, kw, dtype) -> torch.Tensor:
        """Unit-sigma latitude mean noise ``(B, lon, v)``, exact for white and beam noise."""
        b, n_lon, n_v = core
        scale = math.sqrt(self.latitude_mean_gain(n_lat) / n_lat)
        if not self._correlated:
            return scale * torch.randn(b, n_lon, n_v, dtype=dtype, **kw)
        k_lon, _ = self._kernels(kw["device"], dtype)
        pad = k_lon.numel() - 1
        white = torch.randn(b, n_v, n_lon + pad, dtype=dtype, **kw)
        return scale * _smooth_last(white, k_lon).transpose(1, 2)

    @staticmethod
    def _pv_max_white(core, n_lat, kw, dtype) -> torch.Tensor:
        """Max of ``n_lat`` iid N(0, 1), by the inverse CDF ``Phi(m) = U**(1/n)`` in float64.

        ``m = -Phi^-1(1 - U**(1/n))`` with ``1 - U**(1/n) = -expm1(log(U) / n)`` keeps the
        upper tail accurate."""
        u = torch.rand(core, dtype=torch.float64, **kw).clamp_min_(torch.finfo(torch.float64).tiny)
        tail = -torch.expm1(torch.log(u) / n_lat)
        return (-torch.special.ndtri(tail)).to(dtype)

    def _cube(self, core, reduce: str | None, kw, dtype) -> torch.Tensor:
        """Unit-sigma cube noise ``(B, lon, lat, v)``, or its max over lat ``(B, lon, v)``.

        Beam-correlated noise is drawn in velocity chunks: white noise on a padded
        ``(lon, lat)`` plane, smoothed along lon and lat (valid convolution, so every pixel
        has the full kernel and the rms is the same at the edges)."""
        b, n_lon, n_lat, n_v = core
        if not self._correlated:
            z = torch.randn(b, n_lon, n_lat, n_v, dtype=dtype, **kw)
            return z if reduce is None else z.amax(dim=2)
        k_lon, k_lat = self._kernels(kw["device"], dtype)
        p_lon, p_lat = k_lon.numel() - 1, k_lat.numel() - 1
        per_channel = b * (n_lon + p_lon) * (n_lat + p_lat)
        chunk = max(1, min(n_v, _CHUNK_ELEMENTS // max(1, per_channel)))
        parts = []
        for start in range(0, n_v, chunk):
            n = min(chunk, n_v - start)
            white = torch.randn(b, n, n_lon + p_lon, n_lat + p_lat, dtype=dtype, **kw)
            smooth = _smooth_last(white, k_lat)                          # (b, n, lon+p, lat)
            smooth = _smooth_last(smooth.transpose(2, 3), k_lon)         # (b, n, lat, lon)
            if reduce is None:
                parts.append(smooth.permute(0, 3, 2, 1))                 # (b, lon, lat, n)
            else:
                parts.append(smooth.amax(dim=2).transpose(1, 2))         # (b, lon, n)
        return torch.cat(parts, dim=-1)
