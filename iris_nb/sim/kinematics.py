"""Observer geometry and line-of-sight velocities shared by every gas model.

Frame (the same as :func:`iris_nb.grids.galactocentric_xy`): the Galactic Centre is at the
origin, the Sun at ``(x, y) = (0, -R0)``, ``+y`` points from the Sun to the Galactic Centre,
``+x`` towards Galactic longitude ``l = +90 deg`` and ``+z`` towards the North Galactic Pole
(``z = d sin b``).  Seen from ``+z`` with ``+y`` up, ``+x`` is on the right, so in this frame
Galactic rotation is *counter-clockwise* (prograde = positive angular momentum ``x vy - y vx``).

Adopted solar motion
--------------------
The observer is the Local Standard of Rest (LSR): v_LSR velocities, by definition, have the
Sun's peculiar motion removed, so the observer moves on a circular orbit at
:data:`SUN_CIRCULAR_VELOCITY` = 220 km/s (the IAU 1985 standard value) towards ``+x``
and has no radial or vertical motion.  The observer sits at the grid's ``observer_distance``
(R0, 8277 pc by default).

Line-of-sight velocity, radio convention, positive = receding:
``v_los = (v_gas - v_sun) . (r_gas - r_sun) / |r_gas - r_sun|``.
Gas at positive longitude on a prograde orbit near the Galactic Centre therefore recedes
(Sgr B2 at l = +0.7 deg has v_LSR ~ +60 km/s).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SUN_CIRCULAR_VELOCITY",
    "SUN_RADIAL_VELOCITY",
    "SUN_VERTICAL_VELOCITY",
    "cell_positions",
    "line_of_sight_velocity",
]

SUN_CIRCULAR_VELOCITY = 220.0
"""Circular speed of the LSR (the observer), km/s, directed towards ``+x`` (l = 90 deg)."""

SUN_RADIAL_VELOCITY = 0.0
"""Observer velocity towards the Galactic Centre (``+y``), km/s; zero for the LSR."""

SUN_VERTICAL_VELOCITY = 0.0
"""Observer velocity towards the North Galactic Pole (``+z``), km/s; zero for the LSR."""


def cell_positions(distance, lon, lat, observer_distance: float):
    """Galactocentric Cartesian positions of points given in heliocentric coordinates.

    Parameters
    ----------
    distance, lon, lat:
        Heliocentric distance (pc), Galactic longitude and latitude (deg); any shapes that
        broadcast against each other (for a grid use ``d[:, None, None]``, ``l[None, :, None]``,
        ``b[None, None, :]``).
    observer_distance:
        Sun - Galactic Centre distance R0, pc.

    Returns
    -------
    x, y, z : ndarray, pc
        ``x = d cos b sin l``, ``y = d cos b cos l - R0``, ``z = d sin b``, broadcast shape.
    """
    d = np.asarray(distance, dtype=np.float64)
    lr = np.deg2rad(np.asarray(lon, dtype=np.float64))
    br = np.deg2rad(np.asarray(lat, dtype=np.float64))
    cos_b = np.cos(br)
    return d * cos_b * np.sin(lr), d * cos_b * np.cos(lr) - observer_distance, d * np.sin(br)


def line_of_sight_velocity(x, y, z, vx, vy, vz, observer_distance: float,
                           sun_velocity: tuple[float, float, float] | None = None):
    """Heliocentric line-of-sight velocity of gas seen by an observer on the LSR.

    Parameters
    ----------
    x, y, z:
        Galactocentric position of the gas, pc (frame of this module), broadcastable arrays.
    vx, vy, vz:
        Gas velocity in the same frame, km/s (Galactic rest frame), broadcastable arrays.
    observer_distance:
        R0, pc; the observer sits at ``(0, -R0, 0)``.
    sun_velocity:
        Observer velocity ``(vx, vy, vz)`` in km/s; defaults to
        ``(SUN_CIRCULAR_VELOCITY, SUN_RADIAL_VELOCITY, SUN_VERTICAL_VELOCITY)``.

    Returns
    -------
    ndarray, km/s
        ``(v_gas - v_sun) . r_hat`` with ``r_hat`` the unit vector from the observer to the
        gas; positive = receding (radio-convention v_LSR).  Broadcast shape of the inputs.
    """
    if sun_velocity is None:
        sun_velocity = (SUN_CIRCULAR_VELOCITY, SUN_RADIAL_VELOCITY, SUN_VERTICAL_VELOCITY)
    su, sv, sw = (float(c) for c in sun_velocity)
    rx, ry, rz = x, y + observer_distance, z
    norm = np.sqrt(rx * rx + ry * ry + rz * rz)
    if np.any(norm == 0):
        raise ValueError("gas at the observer's position has no line of sight; move it away from (0, -R0, 0)")
    return ((vx - su) * rx + (vy - sv) * ry + (vz - sw) * rz) / norm
