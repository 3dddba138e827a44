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

The gas structures live in :mod:`iris_nb.sim.litter_geometry`, :class:`Litter` in
:mod:`iris_nb.sim.litter_images` (importable from here too), its settings
(:class:`~iris_nb.sim.litter_config.LitterConfig`) in :mod:`iris_nb.sim.litter_config`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..grids import Axis, Grid
from .fields import field_from_arrays
from .litter_geometry import draw_structure, fill_block
from .litter_images import Litter
from .parameters import ParameterTable
from .turbulence import gaussian_random_field, lognormal_factor

__all__ = ["LITTER_PARAMETERS", "NEAR_SIDE_START", "FAR_SIDE_LENGTH", "litter_grid",
           "draw_litter_parameters", "make_litter", "near_side_litter", "far_side_litter", "Litter"]

NEAR_SIDE_START = 1000.0
"""Heliocentric distance (pc) where the near-side litter window starts."""
FAR_SIDE_LENGTH = 8000.0
"""Length (pc) of the far-side litter window behind the CMZ window."""
SIDES = ("near", "far")

LITTER_PARAMETERS = ParameterTable.parse("""
    name                  | low     | high    | kind | unit          | description
    density_scale         | 0.25    | 1.0     | >=0  |               | overall factor multiplying every density
    disc_density          | 0.03    | 0.12    | >=0  | solMass / pc3 | mid-plane total gas density at the molecular
                          |         |         |      |               | ring's peak
    ring_radius           | 4000.0  | 5500.0  | >0   | pc            | Galactocentric radius of the molecular ring's
                          |         |         |      |               | peak
    ring_width            | 1000.0  | 2000.0  | >0   | pc            | Gaussian sigma of the molecular ring in radius
    hole_radius           | 2500.0  | 3200.0  | >0   | pc            | radius inside which the bar swept the disc
                          |         |         |      |               | clear (200 pc edge)
    disc_height           | 30.0    | 70.0    | >0   | pc            | Gaussian sigma of the vertical profile of all
                          |         |         |      |               | structures
    rotation_speed        | 200.0   | 240.0   | >=0  | km/s          | flat rotation curve of the disc gas
    arm_count             | 1       | 3       | int  |               | spiral-arm crossings in the window (integer)
    arm_contrast          | 1.5     | 4.0     | >=0  |               | arm mid-line density over disc_density
    arm_width             | 100.0   | 300.0   | >0   | pc            | Gaussian sigma of an arm in Galactocentric
                          |         |         |      |               | radius
    arm_streaming         | 0.0     | 15.0    | >=0  | km/s          | largest radial streaming speed of an arm (each
                          |         |         |      |               | draws -s .. s)
    expanding_arm_density | 0.03    | 0.2     | >=0  | solMass / pc3 | mid-line density of the expanding 3-kpc arm (0
                          |         |         |      |               | removes it)
    expanding_arm_radius  | 2800.0  | 3500.0  | >0   | pc            | Galactocentric radius of the 3-kpc arm
    expanding_arm_width   | 80.0    | 200.0   | >0   | pc            | Gaussian sigma of the 3-kpc arm in radius
    expanding_arm_speed   | 45.0    | 60.0    | >=0  | km/s          | outward radial speed of the 3-kpc arm
    bar_angle             | 20.0    | 30.0    | >=0  | deg           | angle of the bar's major axis from the GC ->
                          |         |         |      |               | Sun line (near end at positive longitude)
    bar_length            | 2500.0  | 3500.0  | >0   | pc            | semi-major axis of the outermost x1 orbit
    x1_axis_ratio         | 0.3     | 0.6     | >0   |               | minor over major axis of the x1 orbits
    x1_density            | 0.005   | 0.05    | >=0  | solMass / pc3 | mid-plane density of the x1-orbit gas near the
                          |         |         |      |               | bar's centre (falls as exp(-2 s) with the
                          |         |         |      |               | elliptical radius s, 0 beyond the bar)
    x1_speed              | 150.0   | 230.0   | >=0  | km/s          | mean orbital speed along an x1 orbit
    bar_lane_density      | 0.05    | 0.4     | >=0  | solMass / pc3 | mid-line density of the bar dust lanes
    bar_lane_offset       | 150.0   | 450.0   | >=0  | pc            | distance of the dust lanes from the bar's major
                          |         |         |      |               | axis, on its leading sides
    bar_lane_width        | 40.0    | 120.0   | >0   | pc            | Gaussian sigma of the dust lanes' cross-section
    bar_lane_speed        | 100.0   | 200.0   | >=0  | km/s          | inflow speed along the dust lanes, towards the
                          |         |         |      |               | centre
    cloud_count           | 10      | 60      | int  |               | giant molecular clouds in the window (integer)
    cloud_radius          | 5.0     | 20.0    | >0   | pc            | largest Gaussian sigma of a cloud (each draws
                          |         |         |      |               | 0.4-1 times it)
    cloud_density         | 2.0     | 20.0    | >=0  | solMass / pc3 | largest cloud peak density (each draws 0.3-1
                          |         |         |      |               | times it)
    cloud_dispersion      | 3.0     | 8.0     | >=0  | km/s          | cloud-to-cloud velocity dispersion per in-plane
                          |         |         |      |               | axis
    turbulence_sigma      | 0.5     | 1.0     | >=0  |               | standard deviation of ln(density) of the
                          |         |         |      |               | turbulence
    turbulence_slope      | 3.0     | 4.0     | >=0  |               | beta of the 3D power spectrum P(k) ~ k^-beta of
                          |         |         |      |               | ln(density)
    velocity_dispersion   | 1.0     | 4.0     | >=0  | km/s          | standard deviation of the turbulent
                          |         |         |      |               | line-of-sight velocity
    molecular_density     | 0.02    | 0.2     | >0   | solMass / pc3 | density at which gas is half molecular and
                          |         |         |      |               | half-way between the two temperatures
    temperature_dense     | 10.0    | 20.0    | >0   | K             | kinetic temperature of dense gas
    temperature_diffuse   | 40.0    | 100.0   | >0   | K             | kinetic temperature of diffuse gas
    tracer_abundance      | 1.4e-06 | 2.5e-06 | >=0  |               | 13CO per H2 in dense gas (CO/H2 = 1e-4 over
                          |         |         |      |               | 12C/13C = 40-70)
    dust_temperature      | 12.0    | 20.0    | >0   | K             | dust temperature in dense gas (diffuse dust up
                          |         |         |      |               | to 20% warmer)
""")
"""name -> (low, high, description, unit) of every :func:`make_litter` parameter, in drawing order; a
:class:`~iris_nb.sim.parameters.ParameterTable` whose ``kinds`` say what an explicit value may be."""

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
    return LITTER_PARAMETERS.draw(rng, params, "make_litter")


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
    arms, clouds = draw_structure(np.random.default_rng(streams[1]), grid, p)
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    out = {"density": np.empty(shape, np.float32), "velocity_los": np.empty(shape, np.float32)}
    rows = max(1, _CHUNK_CELLS // (grid.lon.steps * grid.lat.steps))
    for d0 in range(0, shape[0], rows):
        fill_block(out, grid, slice(d0, min(shape[0], d0 + rows)), p, arms, clouds)

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


