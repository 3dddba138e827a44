"""The structures of the litter gas model (:func:`iris_nb.sim.litter.make_litter`): where the
Galactic disc's gas is and how it moves, outside the CMZ's distance window.

* :func:`smooth_structures` -- the molecular ring with the bar's hole, spiral-arm crossings and
  the expanding 3-kpc arm, each a density in Galactocentric radius with a radial speed;
* :func:`bar_gas` -- the bar region: gas on x1 orbits and the two bar dust lanes;
* :func:`draw_structure` -- the random arms and giant molecular clouds of one field;
* :func:`fill_block` -- density and line-of-sight velocity of a block of distance rows, each
  cell taking the velocity of the structure that dominates its density.

``p`` is a dict of :data:`iris_nb.sim.litter.LITTER_PARAMETERS` (units as there); positions
are Galactocentric x, y, z in pc (:func:`iris_nb.sim.kinematics.cell_positions`).
"""

from __future__ import annotations

import math

import numpy as np

from ..grids import Axis, Grid
from .kinematics import cell_positions, line_of_sight_velocity

__all__ = ["rotation_curve", "smooth_structures", "bar_gas", "draw_structure", "fill_block"]


def rotation_curve(radius, p):
    """Flat rotation curve, solid body inside 500 pc (km/s)."""
    return p["rotation_speed"] * np.minimum(1.0, radius / 500.0)


def smooth_structures(radius, p, arms):
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


def bar_gas(x, y, p):
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


def draw_structure(rng, grid: Grid, p: dict):
    """Arms ``[(radius pc, radial streaming km/s)]`` and clouds ``[(x, y, z, sigma, peak, vx, vy, d)]``
    (pc, pc, pc, pc, solMass / pc3, km/s, km/s, heliocentric pc)."""
    r0 = grid.observer_distance
    d = grid.distance.centers()
    radius = np.abs(d - r0)
    lo, hi = max(p["hole_radius"], radius.min()), radius.max()
    arms = [(float(rng.uniform(lo, max(lo, hi))), float(rng.uniform(-1, 1) * p["arm_streaming"]))
            for _ in range(p["arm_count"])]
    weight = sum(rho for rho, _ in smooth_structures(radius, p, arms)) * d * d
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
    speed = rotation_curve(rc, p)
    vx, vy = -speed * y / rc + kick[0], speed * x / rc + kick[1]
    return arms, list(zip(x, y, zc, sigma, peak, vx, vy, dist))


def _index_range(axis: Axis, lo: float, hi: float) -> slice:
    i0 = int(np.clip(math.floor((lo - axis.start) / axis.step), 0, axis.steps))
    i1 = int(np.clip(math.ceil((hi - axis.start) / axis.step), 0, axis.steps))
    return slice(i0, i1)


def fill_block(out, grid, rows, p, arms, clouds):
    """Fill ``out["density"]`` (solMass / pc3, before turbulence and density_scale) and
    ``out["velocity_los"]`` (km/s, before turbulence) of the distance ``rows``, in place."""
    d, lon, lat = grid.distance.centers()[rows], grid.lon.centers(), grid.lat.centers()
    x, y, z = (c.astype(np.float32) for c in cell_positions(d[:, None, None], lon[None, :, None],
                                                               lat[None, None, :], grid.observer_distance))
    radius = np.hypot(x, y)
    vertical = np.exp(-0.5 * (z / p["disc_height"]) ** 2)
    total, best = np.zeros_like(radius), np.zeros_like(radius)
    v_radial, v_phi = np.zeros_like(radius), rotation_curve(radius, p)
    for rho, speed in smooth_structures(radius, p, arms):
        rho = rho * vertical
        total += rho
        wins = rho > best
        best = np.where(wins, rho, best)
        v_radial = np.where(wins, speed, v_radial)
    vx = (v_radial * x - v_phi * y) / radius
    vy = (v_radial * y + v_phi * x) / radius
    for rho, bvx, bvy in bar_gas(x, y, p):
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
