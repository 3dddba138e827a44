"""Litter: Galactic disc gas in front of and behind the CMZ, and a module adding it to inputs.

Towards the Galactic Centre the line of sight also crosses the Galactic disc.  Its gas lands
in the same PV image as the CMZ (mostly at small |v|, since disc gas at |l| < 1.5 deg moves
almost perpendicular to the line of sight) but belongs to no top-down target.  Training on
inputs with such *litter* added teaches the network to ignore it.

:func:`make_litter` draws disc gas on a grid whose distance window lies outside the CMZ
window (:func:`litter_grid`): ``"near"`` from :data:`NEAR_SIDE_START` to the CMZ's near edge,
``"far"`` from its far edge over :data:`FAR_SIDE_LENGTH`.  The gas is the sum of

1. a smooth molecular **disc**: a Gaussian ring in Galactocentric radius (peak 4-5.5 kpc) with
   a hole swept clear by the bar inside ~3 kpc, Gaussian vertical profile;
2. **spiral-arm** crossings: Gaussian rings in radius with a density contrast and a radial
   streaming velocity each;
3. the **expanding 3-kpc arm** at R ~ 3 kpc, moving radially outwards at 45-60 km/s: the
   near arm appears at v ~ -50 km/s, the far arm at v ~ +50 km/s;
4. giant molecular **clouds**: 3D Gaussians placed where the smooth gas is, each with its
   own random velocity;
5. the **bar region** inside the hole, which the Galactic bar's own gas fills: gas on x1
   orbits (nested ellipses along the bar, axis ratio 0.3-0.6, out to ``bar_length`` ~3 kpc,
   flat mean orbital speed) and the two **bar dust lanes** on the bar's leading sides,
   parallel to its major axis, where gas falls towards the CMZ at 100-200 km/s.  Seen at
   |l| < 1.5 deg they put gas at |v| ~ 100-250 km/s outside the CMZ window (near and far),
   as the real sky has;

times a log-normal turbulent factor.  Every structure rotates on a flat rotation curve
(solid body inside 500 pc); each cell takes the velocity of the structure that dominates its
density, plus a turbulent component, projected with the observer's own motion
(:func:`iris_nb.sim.kinematics.line_of_sight_velocity`, v_LSR).  Temperature, H2 fraction
and 13CO abundance follow the density as in :mod:`iris_nb.sim.cmz`, with disc values (cold
clouds, 12C/13C of 40-70).  Parameters are drawn uniformly from :data:`LITTER_PARAMETERS`;
the same seed gives the same field.

:class:`Litter` adds, per sample and with probability ``p``, one random litter PV image from
a dataset (e.g. a store written with ``model=near_side_litter``) to the training inputs.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ..grids import Axis, Grid
from .fields import field_from_arrays
from .radiative import T_CMB, THIRTEEN_CO_21, line_temperature, rj_temperature
from .kinematics import cell_positions, line_of_sight_velocity
from .parameters import draw_parameters
from .turbulence import gaussian_random_field, lognormal_factor

__all__ = ["LITTER_PARAMETERS", "NEAR_SIDE_START", "FAR_SIDE_LENGTH", "litter_grid",
           "draw_litter_parameters", "make_litter", "near_side_litter", "far_side_litter", "Litter"]

NEAR_SIDE_START = 1000.0
"""Heliocentric distance (pc) where the near-side litter window starts."""
FAR_SIDE_LENGTH = 8000.0
"""Length (pc) of the far-side litter window behind the CMZ window."""
SIDES = ("near", "far")

LITTER_PARAMETERS = {
    "density_scale": (0.25, 1.0, "overall factor multiplying every density", ""),
    "disc_density": (0.03, 0.12, "mid-plane total gas density at the molecular ring's peak", "solMass / pc3"),
    "ring_radius": (4000.0, 5500.0, "Galactocentric radius of the molecular ring's peak", "pc"),
    "ring_width": (1000.0, 2000.0, "Gaussian sigma of the molecular ring in radius", "pc"),
    "hole_radius": (2500.0, 3200.0, "radius inside which the bar swept the disc clear (200 pc edge)", "pc"),
    "disc_height": (30.0, 70.0, "Gaussian sigma of the vertical profile of all structures", "pc"),
    "rotation_speed": (200.0, 240.0, "flat rotation curve of the disc gas", "km/s"),
    "arm_count": (1, 3, "spiral-arm crossings in the window (integer)", ""),
    "arm_contrast": (1.5, 4.0, "arm mid-line density over disc_density", ""),
    "arm_width": (100.0, 300.0, "Gaussian sigma of an arm in Galactocentric radius", "pc"),
    "arm_streaming": (0.0, 15.0, "largest radial streaming speed of an arm (each draws -s .. s)", "km/s"),
    "expanding_arm_density": (0.03, 0.2, "mid-line density of the expanding 3-kpc arm (0 removes it)",
                              "solMass / pc3"),
    "expanding_arm_radius": (2800.0, 3500.0, "Galactocentric radius of the 3-kpc arm", "pc"),
    "expanding_arm_width": (80.0, 200.0, "Gaussian sigma of the 3-kpc arm in radius", "pc"),
    "expanding_arm_speed": (45.0, 60.0, "outward radial speed of the 3-kpc arm", "km/s"),
    "bar_angle": (20.0, 30.0, "angle of the bar's major axis from the GC -> Sun line (near end at "
                  "positive longitude)", "deg"),
    "bar_length": (2500.0, 3500.0, "semi-major axis of the outermost x1 orbit", "pc"),
    "x1_axis_ratio": (0.3, 0.6, "minor over major axis of the x1 orbits", ""),
    "x1_density": (0.005, 0.05, "mid-plane density of the x1-orbit gas near the bar's centre "
                   "(falls as exp(-2 s) with the elliptical radius s, 0 beyond the bar)", "solMass / pc3"),
    "x1_speed": (150.0, 230.0, "mean orbital speed along an x1 orbit", "km/s"),
    "bar_lane_density": (0.05, 0.4, "mid-line density of the bar dust lanes", "solMass / pc3"),
    "bar_lane_offset": (150.0, 450.0, "distance of the dust lanes from the bar's major axis, on its "
                        "leading sides", "pc"),
    "bar_lane_width": (40.0, 120.0, "Gaussian sigma of the dust lanes' cross-section", "pc"),
    "bar_lane_speed": (100.0, 200.0, "inflow speed along the dust lanes, towards the centre", "km/s"),
    "cloud_count": (10, 60, "giant molecular clouds in the window (integer)", ""),
    "cloud_radius": (5.0, 20.0, "largest Gaussian sigma of a cloud (each draws 0.4-1 times it)", "pc"),
    "cloud_density": (2.0, 20.0, "largest cloud peak density (each draws 0.3-1 times it)", "solMass / pc3"),
    "cloud_dispersion": (3.0, 8.0, "cloud-to-cloud velocity dispersion per in-plane axis", "km/s"),
    "turbulence_sigma": (0.5, 1.0, "standard deviation of ln(density) of the turbulence", ""),
    "turbulence_slope": (3.0, 4.0, "beta of the 3D power spectrum P(k) ~ k^-beta of ln(density)", ""),
    "velocity_dispersion": (1.0, 4.0, "standard deviation of the turbulent line-of-sight velocity", "km/s"),
    "molecular_density": (0.02, 0.2, "density at which gas is half molecular and half-way between "
                          "the two temperatures", "solMass / pc3"),
    "temperature_dense": (10.0, 20.0, "kinetic temperature of dense gas", "K"),
    "temperature_diffuse": (40.0, 100.0, "kinetic temperature of diffuse gas", "K"),
    "tracer_abundance": (1.4e-6, 2.5e-6, "13CO per H2 in dense gas (CO/H2 = 1e-4 over 12C/13C = 40-70)", ""),
    "dust_temperature": (12.0, 20.0, "dust temperature in dense gas (diffuse dust up to 20% warmer)", "K"),
}
"""name -> (low, high, description, unit) of every :func:`make_litter` parameter."""

_INTEGER = {"arm_count", "cloud_count"}
_POSITIVE = {"ring_radius", "ring_width", "hole_radius", "disc_height", "arm_width", "expanding_arm_radius",
             "bar_length", "x1_axis_ratio", "bar_lane_width",
             "expanding_arm_width", "cloud_radius", "molecular_density", "temperature_dense",
             "temperature_diffuse", "dust_temperature"}
_CHUNK_CELLS = 1 << 20  # cells per block of distance rows (~100 MB of float64 temporaries)


def litter_grid(grid: Grid, side: str, start: float | None = None, stop: float | None = None,
                steps: int | None = None) -> Grid:
    """The grid of the litter on one ``side`` of the CMZ grid ``grid``.

    Same lon, lat, velocity axes, observer, line and beam as ``grid``; the distance window is
    ``[NEAR_SIDE_START, grid.distance.start]`` (near) or ``[grid.distance.stop,
    grid.distance.stop + FAR_SIDE_LENGTH]`` (far), in pc, unless ``start`` / ``stop`` are
    given, cut into ``steps`` pixels (default ``grid.distance.steps``).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"litter_grid needs an iris_nb.grids.Grid, got {type(grid).__name__}")
    if side not in SIDES:
        raise ValueError(f"side must be 'near' (between the Sun and the CMZ) or 'far' (beyond it), got {side!r}")
    near = side == "near"
    lo = (NEAR_SIDE_START if near else grid.distance.stop) if start is None else float(start)
    hi = (grid.distance.start if near else grid.distance.stop + FAR_SIDE_LENGTH) if stop is None else float(stop)
    if not 0 < lo < hi:
        raise ValueError(f"the {side}-side litter window [{lo:g}, {hi:g}] pc is empty; pass the CMZ grid "
                         f"(distance window around R0 = {grid.observer_distance:g} pc) or valid start/stop")
    if (near and hi > grid.observer_distance) or (not near and lo < grid.observer_distance):
        raise ValueError(f"a {side}-side litter window must lie {'before' if near else 'beyond'} the Galactic "
                         f"Centre (R0 = {grid.observer_distance:g} pc), got [{lo:g}, {hi:g}] pc")
    axis = Axis(lo, hi, grid.distance.steps if steps is None else steps)
    return grid.replace(distance=axis, name=f"{grid.name}-{side}-litter")


def draw_litter_parameters(rng: np.random.Generator, **params) -> dict:
    """Draw every parameter of :data:`LITTER_PARAMETERS` in table order, then apply ``params``.

    Explicit values leave the draws of the others unchanged.  Unknown names raise TypeError.
    Returns plain floats (counts as ints) in the units of the table.
    """
    return draw_parameters(rng, LITTER_PARAMETERS, _INTEGER, params, "make_litter", _check_value)


def _check_value(name: str, value):
    """An explicit litter parameter, validated and converted (int for counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"make_litter parameter {name}={value!r} must be a finite real number")
    if value < 0 or (name in _POSITIVE and value == 0) or (name in _INTEGER and int(value) != value):
        kind = "a non-negative integer" if name in _INTEGER else ("> 0" if name in _POSITIVE else ">= 0")
        raise ValueError(f"make_litter parameter {name}={value!r} must be {kind} "
                         f"(typical range {LITTER_PARAMETERS[name][:2]})")
    return int(value) if name in _INTEGER else float(value)


def _rotation(radius, p):
    """Flat rotation curve, solid body inside 500 pc (km/s)."""
    return p["rotation_speed"] * np.minimum(1.0, radius / 500.0)


def _structures(radius, p, arms):
    """``[(midplane density, radial speed), ...]`` of the smooth structures at ``radius``."""
    hole = 1.0 / (1.0 + np.exp(-(radius - p["hole_radius"]) / 200.0))
    ring = np.exp(-0.5 * ((radius - p["ring_radius"]) / p["ring_width"]) ** 2)
    out = [(p["disc_density"] * ring * hole, 0.0)]
    for arm_radius, streaming in arms:
        profile = np.exp(-0.5 * ((radius - arm_radius) / p["arm_width"]) ** 2)
        out.append((p["arm_contrast"] * p["disc_density"] * profile, streaming))
    profile = np.exp(-0.5 * ((radius - p["expanding_arm_radius"]) / p["expanding_arm_width"]) ** 2)
    out.append((p["expanding_arm_density"] * profile, p["expanding_arm_speed"]))
    return out


def _bar_gas(x, y, p):
    """Density (solMass / pc3, mid-plane) and velocity (km/s) of the x1-orbit gas and of the bar
    dust lanes at in-plane points ``x, y`` (pc): ``[(rho, vx, vy), (rho, vx, vy)]``."""
    angle = math.radians(p["bar_angle"])
    u = (math.sin(angle), -math.cos(angle))  # bar major axis, towards its near end
    n = (math.cos(angle), math.sin(angle))   # +90 deg: the near end's leading side (prograde rotation)
    xp, yp = x * u[0] + y * u[1], x * n[0] + y * n[1]
    a, q = p["bar_length"], p["x1_axis_ratio"]
    s = np.sqrt((xp / a) ** 2 + (yp / (q * a)) ** 2)
    edge = np.clip((1.0 - s) / 0.1, 0.0, 1.0)  # the bar ends over the last 10% of its length
    rho_x1 = p["x1_density"] * np.exp(-2.0 * s) * edge
    # x1 orbits: ellipses run through at constant d(anomaly)/dt, mean speed x1_speed on each
    anomaly = np.linspace(0.0, 2 * np.pi, 256, endpoint=False)
    mean_per_omega = np.mean(np.hypot(np.sin(anomaly), q * np.cos(anomaly))) * a
    omega = p["x1_speed"] / (np.maximum(s, 1e-3) * mean_per_omega)
    vxp, vyp = -omega * yp / q, omega * q * xp
    x1 = (rho_x1, vxp * u[0] + vyp * n[0], vxp * u[1] + vyp * n[1])
    # lanes: parallel to the bar at +offset (near half) and -offset (far half), point-symmetric
    near_half = xp >= 0
    side = np.where(near_half, 1.0, -1.0)
    gap = np.abs(yp - side * p["bar_lane_offset"])
    along = np.abs(xp)
    beyond = np.clip(along - a, 0.0, None)
    rho_lane = p["bar_lane_density"] * np.exp(-0.5 * (gap**2 + beyond**2) / p["bar_lane_width"] ** 2)
    inflow = -side * p["bar_lane_speed"]  # towards the centre along the bar axis
    lanes = (rho_lane, inflow * u[0] * np.ones_like(x), inflow * u[1] * np.ones_like(x))
    return [x1, lanes]


def _draw_structure(rng, grid: Grid, p: dict):
    """Arms ``[(radius pc, radial streaming km/s)]`` and clouds ``[(x, y, z, sigma, peak, vx, vy, d)]``
    (pc, pc, pc, pc, solMass / pc3, km/s, km/s, heliocentric pc)."""
    r0 = grid.observer_distance
    d = grid.distance.centers()
    radius = np.abs(d - r0)
    lo, hi = max(p["hole_radius"], radius.min()), radius.max()
    arms = [(float(rng.uniform(lo, max(lo, hi))), float(rng.uniform(-1, 1) * p["arm_streaming"]))
            for _ in range(p["arm_count"])]
    weight = sum(rho for rho, _ in _structures(radius, p, arms)) * d * d
    weight = weight if weight.sum() > 0 else d * d
    n = p["cloud_count"]
    dist = d[rng.choice(d.size, size=n, p=weight / weight.sum())] + rng.uniform(-0.5, 0.5, n) * grid.distance.step
    lon = rng.uniform(grid.lon.start, grid.lon.stop, n)
    z = rng.normal(0.0, 0.5 * p["disc_height"], n)
    sigma = p["cloud_radius"] * rng.uniform(0.4, 1.0, n)
    peak = p["cloud_density"] * rng.uniform(0.3, 1.0, n)
    kick = rng.normal(0.0, p["cloud_dispersion"], (2, n))
    x, y, zc = cell_positions(dist, lon, np.degrees(np.arcsin(np.clip(z / dist, -1, 1))), r0)
    rc = np.hypot(x, y)
    speed = _rotation(rc, p)
    vx, vy = -speed * y / rc + kick[0], speed * x / rc + kick[1]
    return arms, list(zip(x, y, zc, sigma, peak, vx, vy, dist))


def _index_range(axis: Axis, lo: float, hi: float) -> slice:
    i0 = int(np.clip(math.floor((lo - axis.start) / axis.step), 0, axis.steps))
    i1 = int(np.clip(math.ceil((hi - axis.start) / axis.step), 0, axis.steps))
    return slice(i0, i1)


def _fill_block(out, grid, rows, p, arms, clouds):
    """Fill ``out["density"]`` (solMass / pc3, before turbulence and density_scale) and
    ``out["velocity_los"]`` (km/s, before turbulence) of the distance ``rows``, in place."""
    d, lon, lat = grid.distance.centers()[rows], grid.lon.centers(), grid.lat.centers()
    x, y, z = (c.astype(np.float32) for c in cell_positions(d[:, None, None], lon[None, :, None],
                                                               lat[None, None, :], grid.observer_distance))
    radius = np.hypot(x, y)
    vertical = np.exp(-0.5 * (z / p["disc_height"]) ** 2)
    total, best = np.zeros_like(radius), np.zeros_like(radius)
    v_radial, v_phi = np.zeros_like(radius), _rotation(radius, p)
    for rho, speed in _structures(radius, p, arms):
        rho = rho * vertical
        total += rho
        wins = rho > best
        best = np.where(wins, rho, best)
        v_radial = np.where(wins, speed, v_radial)
    vx = (v_radial * x - v_phi * y) / radius
    vy = (v_radial * y + v_phi * x) / radius
    for rho, bvx, bvy in _bar_gas(x, y, p):
        rho = (rho * vertical).astype(np.float32)
        total += rho
        wins = rho > best
        best = np.where(wins, rho, best)
        vx, vy = np.where(wins, bvx, vx), np.where(wins, bvy, vy)
    for xc, yc, zc, sigma, peak, cvx, cvy, dist in clouds:
        reach = 4.0 * sigma
        spread = math.degrees(reach / max(dist - reach, 1.0))
        lon_c = math.degrees(math.atan2(xc, yc + grid.observer_distance))
        lat_c = math.degrees(math.asin(zc / dist))
        box = (_index_range(grid.distance, dist - reach, dist + reach),
               _index_range(grid.lon, lon_c - spread, lon_c + spread),
               _index_range(grid.lat, lat_c - spread, lat_c + spread))
        sub_d = slice(max(box[0].start, rows.start) - rows.start, min(box[0].stop, rows.stop) - rows.start)
        if sub_d.start >= sub_d.stop or box[1].start >= box[1].stop or box[2].start >= box[2].stop:
            continue
        sub = (sub_d, box[1], box[2])
        zz = np.broadcast_to(z, radius.shape)[sub]
        blob = peak * np.exp(-0.5 * ((x[sub] - xc) ** 2 + (y[sub] - yc) ** 2 + (zz - zc) ** 2) / sigma**2)
        total[sub] += blob
        wins = blob > best[sub]
        best[sub] = np.where(wins, blob, best[sub])
        vx[sub] = np.where(wins, cvx, vx[sub])
        vy[sub] = np.where(wins, cvy, vy[sub])
    zero = np.zeros_like(radius)
    out["density"][rows] = total
    out["velocity_los"][rows] = line_of_sight_velocity(x, y, np.broadcast_to(z, radius.shape), vx, vy, zero,
                                                       grid.observer_distance)


def make_litter(grid: Grid, side: str = "near", seed: int = 0, **params):
    """Random Galactic disc gas on one side of the CMZ (see the module text).

    Parameters
    ----------
    grid:
        A CMZ grid (distance window containing R0), replaced by ``litter_grid(grid, side)``,
        or a grid already on the requested side of the Galactic Centre (used as is).
    side:
        ``"near"`` (between the Sun and the CMZ) or ``"far"`` (beyond it).
    seed:
        Non-negative integer; same seed and parameters give a bit-identical field.
    **params:
        Names of :data:`LITTER_PARAMETERS` to fix instead of drawing them (units as there).

    Returns
    -------
    xarray.Dataset
        A field (:mod:`iris_nb.sim.fields`) on ``(distance, lon, lat)`` of the litter grid:
        ``density`` (solMass / pc3), ``velocity_los`` (km/s, v_LSR), ``temperature`` (K),
        ``x_h2``, ``x_tracer``, ``temperature_dust`` (K), float32; attrs ``parameters``,
        ``seed``, ``model`` = ``"make_litter"``, ``side`` and ``grid``.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"make_litter needs an iris_nb.grids.Grid, got {type(grid).__name__}")
    if side not in SIDES:
        raise ValueError(f"side must be 'near' (between the Sun and the CMZ) or 'far' (beyond it), got {side!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"make_litter seed must be a non-negative integer, got {seed!r}")
    if grid.distance.start < grid.observer_distance < grid.distance.stop:
        grid = litter_grid(grid, side)
    elif (side == "near") != (grid.distance.stop <= grid.observer_distance):
        raise ValueError(f"grid distance window [{grid.distance.start:g}, {grid.distance.stop:g}] pc is on the "
                         f"other side of the Galactic Centre (R0 = {grid.observer_distance:g} pc) than "
                         f"side={side!r}; use litter_grid(cmz_grid, {side!r})")
    streams = np.random.SeedSequence(int(seed)).spawn(4)
    p = draw_litter_parameters(np.random.default_rng(streams[0]), **params)
    arms, clouds = _draw_structure(np.random.default_rng(streams[1]), grid, p)
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    out = {"density": np.empty(shape, np.float32), "velocity_los": np.empty(shape, np.float32)}
    rows = max(1, _CHUNK_CELLS // (grid.lon.steps * grid.lat.steps))
    for d0 in range(0, shape[0], rows):
        _fill_block(out, grid, slice(d0, min(shape[0], d0 + rows)), p, arms, clouds)

    mid = 0.5 * (grid.distance.start + grid.distance.stop)
    spacing = (grid.distance.step, math.radians(grid.lon.step) * mid, math.radians(grid.lat.step) * mid)
    turbulence = gaussian_random_field(shape, spacing, p["turbulence_slope"], np.random.default_rng(streams[2]))
    out["density"] *= lognormal_factor(turbulence, p["turbulence_sigma"]) * np.float32(p["density_scale"])
    turbulence = gaussian_random_field(shape, spacing, 4.0, np.random.default_rng(streams[3]))
    out["velocity_los"] += np.float32(p["velocity_dispersion"]) * turbulence
    del turbulence

    rho = out["density"]
    molecular = rho / (rho + np.float32(p["molecular_density"]))
    diffuse = np.float32(1) - molecular
    out["x_h2"] = np.float32(0.5) * molecular
    out["x_tracer"] = np.float32(p["tracer_abundance"]) * molecular
    out["temperature"] = np.float32(p["temperature_dense"]) + diffuse * np.float32(
        p["temperature_diffuse"] - p["temperature_dense"])
    out["temperature_dust"] = np.float32(p["dust_temperature"]) * (np.float32(1) + np.float32(0.2) * diffuse)
    parameters = dict(p, side=side, arm_radii=[a for a, _ in arms])
    return field_from_arrays(grid, **out, parameters=parameters, seed=int(seed), model="make_litter", side=side)


def near_side_litter(grid: Grid, seed: int = 0, **params):
    """``make_litter(grid, "near", seed, **params)``; a gas model for ``write_dataset``."""
    return make_litter(grid, "near", seed, **params)


def far_side_litter(grid: Grid, seed: int = 0, **params):
    """``make_litter(grid, "far", seed, **params)``; a gas model for ``write_dataset``."""
    return make_litter(grid, "far", seed, **params)


# ================================================================================ Litter
def _as_images(value, where: str) -> torch.Tensor:
    """An observation as a ``(lon, v)`` tensor (from ``(1, lon, v)`` or ``(lon, v)``)."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    value = torch.as_tensor(value)
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 2:
        raise ValueError(f"{where} is not a PV image: shape {tuple(value.shape)}, expected (1, lon, v) or (lon, v)")
    return value


class Litter(nn.Module):
    """Add a random litter PV image to some samples of a batch of inputs.

    Parameters
    ----------
    dataset:
        Where litter images come from: a torch Dataset whose items are ``(observation,
        target)`` (e.g. a :class:`~iris_nb.data.datasets.PreObservedDataset` of a store written
        with ``model=near_side_litter``; only the observation is used) or observations
        ``(1, lon, v)``; or a tensor ``(N, 1, lon, v)`` / ``(N, lon, v)``; or a list of these
        (e.g. ``[near, far]``), each drawn independently.  Images must be in the units of the
        inputs (same observer and reduction).
    p:
        Probability that a sample receives an image from a dataset; one number for all or one
        per dataset.
    scale:
        Factor (>= 0) multiplying every litter image.
    generator:
        Default ``torch.Generator`` of the draws (``forward(generator=...)`` overrides it).
    foreground:
        Which datasets hold gas *in front of* the CMZ, whose line absorbs the CMZ's emission:
        ``None`` (default) takes the datasets whose grid lies on the near side of the Galactic
        Centre (stores written on ``litter_grid(grid, "near")``); or a bool, or one per dataset.
    excitation_temperature:
        Excitation temperature (K) of the foreground gas's line; default 8 K (sub-thermal
        13CO(2-1) in cold disc clouds).
    rest_frequency:
        Line frequency, GHz, for the Planck function; default the datasets' grid's (13CO(2-1)).

    ``forward(x)`` with ``x`` of shape ``(B, 1, lon, v)`` or ``(B, lon, v)`` returns, for every
    dataset and sample independently with probability ``p``, the input with one image drawn
    uniformly from the dataset: behind the CMZ the image adds, ``x + scale * litter``; in front
    of it (``foreground``) the foreground gas is an absorbing layer at ``T_ex``: a layer that
    emits ``T_fg = [J(T_ex) - J(T_CMB)] (1 - e^-tau)`` transmits ``e^-tau = 1 - T_fg / [J(T_ex)
    - J(T_CMB)]`` of what lies behind, so ``x * (1 - T_fg / dJ) + T_fg`` (the transmission
    kept >= 0.05).  The PV images are latitude means, so this takes the foreground as uniform
    over latitude within a pixel (clumpy foregrounds absorb somewhat less).  Absorption needs
    brightness temperatures (K); litter in column units (``SimpleObserver``) only adds.
    A new tensor on ``x``'s device and dtype; targets are never touched.  Add litter before
    noise: litter is noise-free gas.
    """

    def __init__(self, dataset, p=0.5, scale: float = 1.0, generator: torch.Generator | None = None,
                 foreground=None, excitation_temperature: float = 8.0,
                 rest_frequency: float | None = None) -> None:
        super().__init__()
        datasets = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
        if not datasets:
            raise ValueError("Litter needs at least one dataset of litter PV images")
        probs = list(p) if isinstance(p, (list, tuple)) else [p] * len(datasets)
        if len(probs) != len(datasets):
            raise ValueError(f"Litter got {len(datasets)} datasets but {len(probs)} probabilities p; give one p "
                             "per dataset or a single number")
        for value in probs + [scale]:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"Litter p and scale must be finite numbers, got {value!r}")
        if any(not 0.0 <= v <= 1.0 for v in probs):
            raise ValueError(f"Litter probabilities p must lie in [0, 1], got {probs}")
        if scale < 0:
            raise ValueError(f"Litter scale must be >= 0, got {scale}")
        shapes = []
        for k, data in enumerate(datasets):
            if not isinstance(data, torch.Tensor) and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
                raise TypeError(f"litter dataset {k} is a {type(data).__name__}; give a torch Dataset of "
                                "(observation, target) items or a tensor (N, 1, lon, v)")
            if isinstance(data, torch.Tensor) and data.ndim == 4:
                if data.shape[1] != 1:
                    raise ValueError(f"litter tensor {k} has shape {tuple(data.shape)}; expected (N, 1, lon, v)")
                data = datasets[k] = data[:, 0]
            if len(data) == 0:
                raise ValueError(f"litter dataset {k} is empty")
            shapes.append(tuple(_as_images(data[0], f"item 0 of litter dataset {k}").shape))
        if len(set(shapes)) > 1:
            raise ValueError(f"litter datasets have different PV shapes (lon, v) {shapes}; make them on one grid")
        self.datasets = datasets
        self.p = [float(v) for v in probs]
        self.scale = float(scale)
        self.generator = generator
        self.pv_shape = shapes[0]
        units = {d.units.get("observation") for d in datasets if isinstance(getattr(d, "units", None), dict)}
        if len(units) > 1:
            raise ValueError(f"litter datasets have different observation units {sorted(units)}; "
                             "open them with PreObservedDataset(..., units={'observation': ...})")
        self.units = units.pop() if units else None
        self.foreground = self._foreground(foreground)
        if not (isinstance(excitation_temperature, numbers.Real) and math.isfinite(excitation_temperature)
                and excitation_temperature > T_CMB):
            raise ValueError(f"excitation_temperature is the foreground line's T_ex in K and must exceed the "
                             f"CMB's {T_CMB} K, got {excitation_temperature!r}")
        grids = [g for g in (getattr(d, "grid", None) for d in self.datasets) if isinstance(g, Grid)]
        if rest_frequency is None:
            rest_frequency = grids[0].rest_frequency if grids else THIRTEEN_CO_21.rest_frequency
        t0 = line_temperature(rest_frequency)
        self.excitation_temperature = float(excitation_temperature)
        self.rest_frequency = float(rest_frequency)
        temperatures = torch.tensor([self.excitation_temperature, T_CMB], dtype=torch.float64)
        j_layer, j_cmb = rj_temperature(temperatures, t0).tolist()
        self._layer_contrast = j_layer - j_cmb  # J(T_ex) - J(T_CMB), K

    def _foreground(self, foreground) -> list[bool]:
        if foreground is None:
            out = []
            for data in self.datasets:
                grid = getattr(data, "grid", None)
                out.append(isinstance(grid, Grid) and grid.distance.stop <= grid.observer_distance)
            return out
        flags = list(foreground) if isinstance(foreground, (list, tuple)) else [foreground] * len(self.datasets)
        if len(flags) != len(self.datasets) or not all(isinstance(f, (bool, np.bool_)) for f in flags):
            raise ValueError(f"foreground must be None, True/False or one bool per litter dataset "
                             f"({len(self.datasets)}), got {foreground!r}")
        return [bool(f) for f in flags]

    @property
    def absorbs(self) -> bool:
        """Whether foreground litter absorbs: some dataset is in front and the images are in K."""
        return any(self.foreground) and self.units in (None, "K")

    def extra_repr(self) -> str:
        sizes = [len(d) for d in self.datasets]
        front = f", foreground={self.foreground} at T_ex={self.excitation_temperature:g} K" if self.absorbs else ""
        return f"datasets of {sizes} images {self.pv_shape}, p={self.p}, scale={self.scale:g}{front}"

    def draw(self, batch: int, generator: torch.Generator | None = None, device=None,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Litter for a batch: ``(litter (batch, 1, lon, v), hits (n_datasets, batch) bool)``.

        ``litter`` is the sum of the images drawn for each sample (zeros where none), already
        multiplied by ``scale``, in the datasets' units; ``hits[k, b]`` tells whether sample
        ``b`` received an image from dataset ``k``.
        """
        litter, front, hits = self._draw(batch, generator, device, dtype)
        return litter, hits

    def _draw(self, batch, generator, device, dtype):
        """``(litter, foreground part of it, hits)``: like :meth:`draw`, plus the summed images of
        the foreground datasets (``(batch, 1, lon, v)``, scaled)."""
        generator = self.generator if generator is None else generator
        gen_device = generator.device if generator is not None else torch.device("cpu")
        litter = torch.zeros((batch, 1) + self.pv_shape, device=device, dtype=dtype)
        front = torch.zeros_like(litter)
        hits = torch.zeros(len(self.datasets), batch, dtype=torch.bool)
        for k, (data, p) in enumerate(zip(self.datasets, self.p)):
            hit = torch.rand(batch, generator=generator, device=gen_device).cpu() < p
            index = torch.randint(len(data), (batch,), generator=generator, device=gen_device).cpu()
            hits[k] = hit
            rows = torch.nonzero(hit).flatten()
            if rows.numel() == 0:
                continue
            if isinstance(data, torch.Tensor):
                images = data[index[rows].to(data.device)]
            else:
                images = torch.stack([_as_images(data[int(i)], f"item {int(i)} of litter dataset {k}")
                                      for i in index[rows]])
            images = images.to(device=litter.device, dtype=dtype)
            litter[rows.to(litter.device), 0] += images
            if self.foreground[k]:
                front[rows.to(litter.device), 0] += images
        if self.scale != 1.0:
            litter *= self.scale
            front *= self.scale
        return litter, front, hits

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` ``(B, 1, lon, v)`` or ``(B, lon, v)`` plus litter; same shape, device, dtype."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"Litter expects a floating-point torch.Tensor of PV images, got "
                            f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' ' + str(x.dtype)}")
        channel = x.ndim == 4 and x.shape[1] == 1
        if not (channel or x.ndim == 3) or tuple(x.shape[-2:]) != self.pv_shape:
            raise ValueError(f"Litter inputs must be PV images (B, 1, lon, v) = (B, 1, {self.pv_shape[0]}, "
                             f"{self.pv_shape[1]}) like its litter images, got {tuple(x.shape)}; "
                             "make the litter store on the inputs' grid (litter_grid(grid, side))")
        litter, front, _ = self._draw(x.shape[0], generator, x.device, x.dtype)
        if not channel:
            litter, front = litter[:, 0], front[:, 0]
        if self.absorbs:
            transmission = (1.0 - front.clamp_min(0.0) / self._layer_contrast).clamp_min(0.05)
            return x * transmission + litter
        return x + litter
