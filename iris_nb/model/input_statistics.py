"""What a model's training inputs looked like: the out-of-distribution guard's statistics.

A Reverter only knows the PV images it was trained on.  :func:`pv_statistics` condenses one
latitude-reduced PV image ``(lon, v)`` (in the model's input unit) into a few numbers that
a cube from another family, in another unit, mirrored, or without signal, moves far:

==========================  =========================================================  ===========
``intensity_p99``           99th percentile of the pixel values                         input unit
``intensity_p99_9``         99.9th percentile of the pixel values                       input unit
``emission_fraction``       fraction of pixels with emission (see below)                --
``velocity_extent``         median over longitudes with emission of the velocity span   km/s
                            from the lowest to the highest emission channel
``line_width``              intensity-weighted velocity dispersion of the emission      km/s
                            about each longitude's centroid, pooled over longitudes
``lv_correlation``          intensity-weighted Pearson correlation of longitude and     --
                            velocity over the emission (the CMZ has gas at positive l
                            receding: > 0; a velocity-mirrored cube flips the sign)
==========================  =========================================================  ===========

*Emission* is every pixel above ``max(5 sigma, 0.05 p99.9)``, where ``sigma`` is the noise rms
measured on the negative pixels only (``median(|x| for x < 0) / 0.6745``, blind to the
positive emission; 0 when fewer than 1% of the pixels are negative, e.g. a noise-free image)
and ``p99.9`` the image's 99.9th percentile.  Pure noise has no pixel above 5 sigma, so its
emission fraction is 0 and the three emission statistics are undefined (NaN).

:class:`InputStatistics` keeps, for each statistic, quantiles over the training samples and
the accepted *range*: the 0.5 to 99.5 percentiles widened by :data:`SCALE_MARGIN` (a factor,
for the positive statistics: ``[low / 2, high * 2]``) or by :data:`CORRELATION_MARGIN` (added
on both sides of ``lv_correlation``'s range, which is bounded by +-1).  It is stored in the
model file (``model.input_statistics``) by the training loop, which feeds the first 512
training inputs, as the network saw them (after litter and noise), to an
:class:`InputStatisticsRecorder`.  The checks live in :mod:`iris_nb.diagnose`.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import torch

__all__ = ["STATISTICS", "QUANTILE_LEVELS", "SCALE_MARGIN", "CORRELATION_MARGIN", "DEFINITION",
           "pv_statistics", "InputStatistics", "InputStatisticsRecorder"]

DEFINITION = 1
"""Version of the statistic definitions above; ranges of another version are not compared."""

STATISTICS = {
    # name: (unit: "input" = the model's input unit, kind, description)
    "intensity_p99": ("input", "scale", "99th percentile of the PV pixels"),
    "intensity_p99_9": ("input", "scale", "99.9th percentile of the PV pixels"),
    "emission_fraction": ("", "scale", "fraction of PV pixels with emission"),
    "velocity_extent": ("km/s", "scale", "median velocity span of the emission per longitude"),
    "line_width": ("km/s", "scale", "intensity-weighted velocity dispersion per longitude"),
    "lv_correlation": ("", "signed", "intensity-weighted correlation of longitude and velocity"),
}
"""The statistics, in table order: ``name -> (unit, kind, description)``."""

QUANTILE_LEVELS = (0.0, 0.005, 0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975, 0.995, 1.0)
RANGE_LEVELS = (0.005, 0.995)
SCALE_MARGIN = 2.0
"""Factor by which the ranges of the positive statistics are widened on both sides."""
CORRELATION_MARGIN = 0.15
"""Added on both sides of the range of ``lv_correlation``."""
EMISSION_SNR = 5.0
EMISSION_PEAK_FRACTION = 0.05
MIN_NEGATIVE_FRACTION = 0.01
UNDEFINED_FRACTION = 0.01
"""A statistic that is undefined (NaN) for a cube is accepted when at least this fraction of
the training samples had it undefined too."""
_MAD_TO_SIGMA = 0.6744897501960817  # median of |z| for a standard normal z


def _upper_quantiles(flat: torch.Tensor, levels: tuple) -> list:
    """Linear-interpolated quantiles (all >= 0.5) of each row of ``flat (B, n)``, from a
    ``topk`` of the upper tail instead of a full sort."""
    n = flat.shape[1]
    k = min(n, n - int(math.floor(min(levels) * (n - 1))) + 1)
    top = flat.topk(k, dim=1, sorted=True).values  # descending: ascending index i is top[:, n - 1 - i]
    out = []
    for q in levels:
        position = q * (n - 1)
        below = int(math.floor(position))
        above = min(below + 1, n - 1)
        low, high = top[:, n - 1 - below], top[:, n - 1 - above]
        out.append(low + (position - below) * (high - low))
    return out


def _noise_rms(flat: torch.Tensor) -> torch.Tensor:
    """Noise rms of each row of ``flat (B, n)`` from its negative pixels: median(|x|) / 0.6745
    (0 when fewer than 1% of the pixels are negative)."""
    n = flat.shape[1]
    sigma = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
    for row in range(flat.shape[0]):
        negative = -flat[row][flat[row] < 0]
        if negative.numel() >= max(1, MIN_NEGATIVE_FRACTION * n):
            sigma[row] = negative.kthvalue((negative.numel() + 1) // 2).values / _MAD_TO_SIGMA
    return sigma


def pv_statistics(pv, grid) -> dict:
    """The statistics of :data:`STATISTICS` for PV images.

    Parameters
    ----------
    pv:
        ``(lon, v)``, ``(B, lon, v)`` or ``(B, 1, lon, v)`` PV images on ``grid`` in the
        model's input unit (a tensor on any device, or an array); NaN counts as 0.
    grid:
        The :class:`~iris_nb.grids.Grid` of the images (velocity and longitude centres).

    Returns
    -------
    dict ``name -> float64 array (B,)`` (``(B,)`` is ``(1,)`` for one image); intensities in
    the input unit, ``velocity_extent`` and ``line_width`` in km/s; NaN where undefined.
    """
    x = torch.as_tensor(pv).detach()
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() == 2:
        x = x[None]
    shape = (grid.lon.steps, grid.velocity.steps)
    if x.dim() != 3 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"pv_statistics needs PV images (B, lon, v) with (lon, v) = {shape} of grid "
                         f"{grid.name}, got shape {tuple(x.shape)}; reduce and regrid the cube first")
    x = torch.nan_to_num(x.float(), nan=0.0)
    flat = x.reshape(x.shape[0], -1)
    p99, p999 = _upper_quantiles(flat, (0.99, 0.999))
    threshold = torch.maximum(EMISSION_SNR * _noise_rms(flat), EMISSION_PEAK_FRACTION * p999).clamp(min=0.0)
    mask = x > threshold[:, None, None]
    weight = torch.where(mask, x, torch.zeros_like(x)).double()

    channel = torch.arange(shape[1], device=x.device)
    highest = torch.where(mask, channel, -1).amax(dim=2)
    lowest = torch.where(mask, channel, shape[1]).amin(dim=2)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=x.device)
    extent = torch.where(highest >= 0, (highest - lowest + 1).double() * grid.velocity.step, nan)
    velocity_extent = torch.nanmedian(extent, dim=1).values

    # moments of each longitude's spectrum (velocities centred on the window to limit cancellation)
    velocity = torch.as_tensor(grid.velocity.centers() - grid.velocity.centers().mean(), dtype=torch.float64,
                               device=x.device)
    lon = torch.as_tensor(grid.lon.centers(), dtype=torch.float64, device=x.device)
    m0, m1, m2 = weight.sum(dim=2), weight @ velocity, weight @ velocity ** 2  # (B, lon)
    total = m0.sum(dim=1)
    safe = total.clamp(min=1e-300)
    spread = (m2 - m1 ** 2 / m0.clamp(min=1e-300)).sum(dim=1).clamp(min=0.0)
    line_width = torch.where(total > 0, torch.sqrt(spread / safe), nan)
    mean_lon, mean_v = (m0 @ lon) / safe, m1.sum(dim=1) / safe
    var_lon = (m0 @ lon ** 2) / safe - mean_lon ** 2
    var_v = m2.sum(dim=1) / safe - mean_v ** 2
    covariance = (m1 @ lon) / safe - mean_lon * mean_v
    tiny = 1e-12
    defined = (total > 0) & (var_lon > tiny * lon.abs().max() ** 2) & (var_v > tiny * velocity.abs().max() ** 2)
    lv_correlation = torch.where(defined, covariance / torch.sqrt((var_lon * var_v).clamp(min=1e-300)), nan)

    values = torch.stack([p99.double(), p999.double(), mask.double().mean(dim=(1, 2)), velocity_extent,
                          line_width, lv_correlation.clamp(-1.0, 1.0)]).cpu().numpy()
    return dict(zip(STATISTICS, values))


def _widen(kind: str, low: float, high: float) -> tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        return float("nan"), float("nan")
    if kind == "signed":
        return max(-1.0, low - CORRELATION_MARGIN), min(1.0, high + CORRELATION_MARGIN)
    low = low / SCALE_MARGIN if low > 0 else low * SCALE_MARGIN
    high = high * SCALE_MARGIN if high > 0 else high / SCALE_MARGIN
    return low, high


@dataclasses.dataclass(frozen=True)
class InputStatistics:
    """Summary statistics of a model's training inputs (see the module docstring).

    Attributes
    ----------
    n_samples:
        Number of training PV images the statistics were computed from.
    input_unit:
        Unit of the intensity statistics (the model's input unit, e.g. ``"K"``).
    ranges:
        ``name -> (low, high)``: the accepted range of each statistic (NaN, NaN when the
        statistic was undefined for nearly all training samples: not checked).
    quantiles:
        ``name -> values at`` :attr:`levels` over the training samples (NaN-free samples).
    undefined:
        ``name -> fraction`` of the training samples for which the statistic was NaN.
    levels:
        Quantile levels of :attr:`quantiles`.
    source:
        Free text: which inputs were summarised.
    definition:
        :data:`DEFINITION` of the statistics when they were computed.
    """

    n_samples: int
    input_unit: str
    ranges: dict
    quantiles: dict
    undefined: dict
    levels: tuple = QUANTILE_LEVELS
    source: str = ""
    definition: int = DEFINITION

    def __post_init__(self) -> None:
        if int(self.n_samples) < 1:
            raise ValueError(f"InputStatistics needs at least one sample, got n_samples={self.n_samples}")
        missing = [name for name in STATISTICS if name not in self.ranges or name not in self.quantiles]
        if missing and self.definition == DEFINITION:
            raise ValueError(f"InputStatistics lacks the statistics {missing}; build it with "
                             "InputStatistics.from_inputs or from_values")
        object.__setattr__(self, "n_samples", int(self.n_samples))
        object.__setattr__(self, "levels", tuple(float(q) for q in self.levels))
        object.__setattr__(self, "ranges", {k: (float(a), float(b)) for k, (a, b) in self.ranges.items()})
        object.__setattr__(self, "quantiles", {k: tuple(float(v) for v in vs) for k, vs in self.quantiles.items()})
        object.__setattr__(self, "undefined", {k: float(v) for k, v in self.undefined.items()})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_values(cls, values: dict, input_unit, source: str = "") -> "InputStatistics":
        """From per-sample values ``name -> array (n,)`` of :func:`pv_statistics`."""
        columns = {name: np.asarray(values[name], dtype=np.float64).ravel() for name in STATISTICS}
        n = {len(column) for column in columns.values()}
        if len(n) != 1 or 0 in n:
            raise ValueError(f"from_values needs the same number (> 0) of samples for every statistic, got "
                             f"{ {k: len(v) for k, v in columns.items()} }")
        ranges, quantiles, undefined = {}, {}, {}
        for name, column in columns.items():
            finite = column[np.isfinite(column)]
            undefined[name] = 1.0 - finite.size / column.size
            if finite.size == 0:
                quantiles[name] = (float("nan"),) * len(QUANTILE_LEVELS)
                ranges[name] = (float("nan"), float("nan"))
                continue
            quantiles[name] = tuple(np.quantile(finite, QUANTILE_LEVELS))
            low, high = np.quantile(finite, RANGE_LEVELS)
            ranges[name] = _widen(STATISTICS[name][1], float(low), float(high))
        return cls(n_samples=n.pop(), input_unit=str(input_unit), ranges=ranges, quantiles=quantiles,
                   undefined=undefined, source=source)

    @classmethod
    def from_inputs(cls, inputs, grid, input_unit="K", source: str = "", limit: int | None = None) -> "InputStatistics":
        """From PV images: a tensor ``(B, [1,] lon, v)``, an iterable of such tensors or of
        ``(input, target)`` pairs, or a dataset of pairs (at most ``limit`` samples)."""
        recorder = InputStatisticsRecorder(grid, limit=limit or 2**62)
        if isinstance(inputs, (torch.Tensor, np.ndarray)):
            inputs = [inputs]
        for item in inputs:
            if isinstance(item, (tuple, list)):
                item = item[0]
            item = torch.as_tensor(item)
            recorder.add(item[None] if item.dim() == 2 else item)  # (lon, v), (B, lon, v) or (B, 1, lon, v)
            if recorder.full:
                break
        return recorder.statistics(input_unit, source=source)

    @classmethod
    def union(cls, members) -> "InputStatistics":
        """The statistics of an ensemble: ranges are the union of the members' ranges,
        quantiles and undefined fractions their averages, ``n_samples`` the largest."""
        members = list(members)
        if not members:
            raise ValueError("union needs at least one InputStatistics")
        if len(members) == 1:
            return members[0]
        ranges = {}
        for name in STATISTICS:
            lows = [m.ranges[name][0] for m in members if math.isfinite(m.ranges[name][0])]
            highs = [m.ranges[name][1] for m in members if math.isfinite(m.ranges[name][1])]
            ranges[name] = (min(lows), max(highs)) if lows and highs else (float("nan"), float("nan"))
        quantiles = {name: tuple(np.nanmean([m.quantiles[name] for m in members], axis=0)) for name in STATISTICS}
        undefined = {name: float(np.mean([m.undefined.get(name, 0.0) for m in members])) for name in STATISTICS}
        return cls(n_samples=max(m.n_samples for m in members), input_unit=members[0].input_unit, ranges=ranges,
                   quantiles=quantiles, undefined=undefined,
                   source=f"union of {len(members)} ensemble members' statistics")

    # ------------------------------------------------------------------ checks
    def percentile(self, name: str, value: float) -> float:
        """Where ``value`` falls among the training samples, 0-100 (interpolated between the
        stored quantiles; 0 below the smallest, 100 above the largest; NaN if undefined)."""
        values = np.asarray(self.quantiles[name], dtype=np.float64)
        if not (math.isfinite(value) and np.all(np.isfinite(values))):
            return float("nan")
        if value < values[0]:
            return 0.0
        if value > values[-1]:
            return 100.0
        unique, index = np.unique(values, return_index=True)
        if unique.size == 1:
            return 50.0
        return float(100.0 * np.interp(value, unique, np.asarray(self.levels)[index]))

    def inside(self, name: str, value: float) -> bool:
        """Whether ``value`` of statistic ``name`` lies in the training range (an undefined
        value is inside when at least 1% of the training samples were undefined too; a
        statistic without a range is not checked)."""
        low, high = self.ranges[name]
        if not math.isfinite(value):
            return self.undefined.get(name, 0.0) >= UNDEFINED_FRACTION
        if not (math.isfinite(low) and math.isfinite(high)):
            return True
        return low <= value <= high

    def unit_of(self, name: str) -> str:
        """Unit of statistic ``name`` (the input unit for intensities)."""
        unit = STATISTICS[name][0]
        return self.input_unit if unit == "input" else unit

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """Plain JSON-ready dict (what the model file stores)."""
        return {"n_samples": self.n_samples, "input_unit": self.input_unit,
                "ranges": {k: list(v) for k, v in self.ranges.items()},
                "quantiles": {k: list(v) for k, v in self.quantiles.items()},
                "undefined": dict(self.undefined), "levels": list(self.levels), "source": self.source,
                "definition": self.definition}

    @classmethod
    def from_dict(cls, data: dict) -> "InputStatistics":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise TypeError(f"InputStatistics.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown InputStatistics keys {unknown}; expected among {sorted(known)}")
        return cls(**{**data, "levels": tuple(data.get("levels", QUANTILE_LEVELS))})

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (NaN written as ``NaN``)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "InputStatistics":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        lines = [f"InputStatistics({self.n_samples} training samples, intensities in {self.input_unit}"
                 + (f"; {self.source}" if self.source else "") + ")"]
        for name, (low, high) in self.ranges.items():
            median = self.quantiles[name][self.levels.index(0.5)] if 0.5 in self.levels else float("nan")
            unit = self.unit_of(name)
            lines.append(f"  {name:18s} range [{low:.4g}, {high:.4g}] {unit}  (median {median:.4g})".rstrip())
        return "\n".join(lines)


class InputStatisticsRecorder:
    """Collects :func:`pv_statistics` of the first ``limit`` PV images it is given.

    ``add(inputs (B, 1, lon, v))`` in the model's input unit, any device;
    :meth:`statistics` returns the :class:`InputStatistics` (``None`` before any sample);
    :meth:`state_dict` / :meth:`load_state_dict` carry the collected values through a
    training checkpoint.
    """

    def __init__(self, grid, limit: int = 512) -> None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive number of samples, got {limit!r}")
        self.grid, self.limit = grid, int(limit)
        self.values = {name: [] for name in STATISTICS}

    @property
    def count(self) -> int:
        """Samples collected so far."""
        return len(self.values["intensity_p99"])

    @property
    def full(self) -> bool:
        """Whether ``limit`` samples have been collected."""
        return self.count >= self.limit

    def add(self, inputs) -> None:
        """Add the statistics of the PV images ``inputs`` (only as many as still fit)."""
        room = self.limit - self.count
        if room <= 0:
            return
        stats = pv_statistics(inputs[:room], self.grid)
        for name, column in stats.items():
            self.values[name].extend(float(v) for v in column)

    def statistics(self, input_unit, source: str = "") -> InputStatistics | None:
        """The :class:`InputStatistics` of the collected samples (``None`` when empty)."""
        if self.count == 0:
            return None
        return InputStatistics.from_values(self.values, input_unit, source=source)

    def state_dict(self) -> dict:
        """The collected values as plain lists (for a checkpoint)."""
        return {"limit": self.limit, "values": {k: list(v) for k, v in self.values.items()}}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from :meth:`state_dict` output (``None``: start empty)."""
        values = (state or {}).get("values") or {}
        self.values = {name: [float(v) for v in values.get(name, [])] for name in STATISTICS}
        if len({len(v) for v in self.values.values()}) != 1:  # an inconsistent state: start afresh
            self.values = {name: [] for name in STATISTICS}
