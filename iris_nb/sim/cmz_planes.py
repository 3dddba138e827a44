"""The in-plane structure of the parametric CMZ as batched torch maps (for :class:`CMZModel`).

The ring (or open stream), the two dust lanes and the diffuse disc of
:mod:`iris_nb.sim.cmz_geometry`, evaluated for a sub-batch of samples at once on the
``(distance, lon)`` plane: densities relative to the ring's and line-of-sight velocities in km/s.
``q(key)`` gives a sample parameter as a ``(b, 1, 1)`` tensor (the columns of
:func:`~iris_nb.sim.cmz.draw_cmz_parameters`).
"""

from __future__ import annotations

import math

import torch

from .kinematics import SUN_CIRCULAR_VELOCITY

__all__ = ["plane_maps", "lane_distance", "NEWTON_STEPS"]

NEWTON_STEPS = 3
"""Newton steps on the distance to a lane's Bezier curve (worst error 0.05 pc within 6 widths)."""


def plane_maps(q, x, y, ux, uy) -> dict:
    """In-plane structure densities and LOS velocities, ``(b, distance, lon)`` each.

    ``q(key)`` is the sub-batch's column ``key`` as ``(b, 1, 1)``; ``x, y`` the in-plane
    positions (pc) and ``ux, uy`` the in-plane line-of-sight unit vector, ``(distance, lon)``.
    """
    # the ring (cmz_geometry.Ring.evaluate)
    a, b = q("ring_a"), q("ring_b")
    m0, m1, n0, n1 = q("major_x"), q("major_y"), q("minor_x"), q("minor_y")
    xp, yp = x * m0 + y * m1, x * n0 + y * n1
    u, v = xp / a, yp / b
    s_ = torch.sqrt(u * u + v * v)
    grad = torch.sqrt((u / a) ** 2 + (v / b) ** 2) / s_.clamp_min(1e-12)
    gap = (s_ - 1.0) / grad.clamp_min(1e-12)
    anomaly = torch.atan2(v, u)
    modulation = 1.0 + q("lopsidedness") * torch.cos(anomaly - q("lopsided_phase"))
    coverage = q("coverage")
    wrapped = anomaly - q("gap_phase")
    from_gap = torch.atan2(torch.sin(wrapped), torch.cos(wrapped)).abs()
    taper = ((from_gap - (1.0 - coverage) * math.pi) / 0.3 + 0.5).clamp(0.0, 1.0)
    modulation = modulation * torch.where(coverage < 1.0, taper, torch.ones_like(taper))
    ring = q("ring_density") * torch.exp(-0.5 * (gap / q("ring_width")) ** 2) * modulation
    ring_z = q("twist") * torch.sin(2.0 * anomaly + q("twist_phase"))
    omega = q("omega")
    vxp, vyp = -omega * (a / b) * yp, omega * (b / a) * xp
    rvx, rvy = vxp * m0 + vyp * n0, vxp * m1 + vyp * n1

    # the two lanes: lane 2 is lane 1 turned by 180 deg, so its distance at p is lane 1's at -p
    width = q("lane_width")
    one, two = lane_distance(q, torch.stack([x, -x]).unsqueeze(1), torch.stack([y, -y]).unsqueeze(1))
    first = one[0] <= two[0]
    dist2 = torch.where(first, one[0], two[0])
    near = dist2 < (6.0 * width) ** 2
    fade = torch.where(first, one[1], two[1])
    lane = torch.where(near, q("lane_density") * q("ring_density") * fade * torch.exp(-0.5 * dist2 / width ** 2),
                       0.0)
    lvx = torch.where(near, torch.where(first, one[2], -two[2]), 0.0)
    lvy = torch.where(near, torch.where(first, one[3], -two[3]), 0.0)

    radius = torch.sqrt(x * x + y * y)
    speed = q("ring_speed") * torch.clamp(radius / q("ring_semi_major"), max=1.0)
    inv_r = 1.0 / radius.clamp_min(1e-9)
    diffuse = q("diffuse_density") * torch.exp(-radius / q("diffuse_scale_length"))

    def vlos(vx, vy):
        return (vx - SUN_CIRCULAR_VELOCITY) * ux + vy * uy

    return {"ring": ring, "ring_z": ring_z, "lane": lane, "diffuse": diffuse,
            "v_ring": vlos(rvx, rvy), "v_lane": vlos(lvx, lvy),
            "v_diffuse": vlos(-speed * y * inv_r, speed * x * inv_r)}


def lane_distance(q, x, y):
    """Squared distance to lane 1's Bezier curve, fade and flow velocity at in-plane points.

    ``B(t) = P0 + 2 t A + t^2 C``, ``t`` in [0, 1] from the lane's start to the ring: the
    projection on the chord, then :data:`NEWTON_STEPS` Newton steps on ``(B - p) . B' = 0``.  ``x, y``
    are ``(n, 1, distance, lon)`` (lane 2 is lane 1 at ``-p``: pass both stacked); returns the
    tuples ``(dist2, fade, vx, vy)`` of each of the ``n``, ``(b, distance, lon)`` tensors; the fade
    is ``min(1, t / 0.15)`` and the velocity ``speed B'/|B'|`` (as
    :class:`~iris_nb.sim.cmz_geometry.DustLanes`).
    """
    p0x, p0y, ax, ay, cx, cy = (q(k) for k in ("p0x", "p0y", "ax", "ay", "cx", "cy"))
    rx, ry = p0x - x, p0y - y  # P0 - p, (n, b, D, L)
    # start from the projection on the chord P0 -> P2 = P0 + 2 A + C: the control point sits near
    # the chord's middle, so t is close to uniform along the lane
    chord_x, chord_y = 2 * ax + cx, 2 * ay + cy
    t = (rx * chord_x + ry * chord_y).mul_(-1.0 / (chord_x * chord_x + chord_y * chord_y)).clamp_(0.0, 1.0)
    for _ in range(NEWTON_STEPS):
        ex, ey = rx + (2 * ax + t * cx) * t, ry + (2 * ay + t * cy) * t  # B - p
        dx, dy = ax + t * cx, ay + t * cy  # B' / 2
        slope = ex * dx + ey * dy
        curvature = (2 * (dx * dx + dy * dy) + ex * cx + ey * cy).clamp_min_(1e-9)
        t = t.sub_(slope.div_(curvature)).clamp_(0.0, 1.0)
    ex, ey = rx + (2 * ax + t * cx) * t, ry + (2 * ay + t * cy) * t
    dx, dy = ax + t * cx, ay + t * cy
    norm = q("lane_speed") / torch.sqrt(dx * dx + dy * dy).clamp_min(1e-12)
    dist2, fade = ex * ex + ey * ey, (t / 0.15).clamp_(max=1.0)
    vx, vy = dx * norm, dy * norm
    return [(dist2[i], fade[i], vx[i], vy[i]) for i in range(x.shape[0])]
