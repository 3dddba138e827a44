"""``from_arepo``: a physical field from an AREPO hydrodynamics snapshot (HDF5).

Reads the gas (``PartType0``) of a snapshot written by AREPO with the SGChem chemistry
network (abundances per H nucleus), puts the galaxy's centre at the Galactic Centre and
samples it on a grid by nearest neighbour (the Voronoi cell containing a grid cell's centre
is the one of its nearest mesh-generating point).

Snapshot layout read (names as AREPO writes them):

- ``Header`` attrs ``BoxSize`` (code length), ``UnitLength_in_cm``, ``UnitMass_in_g``,
  ``UnitVelocity_in_cm_per_s``; physical (non-cosmological) units are assumed, so
  ``HubbleParam`` and ``Time`` are ignored.
- ``PartType0`` datasets ``Coordinates`` (N, 3), ``Velocities`` (N, 3), ``Density`` (N,),
  ``InternalEnergy`` (N,) (specific, code velocity squared), ``ChemicalAbundances`` (N, >= 3)
  with columns 0, 1, 2 = H2, H+, CO per H nucleus, and optionally ``DustTemperature`` (N,) K.

Conversions:

- density: code mass / code length^3 -> solMass / pc3; velocities: code -> km/s.
- temperature ``T = (gamma - 1) u mu m_p / k_B`` with ``gamma = 5/3`` and the mean mass per
  particle ``mu = (1 + 4 x_He) / (1 + x_He - x_H2 + x_H+)`` (particles per H nucleus: atomic
  H ``1 - 2 x_H2 - x_H+``, H2, H+, one electron per H+, helium ``x_He = 0.1``); floored at
  the CMB temperature.
- ``x_h2`` = column 0 (clipped to [0, 0.5]); ``x_tracer`` = 13CO per H2 = ``x_CO / x_H2 / 25``
  (12C/13C = 25 in the Galactic Centre; 0 where there is no H2).
"""

from __future__ import annotations

import math
from pathlib import Path

import astropy.constants as const
import astropy.units as u
import numpy as np
from scipy.spatial import cKDTree

from ..grids import Grid
from .fields import FIELD_DIMS, field_from_arrays
from .kinematics import cell_positions, line_of_sight_velocity

__all__ = ["HELIUM_ABUNDANCE", "ADIABATIC_INDEX", "CARBON_ISOTOPE_RATIO", "from_arepo", "read_arepo_gas"]

HELIUM_ABUNDANCE = 0.1
"""Helium nuclei per H nucleus assumed by SGChem (consistent with X ~ 0.71)."""

ADIABATIC_INDEX = 5.0 / 3.0
"""gamma used to turn the specific internal energy into a temperature."""

CARBON_ISOTOPE_RATIO = 25.0
"""12CO / 13CO in the Galactic Centre."""

TEMPERATURE_FLOOR = 2.725
"""Lowest temperature given to a cell (K): the CMB."""

_HEADER_ATTRS = ("BoxSize", "UnitLength_in_cm", "UnitMass_in_g", "UnitVelocity_in_cm_per_s")
_REQUIRED = ("Coordinates", "Velocities", "Density", "InternalEnergy", "ChemicalAbundances")
_QUERY_CHUNK = 1 << 20


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading AREPO snapshots needs h5py: pip install h5py") from None
    return h5py


def read_arepo_gas(path) -> dict:
    """Read the gas of an AREPO snapshot in physical units.

    Returns a dict of numpy arrays: ``position`` (N, 3) pc and ``velocity`` (N, 3) km/s in
    the snapshot frame (origin at the box corner), ``density`` (N,) solMass / pc3,
    ``temperature`` (N,) K, ``x_h2`` (N,), ``x_tracer`` (N,) 13CO per H2, optionally
    ``temperature_dust`` (N,) K, ``box_size`` (float, pc) and ``length_unit`` (pc per code length).
    Missing datasets or header attributes raise :class:`ValueError` naming them and the file.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no AREPO snapshot at {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not an HDF5 file ({err}); from_arepo reads AREPO HDF5 snapshots") from None
    with handle as snap:
        if "Header" not in snap:
            raise ValueError(f"{path} has no 'Header' group; is it an AREPO snapshot?")
        missing = [name for name in _HEADER_ATTRS if name not in snap["Header"].attrs]
        if missing:
            raise ValueError(f"{path}: Header is missing the attributes {missing}; from_arepo needs "
                             f"{list(_HEADER_ATTRS)} (physical units of the snapshot)")
        header = {name: float(np.ravel(snap["Header"].attrs[name])[0]) for name in _HEADER_ATTRS}
        if "PartType0" not in snap:
            raise ValueError(f"{path} has no gas: the group 'PartType0' is missing")
        gas = snap["PartType0"]
        missing = [name for name in _REQUIRED if name not in gas]
        if missing:
            raise ValueError(f"{path}: PartType0 is missing the datasets {missing}; from_arepo needs "
                             f"{list(_REQUIRED)} (and optionally DustTemperature)")
        raw = {name: np.asarray(gas[name][...], dtype=np.float64) for name in _REQUIRED}
        dust = np.asarray(gas["DustTemperature"][...], dtype=np.float64) if "DustTemperature" in gas else None

    n = raw["Density"].shape[0]
    for name, shape in (("Coordinates", (n, 3)), ("Velocities", (n, 3)), ("InternalEnergy", (n,))):
        if raw[name].shape != shape:
            raise ValueError(f"{path}: PartType0/{name} has shape {raw[name].shape}, expected {shape}")
    chem = raw["ChemicalAbundances"]
    if chem.ndim != 2 or chem.shape[0] != n or chem.shape[1] < 3:
        raise ValueError(f"{path}: PartType0/ChemicalAbundances has shape {chem.shape}, expected ({n}, >=3) "
                         "with columns H2, H+, CO per H nucleus")

    length_pc = (header["UnitLength_in_cm"] * u.cm).to_value(u.pc)
    density_unit = header["UnitMass_in_g"] * u.g / (header["UnitLength_in_cm"] * u.cm) ** 3
    x_h2 = np.clip(chem[:, 0], 0.0, 0.5)
    x_hplus = np.clip(chem[:, 1], 0.0, 1.0)
    mu = (1.0 + 4.0 * HELIUM_ABUNDANCE) / (1.0 + HELIUM_ABUNDANCE - x_h2 + x_hplus)
    energy_si = raw["InternalEnergy"] * (header["UnitVelocity_in_cm_per_s"] * 1e-2) ** 2  # J / kg
    temperature = (ADIABATIC_INDEX - 1.0) * energy_si * mu * const.m_p.value / const.k_B.value
    with np.errstate(divide="ignore", invalid="ignore"):
        tracer = np.where(x_h2 > 1e-12, np.clip(chem[:, 2], 0.0, None) / x_h2, 0.0) / CARBON_ISOTOPE_RATIO
    out = {
        "position": raw["Coordinates"] * length_pc,
        "velocity": raw["Velocities"] * header["UnitVelocity_in_cm_per_s"] * 1e-5,
        "density": raw["Density"] * density_unit.to_value(u.solMass / u.pc**3),
        "temperature": np.maximum(temperature, TEMPERATURE_FLOOR),
        "x_h2": x_h2,
        "x_tracer": tracer,
        "box_size": header["BoxSize"] * length_pc,
        "length_unit": length_pc,
    }
    if dust is not None:
        out["temperature_dust"] = np.maximum(dust, TEMPERATURE_FLOOR)
    for name in ("position", "velocity", "density", "temperature"):
        if not np.isfinite(out[name]).all():
            raise ValueError(f"{path}: the gas {name} has NaN or infinite values")
    if (out["density"] < 0).any():
        raise ValueError(f"{path}: PartType0/Density has negative values")
    return out


def _orient(position, velocity, observer_angle, prograde):
    """Flip to Milky-Way rotation if asked, then rotate by ``observer_angle`` about z."""
    if prograde:
        spin = np.sum(position[:, 0] * velocity[:, 1] - position[:, 1] * velocity[:, 0])
        if spin < 0:  # seen from the other pole (a rotation by 180 deg about x)
            position = position * np.array([1.0, -1.0, -1.0])
            velocity = velocity * np.array([1.0, -1.0, -1.0])
    angle = math.radians(observer_angle)
    rot = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                    [math.sin(angle), math.cos(angle), 0.0],
                    [0.0, 0.0, 1.0]])
    return position @ rot.T, velocity @ rot.T


def _offset_pc(offset) -> np.ndarray:
    """``offset`` as three finite floats (pc), or ValueError/TypeError naming it."""
    if offset is None:
        return np.zeros(3)
    if isinstance(offset, (str, bytes)):
        raise TypeError(f"offset must be three numbers (x, y, z) in pc, got the text {offset!r}")
    try:
        shift = np.asarray(offset, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"offset must be three numbers (x, y, z) in pc, got {offset!r}") from None
    if shift.shape != (3,) or not np.isfinite(shift).all():
        raise ValueError(f"offset must be three finite numbers (x, y, z) in pc, got {offset!r}")
    return shift


def from_arepo(path, grid: Grid, observer_angle: float = 0.0, center=None, prograde: bool = True,
               max_distance: float | None = None, workers: int = -1, offset=None):
    """Sample an AREPO snapshot's gas on ``grid`` as a physical field.

    Parameters
    ----------
    path:
        The HDF5 snapshot (layout in the module docstring).
    grid:
        Target :class:`~iris_nb.grids.Grid` (distance, lon, lat axes and R0 are used).
    observer_angle:
        Rotation of the snapshot about its z axis (deg, counter-clockwise in its x-y plane)
        before placing it; after it, the snapshot's ``+y`` axis points from the Sun to the
        Galactic Centre and ``+x`` towards positive longitude.
    center:
        Galaxy centre in code length units ``(x, y, z)``; the box centre by default.
    prograde:
        If True (default) and the gas's net angular momentum ``sum(x vy - y vx)`` is negative,
        the snapshot is first viewed from its other pole (y, z, vy, vz change sign) so that it
        rotates like the Milky Way (positive longitudes recede).
    max_distance:
        Grid cells farther than this (pc) from every gas cell are left empty (density 0,
        velocity 0, 50 K); None keeps nearest neighbours at any distance.
    workers:
        Threads for the KD-tree queries (``-1`` = all cores).
    offset:
        Where the galaxy's centre is put, ``(x, y, z)`` pc in the grid's Galactocentric frame
        (:mod:`iris_nb.sim.kinematics`: ``+y`` away from the Sun, ``+x`` towards positive
        longitude), after the orientation; default the Galactic Centre ``(0, 0, 0)``.  The
        observer and its motion (220 km/s towards ``+x``) stay put, so for a centre moved to
        longitude ``dl`` the observer's velocity is ``dl`` off the perpendicular to the line to
        it (a radial component ``220 sin dl`` km/s, 1 km/s at 0.25 deg).
        :func:`iris_nb.sim.augment.observer_jitter` draws it per seed (observer jitter).

    Returns
    -------
    xarray.Dataset
        Field on ``(distance, lon, lat)`` with ``density`` (solMass / pc3), ``velocity_los``
        (km/s, v_LSR with the observer's motion, :mod:`iris_nb.sim.kinematics`),
        ``temperature`` (K), ``x_h2``, ``x_tracer`` and, when the snapshot has it,
        ``temperature_dust`` (K); attrs ``model`` = ``"arepo"`` and ``parameters`` (JSON with
        the path, observer angle, centre in pc, prograde flip, max_distance and the offset in
        pc as ``offset_x``, ``offset_y``, ``offset_z``).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"from_arepo needs an iris_nb.grids.Grid, got {type(grid).__name__}")
    if not math.isfinite(float(observer_angle)):
        raise ValueError(f"observer_angle must be a finite angle in deg, got {observer_angle!r}")
    shift = _offset_pc(offset)
    gas = read_arepo_gas(path)
    if center is None:
        centre_pc = np.full(3, 0.5 * gas["box_size"])
    else:
        centre = np.asarray(center, dtype=np.float64)
        if centre.shape != (3,) or not np.isfinite(centre).all():
            raise ValueError(f"center must be three finite numbers (x, y, z) in code length units, got {center!r}")
        centre_pc = centre * gas["length_unit"]
    position, velocity = _orient(gas["position"] - centre_pc, gas["velocity"], observer_angle, prograde)
    position = position + shift
    tree = cKDTree(position)

    d, lon, lat = (getattr(grid, name).centers() for name in FIELD_DIMS)
    shape = (d.size, lon.size, lat.size)
    names = ["density", "temperature", "x_h2", "x_tracer"] + (["temperature_dust"] if "temperature_dust" in gas else [])
    out = {name: np.empty(shape, np.float32) for name in names + ["velocity_los"]}
    flat = {name: arr.reshape(-1) for name, arr in out.items()}
    rows = max(1, _QUERY_CHUNK // (lon.size * lat.size))
    bound = np.inf if max_distance is None else float(max_distance)
    for d0 in range(0, d.size, rows):
        x, y, z = cell_positions(d[d0:d0 + rows, None, None], lon[None, :, None], lat[None, None, :],
                                 grid.observer_distance)
        x, y, z = (np.broadcast_to(c, (x.shape[0],) + shape[1:]).reshape(-1) for c in (x, y, z))
        dist, idx = tree.query(np.column_stack([x, y, z]), distance_upper_bound=bound, workers=workers)
        found = np.isfinite(dist)
        idx = np.where(found, idx, 0)
        cut = slice(d0 * lon.size * lat.size, d0 * lon.size * lat.size + x.size)
        for name in names:
            flat[name][cut] = gas[name][idx]
        v = velocity[idx]
        flat["velocity_los"][cut] = line_of_sight_velocity(x, y, z, v[:, 0], v[:, 1], v[:, 2],
                                                           grid.observer_distance)
        if not found.all():
            empty = np.flatnonzero(~found) + cut.start
            for name, value in (("density", 0.0), ("velocity_los", 0.0), ("temperature", 50.0),
                                ("x_h2", 0.0), ("x_tracer", 0.0), ("temperature_dust", 20.0)):
                if name in flat:
                    flat[name][empty] = value
    params = {"path": str(path), "observer_angle": float(observer_angle), "center_pc": centre_pc.tolist(),
              "prograde": bool(prograde), "max_distance": max_distance,
              "offset_x": float(shift[0]), "offset_y": float(shift[1]), "offset_z": float(shift[2])}
    return field_from_arrays(grid, **out, parameters=params, model="arepo")

