"""Augmentations of physical fields: :class:`FieldAugmentation` and :func:`observer_jitter`.

A :class:`FieldAugmentation` is a frozen, validated configuration (JSON/YAML round trip like
:class:`~iris_nb.sim.noise_config.NoiseConfig`); calling it on a field with a seed returns a
new field on the same grid.  Every option is off by default (``FieldAugmentation()`` changes
nothing): augmentations widen a training family on purpose, they are not part of the default
one.  ``write_dataset(..., augment=...)`` and ``GasModelDataset(..., augment=...)`` apply one to
every sample with the seed :func:`augmentation_seed` ``(sample seed)``.

What each option does to a field (``x, y, z`` Galactocentric, pc, frame of
:mod:`iris_nb.sim.kinematics`; the Galactic Centre at the origin):

* ``size`` - rescale about the Galactic Centre by ``s ~ U(low, high)``: gas at ``r`` moves to
  ``s r`` (all three axes, so scale heights shrink too) and its velocity becomes ``s v``.
  Densities are unchanged, so the mass in the window scales as ``s^3``.  The field is resampled
  (see *Resampling*); output cells whose source lies outside the grid get density 0.
* ``shift_distance``, ``shift_lon`` - move the Galactic Centre (with all its gas) to distance
  ``R0 + dr`` and longitude ``dl`` (``dr ~ U``, pc; ``dl ~ U``, deg), the observer and the
  window staying put: the "observer jitter" of the reference, for any gas model.  Applied
  together with ``size`` (one resampling: the output at ``r`` is the input at ``(r - t) / s``).
* ``density_scale`` - multiply every density by one factor ``~ U(low, high)``.
* ``density_sigma``, ``density_slope`` - multiply the density by the smooth log-normal field
  ``exp(sigma g - sigma^2 / 2)``, ``g`` a unit-variance Gaussian random field with power
  spectrum ``k^-slope`` (:func:`iris_nb.sim.turbulence.gaussian_random_field` on the grid's
  cells, lon and lat pixels taken at R0).  Each cell's factor has mean one, so the mass is kept
  on average; with ``density_keep_mass`` (default) the factor is also rescaled so that every
  sample keeps its total gas mass exactly (its large modes would otherwise move it by ~15% at
  ``sigma = 0.3``).
* ``skew`` - a large-scale asymmetry: density times ``max(0, 1 + k u)``, ``k ~ U(low, high)``,
  ``u = ((x, y) - c) . n / L`` a linear gradient through the centre ``c`` along a random
  in-plane direction ``n`` (angle ``~ U(0, 360)`` deg from ``+x``), ``L`` half the grid's
  distance window (225 pc on SEDIGISM), so ``u`` runs from -1 to +1 across it.  The factor is
  then divided by its mass-weighted mean, so the total gas mass is unchanged: one side gains
  what the other loses.
* ``velocity_smoothing`` - Gaussian smoothing of the gas velocity, ``sigma`` in pixels along
  each axis, weighted by density (``G*(rho v) / G*rho``) so that empty cells do not drag the
  gas velocity; the observer's reflex is removed first and added back exactly.

Velocities: ``velocity_los`` is v_LSR and includes the observer's own motion
(:func:`~iris_nb.sim.kinematics.line_of_sight_velocity`).  The geometric options take it apart
into the gas's own line-of-sight velocity ``v_LSR - reflex`` (``reflex`` = the line-of-sight
velocity of gas at rest, at the source cell's direction), resample and scale that, and add the
reflex at the output cell's direction.  A field knows only the line-of-sight component of the
gas velocity, so the moved gas keeps it along its new line of sight; the two lines of sight
differ by at most the window's width (3 deg on SEDIGISM), an error below ``0.05 v_transverse``.

Resampling (``interpolation``): ``"linear"`` (default) is trilinear in (distance, lon, lat)
*index* space, ``"nearest"`` takes the nearest cell; velocities are interpolated
density-weighted (momentum over mass).  Sources outside the grid take the edge cell's values
(density 0).  ``turbulent_b`` (sub-grid, so independent of the grid scale) is resampled but not
scaled; temperatures and abundances are resampled.

The reference IRIS code (``iris/arepo_processing.py``, ``Snapshot._apply_units_and_perturbations``
and ``Snapshot.make_physical_tensor``; options in ``iris/hyper.py``) perturbs AREPO snapshots
before gridding: lengths and velocities times ``U(CMZ_scale_range)`` (default ``[0.25, 1]``,
"density conserving, i.e. not mass conserving", as here), densities times one ``U(CMZ_density_range)``
factor (off by default; ``density_scale`` here), an area-preserving stretch ``a`` / ``1/a`` along a
random axis of positions and velocities (``CMZ_skew_range``, "experimental, not recommended", off;
not reproducible from a line-of-sight field, so ``skew`` here is the density gradient above), and
observer jitter (``jitter_r``: observer radius + ``U``; ``jitter_lon``: longitude window shifted by
``U``; both off).  Its ``VelocityBlur`` (Gaussian, sigma 0.33 px, on by default) smooths the
nearest-neighbour velocity field before observation, unweighted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping

import numpy as np
import xarray as xr

from .._files import ConfigFiles, check_fields
from ..grids import get_grid
from .augment_geometry import galactic_centre, keep_mass, reflex_velocity, resample, skew_factor, smooth_velocity
from .fields import FIELD_DIMS, FIELD_UNITS, unit_factor, validate_field
from .turbulence import gaussian_random_field, lognormal_factor

__all__ = ["FieldAugmentation", "MAX_SIZE_FACTOR", "as_augmentation", "augmentation_seed", "observer_jitter"]

MAX_SIZE_FACTOR = 4.0
"""Largest size factor accepted: beyond it a CMZ no longer fits any window this package uses."""

_RANGES = ("size", "density_scale", "skew", "shift_distance", "shift_lon")
_STREAMS = ("size", "shift", "density_scale", "density_field", "skew")
_AUGMENT_KEY = 0x61756741   # spawn key of the augmentation stream of a sample seed ("augA")
_JITTER_KEY = 0x6A697474    # spawn key of observer_jitter's stream ("jitt")


def _seed_int(seed, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"{what} must be an integer >= 0, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def augmentation_seed(sample_seed: int) -> int:
    """Seed of the augmentation of the sample whose gas seed is ``sample_seed``.

    ``SeedSequence(sample_seed, spawn_key=(key,))``, so the augmentation's draws are independent
    of the gas model's own ``default_rng(sample_seed)`` and depend on nothing but the sample
    seed (stores stay reproducible and independent of the worker count).  An int in ``[0, 2**63)``.
    """
    words = np.random.SeedSequence(_seed_int(sample_seed, "sample_seed"), spawn_key=(_AUGMENT_KEY,)
                                   ).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) % 2**63)


def _streams(seed: int) -> dict:
    """One independent :class:`numpy.random.SeedSequence` per option, from ``seed``."""
    children = np.random.SeedSequence(_seed_int(seed, "seed")).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, children))


def _number(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _range(value, name: str, low=None, high=None, open_low=False, unit="", hint="") -> tuple[float, float] | None:
    """``None``, or ``(low, high)`` from a number (a fixed value) or a pair, checked against bounds."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool, np.bool_)) or not isinstance(value, (numbers.Real, list, tuple,
                                                                                np.ndarray)):
        raise TypeError(f"{name} must be None, a number or a (low, high) pair of numbers{unit}, "
                        f"got {value!r} ({type(value).__name__})")
    pair = [value, value] if isinstance(value, numbers.Real) else list(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {len(pair)} values {value!r}")
    lo, hi = (_number(v, name) for v in pair)
    if lo > hi:
        raise ValueError(f"{name} = {value!r} has low > high; give (low, high) with low <= high")
    bad_low = low is not None and (lo <= low if open_low else lo < low)
    if bad_low or (high is not None and hi > high):
        bounds = f"{'>' if open_low else '>='} {low:g}" if low is not None else ""
        bounds += (" and " if bounds and high is not None else "") + (f"<= {high:g}" if high is not None else "")
        raise ValueError(f"{name} = {value!r}: values must be {bounds}{unit}{hint}")
    return (lo, hi)


@dataclasses.dataclass(frozen=True)
class FieldAugmentation(ConfigFiles):
    """Per-sample augmentation of a physical field; every option off unless given.

    ``(low, high)`` options are drawn uniformly per sample; a single number is a fixed value.
    The module docstring says exactly what each does.

    Parameters
    ----------
    size:
        Rescale factors ``s`` about the Galactic Centre (``0 < s <=`` :data:`MAX_SIZE_FACTOR`;
        the reference's default for snapshots is ``(0.25, 1.0)``).  Velocities scale with ``s``,
        densities do not (mass ``~ s^3``).
    density_scale:
        Factors (> 0) multiplying every density of a sample.
    density_sigma:
        Standard deviation (>= 0) of ``ln`` of a smooth log-normal density factor; 0 = off.
    density_slope:
        Slope ``beta`` of the factor's 3D power spectrum ``k^-beta`` (default 4: large scales).
    density_keep_mass:
        Rescale the log-normal factor so that each sample keeps its total gas mass exactly
        (default True); False keeps it only on average (on SMALL, ``density_sigma=0.3`` moves a
        CMZ's mass by ~15% rms, the large modes dominating).
    skew:
        Amplitudes ``k >= 0`` of the density gradient ``max(0, 1 + k u)`` (mass kept).
    shift_distance:
        Move the Galactic Centre along the line of sight by this many pc (|dr| <= 1000).
    shift_lon:
        Put the Galactic Centre at this longitude, deg (|dl| <= 10).
    velocity_smoothing:
        Gaussian sigma (pixels, >= 0) of the density-weighted smoothing of the gas velocity.
    interpolation:
        ``"linear"`` (trilinear in index space) or ``"nearest"`` for ``size`` and the shifts.

    Examples
    --------
    >>> aug = FieldAugmentation(size=(0.25, 1.0), density_sigma=0.3, skew=(0.0, 0.5))
    >>> FieldAugmentation.from_json(aug.to_json()) == aug
    True
    >>> FieldAugmentation().is_identity
    True
    """

    _: dataclasses.KW_ONLY
    size: tuple[float, float] | None = None
    density_scale: tuple[float, float] | None = None
    density_sigma: float = 0.0
    density_slope: float = 4.0
    density_keep_mass: bool = True
    skew: tuple[float, float] | None = None
    shift_distance: tuple[float, float] | None = None
    shift_lon: tuple[float, float] | None = None
    velocity_smoothing: float = 0.0
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        checks = {
            "size": dict(low=0.0, high=MAX_SIZE_FACTOR, open_low=True,
                         hint=" (a size factor rescales the CMZ about the Galactic Centre: s <= 0 leaves no "
                              "CMZ, s > 4 no longer fits the window; the reference draws s from (0.25, 1.0))"),
            "density_scale": dict(low=0.0, open_low=True),
            "skew": dict(low=0.0),
            "shift_distance": dict(low=-1000.0, high=1000.0, unit=" pc"),
            "shift_lon": dict(low=-10.0, high=10.0, unit=" deg"),
        }
        for name in _RANGES:
            object.__setattr__(self, name, _range(getattr(self, name), name, **checks[name]))
        for name in ("density_sigma", "velocity_smoothing"):
            value = _number(getattr(self, name), name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "density_slope", _number(self.density_slope, "density_slope"))
        if not isinstance(self.density_keep_mass, (bool, np.bool_)):
            raise TypeError(f"density_keep_mass must be True or False, got {self.density_keep_mass!r}")
        object.__setattr__(self, "density_keep_mass", bool(self.density_keep_mass))
        if self.interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {self.interpolation!r}")

    # ------------------------------------------------------------------ description
    @property
    def is_identity(self) -> bool:
        """True when no option is on (calling returns an unchanged copy)."""
        return (all(getattr(self, name) is None for name in _RANGES) and self.density_sigma == 0
                and self.velocity_smoothing == 0)

    def to_dict(self) -> dict:
        """Plain dictionary (JSON/YAML-safe, ranges as lists); :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        for name in _RANGES:
            out[name] = None if out[name] is None else list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "FieldAugmentation":
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        return cls(**check_fields(cls, data, "FieldAugmentation"))

    # ------------------------------------------------------------------ draws
    def draw(self, seed: int) -> dict:
        """The random values of one sample: ``size``, ``shift_distance`` (pc), ``shift_lon`` (deg),
        ``density_scale``, ``skew`` and ``skew_angle`` (deg), for the options that are on.

        Each option draws from its own stream (``SeedSequence(seed).spawn``), so turning one
        option on or off never changes the draws of another.
        """
        streams = _streams(seed)

        def uniform(stream, bounds):
            return float(np.random.default_rng(streams[stream]).uniform(*bounds))

        out = {}
        if self.size is not None:
            out["size"] = uniform("size", self.size)
        if self.shift_distance is not None or self.shift_lon is not None:
            rng = np.random.default_rng(streams["shift"])
            dr, dl = (float(rng.uniform(*bounds)) for bounds in (self.shift_distance or (0, 0),
                                                                  self.shift_lon or (0, 0)))
            out.update(shift_distance=dr, shift_lon=dl)
        if self.density_scale is not None:
            out["density_scale"] = uniform("density_scale", self.density_scale)
        if self.skew is not None:
            rng = np.random.default_rng(streams["skew"])
            out.update(skew=float(rng.uniform(*self.skew)), skew_angle=float(rng.uniform(0.0, 360.0)))
        return out

    # ------------------------------------------------------------------ application
    def __call__(self, field: xr.Dataset, seed: int) -> xr.Dataset:
        """Augmented copy of ``field`` (same grid and variables) for ``seed``.

        ``field`` is a physical field ``(distance, lon, lat)`` (DESIGN.md section 3).  The result
        has the same coordinates and variables, each ``(distance, lon, lat)`` float32 in the
        input's units (``velocity_los`` in km/s), and the input's attrs plus the draws under
        ``"augment"`` in ``attrs["parameters"]`` and ``attrs["augment"]`` (JSON: this config and
        the seed).  With every option off it is an exact copy of ``field``.
        """
        seed = _seed_int(seed, "the augmentation seed")
        grid = validate_field(field)
        if self.is_identity:
            return field.copy(deep=True)
        draws = self.draw(seed)
        out = field.transpose(*FIELD_DIMS, ...).copy(deep=True)
        names = [n for n in out.data_vars if out[n].ndim == 3 and n != "velocity_los"]
        values = {n: np.asarray(out[n].values, dtype=np.float32) for n in names}
        moved = "size" in draws or "shift_distance" in draws
        if moved or self.velocity_smoothing > 0:
            to_kms = unit_factor("velocity_los", out["velocity_los"].attrs.get("units"))
            reflex = reflex_velocity(grid)
            gas = np.asarray(out["velocity_los"].values, dtype=np.float32) * np.float32(to_kms) - reflex
            if moved:
                scale = draws.get("size", 1.0)
                centre = galactic_centre(grid, draws.get("shift_distance", 0.0), draws.get("shift_lon", 0.0))
                values, gas = resample(values, gas, grid, scale, centre, self.interpolation)
                gas *= np.float32(scale)
            if self.velocity_smoothing > 0:
                gas = smooth_velocity(gas, values["density"], self.velocity_smoothing)
            out["velocity_los"] = (FIELD_DIMS, (gas + reflex).astype(np.float32),
                                   {**out["velocity_los"].attrs, "units": FIELD_UNITS["velocity_los"]})
        density = values["density"]
        if "density_scale" in draws:
            density = density * np.float32(draws["density_scale"])
        if self.density_sigma > 0:
            rng = np.random.default_rng(_streams(seed)["density_field"])
            spacing = (grid.distance.step, grid.observer_distance * math.radians(grid.lon.step),
                       grid.observer_distance * math.radians(grid.lat.step))
            g = gaussian_random_field(density.shape, spacing, self.density_slope, rng, workers=1)
            factor = lognormal_factor(g, self.density_sigma)
            density = density * (keep_mass(grid, density, factor) if self.density_keep_mass else factor)
        if "skew" in draws:
            centre = galactic_centre(grid, draws.get("shift_distance", 0.0), draws.get("shift_lon", 0.0))
            density = density * skew_factor(grid, density, draws["skew"], draws["skew_angle"], centre)
        values["density"] = density.astype(np.float32, copy=False)
        for name in names:
            out[name] = (FIELD_DIMS, values[name], dict(out[name].attrs))
        out.attrs["parameters"] = _with_draws(out.attrs.get("parameters", "{}"), draws)
        out.attrs["augment"] = json.dumps({"config": self.to_dict(), "seed": seed}, sort_keys=True)
        validate_field(out)
        return out


def as_augmentation(value) -> FieldAugmentation | None:
    """The ``augment`` setting of a writer or dataset: a :class:`FieldAugmentation` or ``None``.

    Accepts ``None``/``False`` (off), a FieldAugmentation or a mapping of its fields; a config
    with every option off becomes ``None``.  Anything else raises TypeError.
    """
    if value is None or value is False:
        return None
    if isinstance(value, Mapping):
        value = FieldAugmentation.from_dict(dict(value))
    if not isinstance(value, FieldAugmentation):
        raise TypeError(f"augment must be a FieldAugmentation (e.g. FieldAugmentation(size=(0.25, 1.0))), a dict "
                        f"of its fields or None, got {type(value).__name__} {value!r}")
    return None if value.is_identity else value


# --------------------------------------------------------------------------- helpers
def _with_draws(parameters, draws: dict) -> str:
    try:
        params = json.loads(parameters) if isinstance(parameters, str) else dict(parameters)
    except (ValueError, TypeError):
        params = {}
    if not isinstance(params, dict):
        params = {"model": params}
    params["augment"] = draws
    return json.dumps(params, sort_keys=True, default=float)


def observer_jitter(seed: int, grid, *, distance=(-50.0, 50.0), lon=(-0.25, 0.25), angle=None) -> dict:
    """Keyword arguments of :func:`~iris_nb.sim.arepo.from_arepo` for a randomly placed observer.

    ``from_arepo(path, grid, **observer_jitter(seed, grid))`` puts the snapshot's centre at
    distance ``R0 + dr`` (``dr ~ U(distance)``, pc) and longitude ``dl ~ U(lon)`` (deg) through
    from_arepo's ``offset``, as the reference's ``jitter_r`` / ``jitter_lon`` do (observer radius
    and longitude window moved instead; same geometry), and, when ``angle`` is given, views it
    from ``observer_angle ~ U(angle)`` deg.  The defaults (+-50 pc, +-0.25 deg) are this
    package's choice; the reference has these jitters off.

    Parameters
    ----------
    seed:
        Integer >= 0; the draws use ``SeedSequence(seed, spawn_key=(key,))``, independent of a
        gas model's ``default_rng(seed)``.
    grid:
        :class:`~iris_nb.grids.Grid` or preset name (its R0 is used).
    distance, lon, angle:
        ``(low, high)`` ranges (a number is a fixed value; ``None`` is 0 / leaves
        ``observer_angle`` out).

    Returns
    -------
    dict
        ``{"offset": [dx, dy, 0.0]}`` (pc, grid frame) and ``"observer_angle"`` (deg) when
        ``angle`` is given.

    Examples
    --------
    A snapshot as a gas model of :func:`~iris_nb.data.store.write_dataset` (the drawn offset
    and angle are stored per sample as ``offset_x``, ``offset_y`` and ``observer_angle``)::

        def snapshot_model(grid, seed, path):
            return from_arepo(path, grid, **observer_jitter(seed, grid, angle=(0.0, 360.0)))

        write_dataset("snap.zarr", n=512, grid=grid, model=snapshot_model,
                      model_kwargs={"path": "snap_100.hdf5"})
    """
    seed = _seed_int(seed, "observer_jitter seed")
    grid = get_grid(grid)
    bounds = [_range(distance, "distance", low=-1000.0, high=1000.0, unit=" pc"),
              _range(lon, "lon", low=-10.0, high=10.0, unit=" deg"), _range(angle, "angle", unit=" deg")]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_JITTER_KEY,)))
    dr, dl, a = (float(rng.uniform(*(b or (0.0, 0.0)))) for b in bounds)  # always three draws
    centre = galactic_centre(grid, dr, dl)
    out = {"offset": [float(centre[0]), float(centre[1]), 0.0]}
    if bounds[2] is not None:
        out["observer_angle"] = a
    return out
