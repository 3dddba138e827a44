"""Published geometry of the Central Molecular Zone: two orbit models and a few landmark clouds.

Each model is returned as an :class:`xarray.Dataset` sampled along the orbit (dim ``point``)
with the package's conventions (DESIGN.md section 3): Galactocentric ``x, y, z`` in pc (the
Galactic Centre at the origin, the Sun at ``(0, -R0, 0)``, ``+x`` towards l = +90 deg, ``+z``
towards the North Galactic Pole; :func:`iris_nb.grids.galactocentric_xy` for ``z = 0``),
Galactic ``lon``/``lat`` in deg (lon wrapped to (-180, 180]), heliocentric ``distance`` in pc
and ``velocity`` (v_LSR, radio convention, positive = receding, km/s).  Velocities are
projected with :func:`iris_nb.sim.kinematics.line_of_sight_velocity` (an observer on the LSR
moving at 220 km/s towards l = 90 deg), then the model's constant line-of-sight offset is added.

The models keep their shape in pc around the Galactic Centre; ``observer_distance`` (R0) only
moves the observer, so the drawn angles scale as 1/R0 (0.3 % between 8300 and 8277 pc).

``"molinari2011"`` -- Molinari et al. (2011, ApJ 735, L33), the "twisted ring"
    A closed ellipse moving at constant speed.  From the paper's abstract: semi-axes a = 100 pc
    and b = 60 pc, the major axis inclined by about 40 deg to the plane of the sky, Sgr A* off
    the ring's centre.  The rest we fitted (by least squares over all 1001 points) to the
    tabulation of the model that the 3-D CMZ collaboration publish (github.com/
    CentralMolecularZone/3D_CMZ, ``Paper_IV/LBV_plots/molinari_lbvlos.txt``, l and v as they
    draw it: longitude mirrored, velocity shifted by -14 km/s): a vertical oscillation of
    15.0 pc with twice the orbital frequency, ``z = -15 cos(2 phase)`` pc about the centre
    (lowest at the ends of the major axis); an orbital speed of 80.0 km/s along the ring; a
    systemic line-of-sight velocity of -14 km/s (assumed to be the model's own: it is the
    shift the 3-D CMZ papers apply); the positive-longitude end of the major axis is the far
    one (angle fitted 40.0 deg); the centre at x = +11.34 pc, z = -10.39 pc from the origin,
    i.e. (l, b) = (+0.076, -0.070) deg, 19 pc from Sgr A* on the sky; the tabulation's scale
    is that of R0 = 8.5 kpc.  With these round values the ring passes within 0.002 deg and
    0.3 km/s of every tabulated point; projecting with the LSR motion (this package's
    convention, which the tabulation leaves out) moves its velocities by at most 2.5 km/s.
``"kdl2015"`` -- Kruijssen, Dale & Longmore (2015, MNRAS 447, 1059), the open orbit
    Integrated here (not tabulated) in an axisymmetric potential flattened as KDL15's: the
    enclosed mass depends on ``m = sqrt(x^2 + y^2 + z^2 / q^2)`` with q = 0.63, the potential
    is centred on Sgr A* (KDL15: Sgr A* is the orbit's focus), and ``M(m) = 6.359e8 Msun
    (m / 100 pc)^2.2201``, a power law within 5 % of the Launhardt et al. (2002, A&A 384, 112)
    profile rescaled by KDL15 to R0 = 8.3 kpc (1.71e8, 5.96e8 and 8.72e8 Msun at 56, 98 and
    117 pc, read from the tabulation in AMUSE's ``galactic_potentials`` module).  The starting
    state and the power law were fitted (by us) to KDL15's orbit as tabulated by the 3-D CMZ
    collaboration (``Paper_IV/LBV_plots/kdl_lbv.txt``: 51 l, b, v points, which the fit finds
    0.0984 Myr apart), with pericentre and apocentre pulled towards KDL15's 59 and 121 pc.
    Reached: pericentre 59.1 pc, apocentre 120.1 pc, radial period 2.00 Myr, azimuthal period
    3.63 Myr (KDL15: 3.69 Myr), speed 102-208 km/s (KDL15: 100-200), |z| < 13.9 pc; the
    tabulated track is matched to 0.023 deg in l, 0.011 deg in b and 2.7 km/s (rms 1.5 km/s)
    after a constant line-of-sight offset of -13.87 km/s (fitted: the published velocities sit
    that far below an LSR projection of the orbit, near the -11 km/s the Sun's own motion
    towards the Galactic Centre would give if KDL15 projected heliocentrically -- a guess we
    cannot check).  The drawn span is that of the tabulated track, 4.92 Myr, time 0 at its
    first point (l = -0.68 deg, v = -130 km/s).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import astropy.units as u
from astropy import constants
import numpy as np
from scipy.integrate import solve_ivp
import xarray as xr

from ._common import observer_distance_pc

__all__ = ["ORBITS", "published_orbits", "orbit", "landmarks"]

R0_DEFAULT = 8277.0  # pc, DESIGN.md section 4
SGR_A_STAR = (-0.0558, -0.0462)  # (l, b) deg, Reid & Brunthaler (2004, ApJ 616, 872): l = 359.9442
_G = constants.G.to_value(u.pc * u.km**2 / u.s**2 / u.Msun)  # pc (km/s)^2 / Msun
_PC_PER_MYR = (1.0 * u.km / u.s).to_value(u.pc / u.Myr)  # 1 km/s in pc/Myr


@dataclasses.dataclass(frozen=True)
class _Ring:
    """Molinari et al. (2011) ellipse: lengths pc, angles deg, speeds km/s."""

    semi_major: float = 100.0
    semi_minor: float = 60.0
    inclination: float = 40.0  # major axis to the plane of the sky; +l end far
    z_amplitude: float = 15.0
    orbital_speed: float = 80.0
    centre: tuple[float, float, float] = (11.34, 0.0, -10.39)
    velocity_offset: float = -14.0
    published_r0: float = 8500.0


@dataclasses.dataclass(frozen=True)
class _OpenOrbit:
    """KDL15 orbit reproduced by integration: pc, km/s, Myr, Msun."""

    flattening: float = 0.63
    mass_100pc: float = 6.3587e8
    mass_slope: float = 2.22009
    # state at t = 0 relative to Sgr A*, axes of the package frame: x, y, z (pc), vx, vy, vz (km/s)
    start: tuple[float, ...] = (-90.2580, -14.2924, -5.0218, 109.4694, -117.0056, 32.8764)
    duration: float = 50 * 0.0983854  # Myr, the tabulated track
    velocity_offset: float = -13.87
    published_r0: float = 8300.0


_MOLINARI = _Ring()
_KDL = _OpenOrbit()

ORBITS = {
    "molinari2011": "Molinari et al. (2011, ApJ 735, L33): closed, twisted 100 x 60 pc ring",
    "kdl2015": "Kruijssen, Dale & Longmore (2015, MNRAS 447, 1059): open orbit in the CMZ potential",
}
"""Names accepted by :func:`orbit`, with the paper each model comes from."""

_ALIASES = {"molinari": "molinari2011", "molinari11": "molinari2011", "kdl": "kdl2015",
            "kdl15": "kdl2015", "kruijssen": "kdl2015", "kruijssen2015": "kdl2015",
            "kruijssendalelongmore2015": "kdl2015"}


def _canonical(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"an orbit name must be a string such as 'kdl2015', got {type(name).__name__}")
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    key = _ALIASES.get(key, key)
    if key not in ORBITS:
        raise ValueError(f"unknown orbit {name!r}; choose one of {sorted(ORBITS)} "
                         "(Molinari et al. 2011 ring, Kruijssen, Dale & Longmore 2015 orbit)")
    return key


def _check_samples(samples) -> int:
    if isinstance(samples, bool) or int(samples) != samples or samples < 3:
        raise ValueError(f"samples must be an integer >= 3, got {samples!r}")
    return int(samples)


# --------------------------------------------------------------------------- geometry
def _ring_state(samples: int):
    """Positions (pc) and velocities (km/s), each shape (3, samples), and the phase (deg)."""
    ring = _MOLINARI
    phase = np.linspace(0.0, 360.0, samples)  # closed: last point repeats the first
    phi = np.deg2rad(phase)
    psi = np.deg2rad(ring.inclination)
    major = np.array([np.cos(psi), np.sin(psi), 0.0])[:, None]
    minor = np.array([-np.sin(psi), np.cos(psi), 0.0])[:, None]
    up = np.array([0.0, 0.0, 1.0])[:, None]
    a, b, h = ring.semi_major, ring.semi_minor, ring.z_amplitude
    position = (np.asarray(ring.centre)[:, None] + a * np.cos(phi) * major + b * np.sin(phi) * minor
                - h * np.cos(2 * phi) * up)
    tangent = -a * np.sin(phi) * major + b * np.cos(phi) * minor + 2 * h * np.sin(2 * phi) * up
    velocity = ring.orbital_speed * tangent / np.linalg.norm(tangent, axis=0)  # prograde: phase grows
    return position, velocity, phase


def _enclosed_acceleration(position):
    """Acceleration ((km/s)^2 / pc), shape (3,), in the flattened power-law potential."""
    orbit_ = _KDL
    x, y, z = position
    q2 = orbit_.flattening ** 2
    m = np.sqrt(x * x + y * y + z * z / q2)
    g = _G * orbit_.mass_100pc * (m / 100.0) ** orbit_.mass_slope / m**3
    return -g * np.array([x, y, z / q2])


def _open_orbit_state(samples: int, observer_distance: float):
    """Positions (pc, package frame), velocities (km/s), each (3, samples), and times (Myr)."""
    orbit_ = _KDL

    def rhs(_, state):
        return np.concatenate([state[3:] * _PC_PER_MYR, _enclosed_acceleration(state[:3]) * _PC_PER_MYR])

    times = np.linspace(0.0, orbit_.duration, samples)
    solution = solve_ivp(rhs, (0.0, orbit_.duration), np.asarray(orbit_.start), t_eval=times,
                         method="DOP853", rtol=1e-10, atol=1e-9)
    if not solution.success:  # pragma: no cover - the fixed, smooth problem always integrates
        raise RuntimeError(f"integrating the KDL15 orbit failed: {solution.message}")
    return solution.y[:3] + _sgr_a_star(observer_distance)[:, None], solution.y[3:], times


def _sgr_a_star(observer_distance: float) -> np.ndarray:
    """Sgr A* in the package frame, pc, shape (3,), at heliocentric distance R0."""
    l_rad, b_rad = np.deg2rad(SGR_A_STAR)
    r0 = observer_distance
    return np.array([r0 * np.cos(b_rad) * np.sin(l_rad), r0 * np.cos(b_rad) * np.cos(l_rad) - r0,
                     r0 * np.sin(b_rad)])


def _observed(position, velocity, observer_distance: float, velocity_offset: float):
    """lon, lat (deg), heliocentric distance (pc) and v_LSR (km/s) of Galactocentric states."""
    from ..sim.kinematics import line_of_sight_velocity  # the package's one projection

    x, y, z = position
    along = y + observer_distance
    distance = np.sqrt(x * x + along * along + z * z)
    lon = np.degrees(np.arctan2(x, along))
    lat = np.degrees(np.arcsin(z / distance))
    v_lsr = line_of_sight_velocity(x, y, z, *velocity, observer_distance) + velocity_offset
    return lon, lat, distance, v_lsr


def _dataset(name, position, velocity, coord, observer_distance, velocity_offset, notes):
    lon, lat, distance, v_lsr = _observed(position, velocity, observer_distance, velocity_offset)
    pc, deg = {"units": "pc"}, {"units": "deg"}
    coord_name, coord_values, coord_attrs = coord
    data = {
        "x": ("point", position[0], {**pc, "long_name": "Galactocentric x (towards l = 90 deg)"}),
        "y": ("point", position[1], {**pc, "long_name": "Galactocentric y (Sun to Galactic Centre)"}),
        "z": ("point", position[2], {**pc, "long_name": "height above the Galactic plane"}),
        "lon": ("point", lon, {**deg, "long_name": "Galactic longitude"}),
        "lat": ("point", lat, {**deg, "long_name": "Galactic latitude"}),
        "distance": ("point", distance, {**pc, "long_name": "heliocentric distance"}),
        "velocity": ("point", v_lsr, {"units": "km/s", "long_name": "v_LSR (radio, positive = receding)"}),
    }
    return xr.Dataset(data, coords={coord_name: ("point", coord_values, coord_attrs)},
                      attrs={"name": name, "reference": ORBITS[name], "observer_distance": observer_distance,
                             "closed": int(name == "molinari2011"), "velocity_offset": velocity_offset,
                             "notes": notes})


@functools.lru_cache(maxsize=16)
def _orbit_cached(name: str, observer_distance: float, samples: int) -> xr.Dataset:
    if name == "molinari2011":
        position, velocity, phase = _ring_state(samples)
        coord = ("phase", phase, {"units": "deg", "long_name": "ellipse angle from the far (+l) end"})
        notes = ("a = 100 pc, b = 60 pc, major axis 40 deg from the sky plane (+l end far), "
                 "z = -15 cos(2 phase) pc, 80 km/s, centre (x, z) = (11.34, -10.39) pc, systemic -14 km/s")
        offset = _MOLINARI.velocity_offset
    else:
        position, velocity, times = _open_orbit_state(samples, observer_distance)
        coord = ("time", times, {"units": "Myr", "long_name": "time since the first tabulated point"})
        notes = ("integrated in M(m) = 6.359e8 Msun (m/100 pc)^2.22, m^2 = x^2 + y^2 + (z/0.63)^2, "
                 "centred on Sgr A*; pericentre 59.1 pc, apocentre 120.1 pc; "
                 "line-of-sight offset -13.87 km/s (fitted)")
        offset = _KDL.velocity_offset
    return _dataset(name, position, velocity, coord, observer_distance, offset, notes)


def orbit(name: str, observer_distance: float = R0_DEFAULT, samples: int | None = None) -> xr.Dataset:
    """One published CMZ orbit model sampled along the orbit.

    Parameters
    ----------
    name:
        ``"molinari2011"`` or ``"kdl2015"`` (case and punctuation ignored; ``"KDL"``,
        ``"Molinari"`` work); see :data:`ORBITS` and the module docstring for the parameters.
    observer_distance:
        Sun - Galactic Centre distance R0 in pc (default 8277, DESIGN.md); the orbit keeps its
        shape in pc, only the observer moves.
    samples:
        Points along the orbit (default 721 for the closed ring, every 0.5 deg of phase with
        the first point repeated at the end; 985 for the open orbit, every 5 kyr).

    Returns
    -------
    xarray.Dataset on dim ``point`` with ``x, y, z`` (pc, Galactocentric, package frame),
    ``lon, lat`` (deg), ``distance`` (pc, heliocentric) and ``velocity`` (km/s, v_LSR radio);
    coordinate ``phase`` (deg, ring) or ``time`` (Myr, open orbit); ``attrs`` name the paper
    and list the parameters.
    """
    key = _canonical(name)
    r0 = observer_distance_pc(observer_distance)
    count = _check_samples(samples if samples is not None else (721 if key == "molinari2011" else 985))
    return _orbit_cached(key, r0, count).copy(deep=True)  # callers may edit their copy


def published_orbits(observer_distance: float = R0_DEFAULT, samples: int | None = None) -> dict[str, xr.Dataset]:
    """Every model of :data:`ORBITS` as ``{name: orbit(name, observer_distance, samples)}``."""
    return {name: orbit(name, observer_distance, samples) for name in ORBITS}


# --------------------------------------------------------------------------- landmarks
_LANDMARKS = (
    # name, lon (deg), lat (deg), v_LSR (km/s), source of the numbers
    ("Sgr A*", -0.0558, -0.0462, 0.0, "Reid & Brunthaler (2004, ApJ 616, 872); at rest by assumption"),
    ("Sgr B2", 0.667, -0.036, 62.0, "Sgr B2(M); v_LSR +60 to +65 (e.g. Henshaw et al. 2016, MNRAS 457, 2675)"),
    ("Sgr C", -0.57, -0.09, -55.0, "G359.43-0.09; v_LSR about -55 (e.g. Henshaw et al. 2016)"),
    ("20 km/s cloud", -0.13, -0.08, 20.0, "M-0.13-0.08 (Gusten, Walmsley & Pauls 1981, A&A 103, 197)"),
    ("50 km/s cloud", -0.02, -0.07, 47.0, "M-0.02-0.07 (Gusten, Walmsley & Pauls 1981); v_LSR about +47"),
    ("Brick", 0.253, 0.016, 37.0, "G0.253+0.016 (Longmore et al. 2012, ApJ 746, 117); v_LSR about +37"),
)


def landmarks() -> xr.Dataset:
    """A few named CMZ clouds, dim ``landmark``: ``lon``, ``lat`` (deg), ``velocity`` (km/s, v_LSR).

    Positions to about 0.01 deg and velocities to about 5 km/s (clouds span 10-20 km/s):
    markers for orientation, not measurements.  ``source`` names where the numbers come from.
    Their distances are not known well enough to place them on a top-down map.
    """
    names, lon, lat, velocity, source = zip(*_LANDMARKS)
    return xr.Dataset(
        {"lon": ("landmark", np.array(lon), {"units": "deg"}),
         "lat": ("landmark", np.array(lat), {"units": "deg"}),
         "velocity": ("landmark", np.array(velocity), {"units": "km/s", "long_name": "v_LSR (radio)"}),
         "source": ("landmark", np.array(source, dtype=object))},
        coords={"landmark": ("landmark", np.array(names, dtype=object))},
    )
