"""In-plane building blocks of the parametric CMZ: the x2 ring, the bar dust lanes, the clouds.

All positions are Galactocentric ``(x, y)`` in pc and velocities ``(vx, vy)`` in km/s in the
frame of :mod:`iris_nb.sim.kinematics` (Sun at ``(0, -R0)``, prograde = counter-clockwise).
Directions in the plane are given by an angle ``theta`` from the Galactic Centre -> Sun line
towards positive longitude: the unit vector is ``(sin theta, -cos theta)``, so an elongated
structure at ``theta`` = 20-30 deg has its near end at positive longitude, like the Galactic bar.

Nothing here depends on a grid; :mod:`iris_nb.sim.cmz` evaluates these on one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Ring", "DustLanes", "direction"]


def direction(theta_deg: float) -> np.ndarray:
    """Unit vector ``(sin theta, -cos theta)`` at ``theta`` deg from the GC -> Sun line."""
    t = math.radians(theta_deg)
    return np.array([math.sin(t), -math.cos(t)])


class Ring:
    """An eccentric ring of gas on harmonic-core (x2-like) orbits.

    In the ring frame (``x'`` along the major axis, ``y'`` along the minor axis) the orbits
    are the centred ellipses ``(a s cos E, b s sin E)`` run through at constant ``dE/dt =
    Omega``: velocity ``Omega (-(a/b) y', (b/a) x')``.  This conserves angular momentum
    ``L = Omega a b s^2`` along each orbit, so the gas is fastest at the minor-axis ends
    (speed ``Omega a``) and slowest at the major-axis ends (``Omega b``).  ``Omega`` is set so
    that the mean speed along the ``s = 1`` orbit is ``speed``.

    Parameters
    ----------
    semi_major, axis_ratio, angle_deg:
        Semi-major axis ``a`` (pc), ``b / a`` and the major axis direction (see module).
    speed:
        Mean orbital speed on the ring, km/s.
    twist, twist_phase_deg:
        The ring's mid-plane oscillates as ``z = twist sin(2 E + phase)`` (pc), twice per orbit.
    coverage, gap_phase_deg:
        Fraction of the orbit that holds gas: ``>= 1`` a closed ring; below 1 an open stream
        whose gap of ``(1 - coverage) 2 pi`` in eccentric anomaly is centred on ``gap_phase``,
        with edges tapered over 0.3 rad.
    lopsidedness, lopsided_phase_deg:
        Density along the orbit varies as ``1 + lopsidedness cos(E - phase)`` (m = 1 mode).
    """

    def __init__(self, semi_major, axis_ratio, angle_deg, speed, twist=0.0, twist_phase_deg=0.0,
                 coverage=1.0, gap_phase_deg=0.0, lopsidedness=0.0, lopsided_phase_deg=0.0):
        self.a = float(semi_major)
        self.b = float(semi_major) * float(axis_ratio)
        self.major = direction(angle_deg)
        self.minor = np.array([-self.major[1], self.major[0]])  # +90 deg, counter-clockwise
        anomaly = np.linspace(0.0, 2 * np.pi, 1024, endpoint=False)
        mean_speed_per_omega = np.mean(np.hypot(self.a * np.sin(anomaly), self.b * np.cos(anomaly)))
        self.omega = float(speed) / mean_speed_per_omega  # km/s per pc
        self.twist = float(twist)
        self.twist_phase = math.radians(twist_phase_deg)
        self.coverage = float(coverage)
        self.gap_phase = math.radians(gap_phase_deg)
        self.lopsidedness = float(lopsidedness)
        self.lopsided_phase = math.radians(lopsided_phase_deg)

    def modulation(self, anomaly):
        """Density factor along the orbit at eccentric anomaly ``anomaly`` (rad): the m = 1
        asymmetry times the open stream's gap (0 in the gap, 1 on the stream)."""
        out = 1.0 + self.lopsidedness * np.cos(anomaly - self.lopsided_phase)
        if self.coverage < 1.0:
            half_gap = (1.0 - self.coverage) * np.pi
            from_gap = np.abs(np.angle(np.exp(1j * (anomaly - self.gap_phase))))  # 0 .. pi
            taper = 0.3
            out = out * np.clip((from_gap - half_gap) / taper + 0.5, 0.0, 1.0)
        return out

    def to_frame(self, x, y):
        """Ring-frame coordinates ``(x', y')`` (pc) of Galactocentric ``(x, y)``."""
        return x * self.major[0] + y * self.major[1], x * self.minor[0] + y * self.minor[1]

    def from_frame(self, xp, yp):
        """Galactocentric ``(x, y)`` of ring-frame vectors ``(x', y')``."""
        return xp * self.major[0] + yp * self.minor[0], xp * self.major[1] + yp * self.minor[1]

    def point(self, anomaly, offset=0.0):
        """Galactocentric ``(x, y)`` of the ring at eccentric anomaly ``anomaly`` (rad),
        moved ``offset`` pc outwards along the radius."""
        xp, yp = self.a * np.cos(anomaly), self.b * np.sin(anomaly)
        scale = 1.0 + offset / np.hypot(xp, yp)
        return self.from_frame(xp * scale, yp * scale)

    def height(self, anomaly):
        """Height ``z`` (pc) of the ring's mid-plane at eccentric anomaly ``anomaly`` (rad)."""
        return self.twist * np.sin(2.0 * anomaly + self.twist_phase)

    def evaluate(self, x, y, width: float):
        """Ring profile, mid-plane height and velocity at in-plane points.

        ``x, y``: arrays (pc), any shape.  Returns ``(profile, z_mid, vx, vy)``: the in-plane
        Gaussian cross-section ``exp(-D^2 / 2 width^2)`` (``D`` ~ distance to the ellipse, to
        first order), the ring's mid-plane height (pc) and the orbital velocity (km/s).
        """
        xp, yp = self.to_frame(x, y)
        u, v = xp / self.a, yp / self.b
        s = np.sqrt(u * u + v * v)
        grad = np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2) / np.maximum(s, 1e-12)
        gap = (s - 1.0) / np.maximum(grad, 1e-12)
        anomaly = np.arctan2(v, u)
        profile = np.exp(-0.5 * (gap / width) ** 2) * self.modulation(anomaly)
        vxp = -self.omega * (self.a / self.b) * yp
        vyp = self.omega * (self.b / self.a) * xp
        vx, vy = self.from_frame(vxp, vyp)
        return profile, self.height(anomaly), vx, vy

    def contact_point(self, flow: np.ndarray) -> np.ndarray:
        """The ring point whose orbital velocity points along the unit vector ``flow``."""
        fp = np.array([flow @ self.major, flow @ self.minor])
        # Omega (-(a/b) y', (b/a) x') = lam * fp with lam > 0, then scaled onto s = 1
        xp, yp = fp[1] * self.a / self.b, -fp[0] * self.b / self.a
        norm = math.hypot(xp / self.a, yp / self.b)
        return np.array(self.from_frame(xp / norm, yp / norm))


class DustLanes:
    """Two bar dust lanes feeding the ring, point-symmetric about the Galactic Centre.

    Lane 1 arrives at the ring point where the ring's gas moves along ``-u`` (``u`` the bar's
    major-axis direction towards its near end), so it lies on the leading side of the bar
    and joins the ring tangentially; it starts upstream at Galactocentric radius ``start``
    (pc), shifted sideways by ``offset`` pc, and follows a quadratic Bezier curve.  Gas flows
    along the lane towards the ring at ``speed`` km/s.  Lane 2 is lane 1 rotated by 180 deg.
    """

    def __init__(self, ring: Ring, bar_angle_deg, start, offset, speed, step: float = 0.25):
        u = direction(bar_angle_deg)
        side = np.array([-u[1], u[0]])
        end = ring.contact_point(-u)
        along = float(end @ u)
        disc = along * along - float(end @ end) + float(start) ** 2
        length = -along + math.sqrt(max(disc, 0.0))
        if disc <= 0 or length <= 0:
            raise ValueError(f"lane_start = {start} pc does not reach beyond the ring; "
                             "give a lane_start larger than ring_semi_major")
        begin = end + length * u + float(offset) * side
        control = end + 0.5 * length * u
        n = max(16, int(math.ceil(1.5 * length / step)))
        tau = np.linspace(0.0, 1.0, n)[:, None]
        curve = (1 - tau) ** 2 * begin + 2 * (1 - tau) * tau * control + tau ** 2 * end
        tangent = 2 * (1 - tau) * (control - begin) + 2 * tau * (end - control)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        fade = np.minimum(1.0, tau[:, 0] / 0.15)  # lanes fade in over their first 15%
        self.bezier = (begin, control, end)  # lane 1's curve B(tau); lane 2 is -B(tau)
        self.speed = float(speed)
        self.points = np.concatenate([curve, -curve])
        self.velocity = float(speed) * np.concatenate([tangent, -tangent])
        self.fade = np.concatenate([fade, fade])
        self._tree = None  # built on the first evaluate (the torch model never needs it)

    def evaluate(self, x, y, width: float):
        """Lane profile and velocity at in-plane points ``x, y`` (pc arrays, same shape).

        Returns ``(profile, vx, vy)``: ``exp(-D^2 / 2 width^2)`` with ``D`` the distance to the
        nearest lane (zero beyond 6 widths) and the flow velocity there (km/s).
        """
        pts = np.column_stack([np.ravel(x), np.ravel(y)])
        if self._tree is None:
            self._tree = cKDTree(self.points)
        dist, idx = self._tree.query(pts, distance_upper_bound=6.0 * width)
        near = np.isfinite(dist)
        profile = np.zeros(len(pts))
        vx, vy = np.zeros(len(pts)), np.zeros(len(pts))
        profile[near] = self.fade[idx[near]] * np.exp(-0.5 * (dist[near] / width) ** 2)
        vx[near], vy[near] = self.velocity[idx[near], 0], self.velocity[idx[near], 1]
        shape = np.shape(x)
        return profile.reshape(shape), vx.reshape(shape), vy.reshape(shape)
