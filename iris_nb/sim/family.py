"""Reality check of a gas-model family: draw samples, observe them, compare with the real CMZ.

:func:`family_summary` draws ``n`` fields of a model family (default
:func:`~iris_nb.sim.cmz.make_cmz`), observes each (default the 13CO(2-1)
:class:`~iris_nb.sim.observers.LineObserver` of the grid, in K) and tabulates one row of
observables per sample.  The family's median of each observable is then set against the
range published for the real Central Molecular Zone (:data:`PUBLISHED_RANGES`).

Observables (columns of :attr:`FamilySummary.table`; cube ``T(lon, lat, v)`` in K, the
latitude-mean PV image ``P(lon, v)``, channel width ``dv`` km/s):

``cube_peak_K``
    ``max T``: the brightest cube pixel, K.
``pv_peak_K``
    ``max P``, K.
``integrated_intensity_K_km_s``
    Window-mean integrated intensity ``mean_{lon, lat} sum_v T dv``, K km/s (multiply by
    the window's solid angle for a luminosity).
``line_width_km_s``
    Effective line width of the brightest velocity component of each bright sightline:
    for each ``(lon, lat)`` spectrum with peak ``T_pk >= 0.25 max T`` (``bright_fraction``),
    the contiguous run of channels around the peak channel with ``T >= 0.1 T_pk``
    (``component_fraction``) gives the equivalent-width dispersion
    ``sigma = sum_run T dv / (sqrt(2 pi) T_pk)`` (exactly ``sigma`` for one Gaussian line
    wider than a channel, 3% low from the cut at 10%); the column is the median over those
    sightlines, km/s.  A sightline's other velocity components (the far side of the ring)
    are left out, as a cloud catalogue separates them.
``h2_mass_msun``
    H2 mass in the grid's window from the field itself (not from the emission):
    ``sum 2 x_h2 X density V_cell`` with the exact cell volume
    ``V = (d_hi^3 - d_lo^3) / 3 * dl * (sin b_hi - sin b_lo)`` (``dl`` in rad), solMass.
``lv_velocity_span_km_s``, ``lv_lon_span_deg``
    Extent of the l-v footprint: from the lowest to the highest channel edge (longitude
    pixel edge) holding a PV pixel with ``P >= 0.5 K`` (``lv_threshold``); 0 when none.
``v_sgr_b2_km_s``, ``v_sgr_c_km_s``
    Intensity-weighted mean velocity of the PV pixels ``P >= lv_threshold`` within
    ``0.05 deg`` (``feature_half_width``) of the longitudes of Sgr B2 (``l = +0.67``) and
    Sgr C (``l = -0.57``), km/s; NaN when nothing there is that bright.
``v_peak_sgr_b2_km_s``, ``v_peak_sgr_c_km_s``
    Velocity of the brightest channel of the mean spectrum over the same longitudes (NaN
    when its peak is below ``lv_threshold``), km/s.
``noise_rms_K``
    Only when ``noise`` is given: rms of the noise added to the cube, rescaled to 0.25 km/s
    channels (``rms * sqrt(dv / 0.25)``), K, to compare with the survey's quoted rms.

With ``noise`` every observable is measured on the noisy cube, as on the sky.  Medians skip
NaN.  ``pv_peak_K``, the integrated intensity and the l-v extent have no published range
here and are reported, not judged.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time

import numpy as np
import pandas as pd
import torch

from ..grids import SMALL, Grid
from .cmz import make_cmz
from .observables import SGR_B2_LON, SGR_C_LON, cell_volumes, cube_observables, effective_line_width, h2_mass  # noqa: F401 (re-exported)

__all__ = ["FamilySummary", "PublishedRange", "PUBLISHED_RANGES", "cell_volumes", "cube_observables",
           "effective_line_width", "family_summary", "h2_mass"]

SURVEY_CHANNEL_WIDTH = 0.25  # km/s, the channels SEDIGISM's rms is quoted in


@dataclasses.dataclass(frozen=True)
class PublishedRange:
    """A published range ``[low, high]`` (``unit``) of a CMZ observable, with its sources."""

    low: float
    high: float
    unit: str
    quantity: str
    source: str

    def contains(self, value) -> bool:
        """Whether ``value`` lies in ``[low, high]`` (False for NaN)."""
        return bool(self.low <= value <= self.high)


_HENSHAW = "Henshaw et al. 2016, MNRAS 457, 2675 (HNCO/N2H+/HNC l-b-v decomposition of the CMZ)"


def _cloud_velocity(name: str, lon: float, v_lsr: float, allowed: float = 15.0) -> PublishedRange:
    """The published v_LSR of a CMZ cloud, +-``allowed`` km/s for the cloud's own width."""
    return PublishedRange(v_lsr - allowed, v_lsr + allowed, "km/s",
                          f"v_LSR of {name} (l = {lon:+.2f} deg): ~ {v_lsr:+.0f} km/s, +-{allowed:.0f} km/s "
                          "allowed for the cloud's width", _HENSHAW)


PUBLISHED_RANGES = {
    "cube_peak_K": PublishedRange(
        10.0, 20.0, "K", "13CO(2-1) peak main-beam temperature of CMZ clouds (at 30\", 0.25 km/s)",
        "SEDIGISM DR1 13CO(2-1) CMZ tiles, Schuller et al. 2021, MNRAS 500, 3064; the ~10-20 K of DESIGN.md "
        "section 4"),
    "line_width_km_s": PublishedRange(
        5.0, 15.0, "km/s", "velocity dispersion of CMZ clouds",
        "Shetty et al. 2012, MNRAS 425, 720 (~2-30 km/s over 2-40 pc); " + _HENSHAW + " (median 9.8 km/s); "
        "Kauffmann et al. 2017, A&A 603, A89"),
    "h2_mass_msun": PublishedRange(
        2e7, 6e7, "solMass", "H2 mass of the CMZ",
        "Dahmen et al. 1998, A&A 331, 959 (C18O); Ferriere et al. 2007, A&A 467, 611; Longmore et al. 2013, "
        "MNRAS 429, 987"),
    "v_sgr_b2_km_s": _cloud_velocity("Sgr B2", SGR_B2_LON, 60.0),
    "v_sgr_c_km_s": _cloud_velocity("Sgr C", SGR_C_LON, -55.0),
    "noise_rms_K": PublishedRange(
        0.8, 1.0, "K", "SEDIGISM 13CO(2-1) rms per 0.25 km/s channel", "Schuller et al. 2021, MNRAS 500, 3064"),
}
"""Published ranges of the real CMZ, by observable (column) name."""
PUBLISHED_RANGES["v_peak_sgr_b2_km_s"] = PUBLISHED_RANGES["v_sgr_b2_km_s"]
PUBLISHED_RANGES["v_peak_sgr_c_km_s"] = PUBLISHED_RANGES["v_sgr_c_km_s"]

_LABELS = {
    "cube_peak_K": ("cube peak", "K"), "pv_peak_K": ("latitude-mean PV peak", "K"),
    "integrated_intensity_K_km_s": ("mean integrated intensity", "K km/s"),
    "line_width_km_s": ("effective line width", "km/s"), "h2_mass_msun": ("H2 mass in window", "solMass"),
    "lv_velocity_span_km_s": ("l-v velocity span", "km/s"), "lv_lon_span_deg": ("l-v longitude span", "deg"),
    "v_sgr_b2_km_s": ("mean v at Sgr B2 (l=+0.67)", "km/s"), "v_sgr_c_km_s": ("mean v at Sgr C (l=-0.57)", "km/s"),
    "v_peak_sgr_b2_km_s": ("peak v at Sgr B2", "km/s"), "v_peak_sgr_c_km_s": ("peak v at Sgr C", "km/s"),
    "noise_rms_K": ("noise rms per 0.25 km/s", "K"),
}
OBSERVABLES = tuple(_LABELS)
"""Table columns after ``seed``, in order (``noise_rms_K`` only with noise)."""


# ------------------------------------------------------------------------------ summary
@dataclasses.dataclass
class FamilySummary:
    """What :func:`family_summary` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per sample: ``seed`` then the observables of the module text.
    ranges : dict[str, PublishedRange]
        The published ranges of the observables in the table.
    grid : Grid
        The grid the samples were drawn and observed on.
    runtime_s : float
        Wall-clock seconds spent drawing, observing and measuring.
    figure : matplotlib.figure.Figure or None
        The figure, when one was asked for (or after :meth:`plot`).
    """

    table: pd.DataFrame
    ranges: dict
    grid: Grid
    runtime_s: float
    figure: object = None

    @property
    def observables(self) -> list:
        """Observable columns of the table (all but ``seed``)."""
        return [c for c in self.table.columns if c != "seed"]

    def medians(self) -> pd.Series:
        """Family median of each observable (NaN samples skipped)."""
        return self.table[self.observables].median()

    def inside(self) -> pd.Series:
        """Per observable: is the family median inside its published range (None: no range)."""
        medians = self.medians()
        return pd.Series({name: (self.ranges[name].contains(medians[name]) if name in self.ranges else None)
                          for name in self.observables}, dtype=object)

    def comparison(self) -> pd.DataFrame:
        """Median, 16th/84th percentiles, published low/high, inside, and how far outside
        (median minus the nearer bound, in the observable's unit; 0 when inside)."""
        rows = {}
        for name in self.observables:
            values = self.table[name]
            r = self.ranges.get(name)
            median = float(values.median())
            miss = math.nan if r is None else (median - r.high if median > r.high else
                                                median - r.low if median < r.low else 0.0)
            rows[name] = {"median": median, "p16": float(values.quantile(0.16)), "p84": float(values.quantile(0.84)),
                          "low": math.nan if r is None else r.low, "high": math.nan if r is None else r.high,
                          "inside": None if r is None else r.contains(median), "outside_by": miss,
                          "unit": _LABELS[name][1]}
        return pd.DataFrame.from_dict(rows, orient="index")

    def __repr__(self) -> str:
        return (f"FamilySummary({len(self.table)} samples on {self.grid.name}, {self.runtime_s:.1f} s)\n"
                f"{self.comparison().to_string(float_format=lambda x: f'{x:.4g}')}")

    def plot(self, axes=None):
        """One panel per observable: the family's histogram, the published range shaded, the
        median as a line (green title inside the range, red outside, black without one).
        ``axes``: an array of at least :attr:`observables` matplotlib Axes, or None for a new
        figure.  Returns the figure (also kept in :attr:`figure`)."""
        axes = _check_axes(axes, len(self.observables))
        if axes is None:
            import matplotlib.pyplot as plt
            ncols = 4
            nrows = -(-len(self.observables) // ncols)
            fig, grid_axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.5 * nrows), layout="constrained",
                                          squeeze=False)
            axes = list(grid_axes.ravel())
            for extra in axes[len(self.observables):]:
                extra.set_visible(False)
        inside = self.inside()
        for ax, name in zip(axes, self.observables):
            values = self.table[name].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            label, unit = _LABELS[name]
            r = self.ranges.get(name)
            if r is not None:
                ax.axvspan(r.low, r.high, color="tab:green", alpha=0.2, label="published")
            if values.size:
                ax.hist(values, bins=max(5, min(20, values.size // 2)), color="0.55")
                ax.axvline(float(np.median(values)), color="k", lw=1.5, label="median")
            colour = {True: "tab:green", False: "tab:red"}.get(inside[name], "k")
            ax.set_title(label, fontsize=9, color=colour)
            ax.set_xlabel(unit, fontsize=8)
            ax.tick_params(labelsize=7)
        self.figure = axes[0].figure
        return self.figure


def _check_axes(axes, count: int):
    if axes is None:
        return None
    from matplotlib.axes import Axes
    flat = list(np.asarray(axes, dtype=object).ravel())
    if len(flat) < count or not all(isinstance(ax, Axes) for ax in flat):
        raise TypeError(f"figure/axes must be True, False or an array of at least {count} matplotlib Axes "
                        f"(one per observable), got {type(axes).__name__} of {len(flat)}")
    return flat


def _check_inputs(n, grid, model, observer, seed, model_kwargs, noise):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n is the number of samples and must be a positive integer, got {n!r}")
    if n < 1:
        raise ValueError(f"family_summary needs n >= 1 samples, got n={n}: a family summary of {n} samples "
                         "has no medians; pass e.g. n=24")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an iris_nb.grids.Grid, got {type(grid).__name__}; e.g. iris_nb.grids.SMALL")
    if not callable(model):
        raise TypeError(f"model must be a callable model(grid, seed=..., **model_kwargs) -> field, "
                        f"got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer (sample i uses seed + i), got {seed!r}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict of model parameters or None, got {type(model_kwargs).__name__}")
    if observer is not None:
        if not hasattr(observer, "observe") or not isinstance(getattr(observer, "grid", None), Grid):
            raise TypeError(f"observer must be an iris_nb observer (e.g. LineObserver(grid)), "
                            f"got {type(observer).__name__}")
        if observer.grid != grid:
            raise ValueError(f"the observer is built for {observer.grid!r} but the family is drawn on {grid!r}; "
                             "build the observer on the same grid (LineObserver(grid)) or pass that grid")
        if getattr(observer, "units", "K") != "K" or getattr(observer, "multi_line", False):
            raise ValueError(f"family_summary needs one line's brightness temperature in K; {type(observer).__name__} "
                             f"gives {getattr(observer, 'units', '?')!r}"
                             f"{' for several lines' if getattr(observer, 'multi_line', False) else ''}; "
                             "use LineObserver(grid) with one transition")
    if noise is not None and not isinstance(noise, torch.nn.Module):
        raise TypeError(f"noise must be an iris_nb.sim.Noise (or None for clean cubes), got {type(noise).__name__}")


def family_summary(n: int, grid: Grid = SMALL, model=make_cmz, observer=None, seed: int = 0,
                   model_kwargs: dict | None = None, noise=None, figure=False) -> FamilySummary:
    """Draw ``n`` samples of a gas-model family, observe them and compare with the real CMZ.

    Parameters
    ----------
    n:
        Number of samples (a positive integer).
    grid:
        :class:`~iris_nb.grids.Grid` the fields are drawn and observed on (default SMALL).
    model:
        ``model(grid, seed=s, **model_kwargs)`` returning a field (default
        :func:`~iris_nb.sim.cmz.make_cmz`); sample ``i`` uses seed ``seed + i``.
    observer:
        A one-line observer in K on ``grid``; default ``LineObserver(grid)`` (13CO(2-1),
        non-LTE escape probability, beam).
    seed:
        First seed (non-negative integer).
    model_kwargs:
        Parameters passed to every ``model`` call (e.g. fixed :data:`CMZ_PARAMETERS`).
    noise:
        An :class:`~iris_nb.sim.Noise` added to each ``(lon, lat, velocity)`` cube in cube mode
        (generator seeded with the sample's seed) before measuring, or None (clean cubes).
        ``Noise(grid=grid, fade=False)`` is the SEDIGISM survey noise.
    figure:
        False (no figure), True (a new figure) or an array of matplotlib Axes to draw into.

    Returns
    -------
    FamilySummary
        ``.table`` (pandas DataFrame, one row per sample, columns ``seed`` and the module
        text's observables), ``.ranges``, ``.medians()``, ``.inside()``, ``.comparison()``,
        ``.plot()``, ``.figure``.
    """
    _check_inputs(n, grid, model, observer, seed, model_kwargs, noise)
    figure = False if figure is None else figure
    columns = [c for c in OBSERVABLES if c != "noise_rms_K" or noise is not None]
    if figure is not True and figure is not False:
        _check_axes(figure, len(columns))
    from .observers import LineObserver
    observer = LineObserver(grid) if observer is None else observer
    started = time.perf_counter()
    rows = []
    for i in range(int(n)):
        sample_seed = int(seed) + i
        field = model(grid, seed=sample_seed, **(model_kwargs or {}))
        cube = observer.observe(field).transpose("lon", "lat", "velocity").values
        row = {"seed": sample_seed}
        if noise is not None:
            generator = torch.Generator().manual_seed(sample_seed)
            noisy = noise(torch.from_numpy(np.ascontiguousarray(cube))[None], mode="cube", generator=generator)[0]
            noisy = noisy.numpy()
            row["noise_rms_K"] = float(np.std(noisy - cube) * math.sqrt(grid.velocity.step / SURVEY_CHANNEL_WIDTH))
            cube = noisy
        row.update(cube_observables(cube, grid))
        row["h2_mass_msun"] = h2_mass(field, grid)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["seed"] + columns)
    summary = FamilySummary(table=table, ranges={k: v for k, v in PUBLISHED_RANGES.items() if k in columns},
                            grid=grid, runtime_s=time.perf_counter() - started)
    if figure is True:
        summary.plot()
    elif figure is not False:
        summary.plot(figure)
    return summary
