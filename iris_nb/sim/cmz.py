"""``make_cmz``: a randomised, parametric model of the Central Molecular Zone gas.

The gas is the sum of four structures, each with its own velocity field, multiplied by a
log-normal turbulent factor:

1. an eccentric **ring** on x2-like orbits (semi-major axis ~100 pc), Gaussian in-plane
   cross-section, Gaussian vertical profile around a twisted mid-plane, velocities that
   conserve angular momentum along the orbit (:class:`~iris_nb.sim.cmz_geometry.Ring`);
2. two bar **dust lanes** starting at 200-300 pc on the leading sides of the bar and joining
   the ring tangentially, gas flowing in along them at 100-200 km/s
   (:class:`~iris_nb.sim.cmz_geometry.DustLanes`);
3. dense **clouds**: 3D Gaussian clumps on the ring, moving with it;
4. a **diffuse** exponential disc in prograde circular rotation.

The density-weighted mean of the structure velocities, plus a Gaussian random turbulent
velocity (power spectrum ``k^-4``), is projected onto the line of sight with the observer's
own circular motion (:func:`~iris_nb.sim.kinematics.line_of_sight_velocity`; v_LSR, positive
= receding).  Temperature, H2 fraction and tracer abundance follow the local density: dense
gas is cold, molecular and CO-rich; diffuse gas is warm, partly atomic and CO-poor.

Every parameter of :data:`CMZ_PARAMETERS` is drawn uniformly from its range with
``numpy.random.default_rng`` from the seed unless given explicitly.  Explicit values do not
change the random draws of the other parameters, the clouds or the turbulence, so
``make_cmz(grid, seed=s, turbulence_sigma=1.0)`` differs from ``make_cmz(grid, seed=s)`` only
through that parameter.  Numpy only (no torch); a SEDIGISM-grid field takes a few seconds.

In-plane structure is evaluated at the in-plane distance ``d cos b`` of each latitude group
(groups whose ``d (1 - cos b)`` differs by < half a distance pixel share one evaluation).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from ..grids import Grid
from .cmz_geometry import DustLanes, Ring
from .fields import field_from_arrays
from .kinematics import line_of_sight_velocity
from .parameters import ParameterTable
from .turbulence import gaussian_random_field

__all__ = ["CMZ_PARAMETERS", "VELOCITY_SPECTRUM_SLOPE", "draw_cmz_parameters", "make_cmz"]

CMZ_PARAMETERS = ParameterTable.parse("""
    name                 | low     | high  | kind | unit          | description
    density_scale        | 0.25    | 1.0   | >=0  |               | overall factor multiplying every density, as in
                         |         |       |      |               | the IRIS paper
    ring_semi_major      | 105.0   | 135.0 | >0   | pc            | semi-major axis a of the x2 ring (Sgr B2 and Sgr C
                         |         |       |      |               | lie ~100 and ~80 pc from Sgr A* in projection)
    ring_axis_ratio      | 0.5     | 0.8   | >=0  |               | minor over major axis b / a of the ring
    ring_bar_angle       | 70.0    | 110.0 | any  | deg           | angle from the bar's major axis to the ring's
                         |         |       |      |               | major axis: x2 orbits are elongated across the bar
                         |         |       |      |               | (ring_angle = bar_angle + this, unless ring_angle
                         |         |       |      |               | is given)
    ring_coverage        | 0.6     | 1.3   | >0   |               | fraction of the ring's orbit holding gas: >= 1 a
                         |         |       |      |               | closed ring, less an open stream with a gap
    ring_gap_phase       | 0.0     | 360.0 | any  | deg           | eccentric anomaly of the middle of the stream's
                         |         |       |      |               | gap
    ring_lopsidedness    | 0.0     | 0.6   | >=0  |               | m = 1 asymmetry: ring and cloud densities vary as
                         |         |       |      |               | 1 + lopsidedness cos(E - ring_lopsided_phase)
                         |         |       |      |               | along the orbit
    ring_lopsided_phase  | 0.0     | 360.0 | any  | deg           | eccentric anomaly where the ring is densest
    ring_speed           | 80.0    | 120.0 | >=0  | km/s          | mean orbital speed on the ring (fastest at the
                         |         |       |      |               | minor-axis ends)
    ring_width           | 5.0     | 15.0  | >0   | pc            | Gaussian sigma of the ring's in-plane
                         |         |       |      |               | cross-section
    ring_density         | 60.0    | 200.0 | >=0  | solMass / pc3 | total gas density on the ring's mid-line
    ring_twist           | 0.0     | 15.0  | >=0  | pc            | amplitude of the ring mid-plane's vertical
                         |         |       |      |               | oscillation z = twist sin(2 E + phase), twice per
                         |         |       |      |               | orbit
    ring_twist_phase     | 0.0     | 360.0 | any  | deg           | phase of the ring's vertical oscillation
    latitude_offset      | -0.1    | 0.02  | any  | deg           | latitude of the CMZ mid-plane seen from the Sun
                         |         |       |      |               | (the real centroid is near b = -0.05 deg): every
                         |         |       |      |               | structure is shifted by R0 tan(b)
    scale_height         | 10.0    | 30.0  | >0   | pc            | Gaussian sigma of the vertical profile of ring,
                         |         |       |      |               | clouds and lanes
    bar_angle            | 20.0    | 30.0  | any  | deg           | angle of the bar's major axis from the GC -> Sun
                         |         |       |      |               | line (near end at positive longitude)
    lane_start           | 200.0   | 300.0 | >0   | pc            | Galactocentric radius where the dust lanes begin
    lane_offset          | -30.0   | 30.0  | any  | pc            | sideways shift of the lane start, perpendicular to
                         |         |       |      |               | the bar
    lane_speed           | 100.0   | 200.0 | >=0  | km/s          | inflow speed of the gas along the dust lanes
    lane_width           | 4.0     | 12.0  | >0   | pc            | Gaussian sigma of the lanes' cross-section
    lane_density         | 0.1     | 0.5   | >=0  |               | lane mid-line density as a fraction of
                         |         |       |      |               | ring_density
    cloud_count          | 5       | 30    | int  |               | number of dense clouds on the ring (integer)
    cloud_contrast       | 2.0     | 8.0   | >=0  |               | largest cloud peak density over ring_density (each
                         |         |       |      |               | cloud draws 0.3-1 times it)
    cloud_radius         | 2.0     | 8.0   | >0   | pc            | largest Gaussian sigma of a cloud (each cloud
                         |         |       |      |               | draws 0.4-1 times it)
    diffuse_density      | 0.5     | 5.0   | >=0  | solMass / pc3 | central density of the diffuse exponential disc
    diffuse_scale_length | 80.0    | 200.0 | >0   | pc            | radial exponential scale length of the diffuse
                         |         |       |      |               | disc
    diffuse_height       | 25.0    | 50.0  | >0   | pc            | Gaussian sigma of the diffuse disc's vertical
                         |         |       |      |               | profile
    turbulence_sigma     | 0.5     | 1.5   | >=0  |               | standard deviation of ln(density) of the
                         |         |       |      |               | log-normal turbulence
    turbulence_slope     | 3.0     | 4.0   | any  |               | beta of the 3D power spectrum P(k) ~ k^-beta of
                         |         |       |      |               | ln(density) (a 2D slice has k^-(beta - 1))
    velocity_dispersion  | 3.0     | 15.0  | >=0  | km/s          | standard deviation of the turbulent line-of-sight
                         |         |       |      |               | velocity
    turbulent_b          | 3.0     | 10.0  | >=0  | km/s          | microturbulent Doppler parameter of motions below
                         |         |       |      |               | the grid scale (the field's turbulent_b; b =
                         |         |       |      |               | sqrt(2) sigma)
    molecular_density    | 1.0     | 5.0   | >0   | solMass / pc3 | density at which gas is half molecular (x_h2 =
                         |         |       |      |               | 0.25), half-way between the two temperatures and
                         |         |       |      |               | has half its CO
    temperature_dense    | 15.0    | 35.0  | >0   | K             | kinetic temperature of dense gas (set so that
                         |         |       |      |               | 13CO(2-1) peaks bracket the survey's; see
                         |         |       |      |               | family_summary)
    temperature_diffuse  | 60.0    | 250.0 | >0   | K             | kinetic temperature of diffuse gas (at least
                         |         |       |      |               | temperature_dense)
    tracer_abundance     | 2.5e-06 | 6e-06 | >=0  |               | 13CO per H2 in dense gas (CO/H2 = 1e-4 over
                         |         |       |      |               | 12C/13C = 25 gives 4e-6)
    dust_temperature     | 18.0    | 30.0  | >0   | K             | dust temperature in dense gas (diffuse dust up to
                         |         |       |      |               | 20% warmer)
""")
"""name -> (low, high, description, unit) of every :func:`make_cmz` parameter, in drawing order; a
:class:`~iris_nb.sim.parameters.ParameterTable` whose ``kinds`` say what an explicit value may be."""

VELOCITY_SPECTRUM_SLOPE = 4.0
"""Slope of the 3D power spectrum of the turbulent velocity (Burgers-like, supersonic)."""

_CHUNK_CELLS = 1 << 21  # cells per block of distance rows (8 MB per float32 temporary)


def _check_value(name: str, value):
    """An explicit make_cmz parameter, checked by its kind in the table and by its own limits."""
    if name == "ring_angle":  # derived (bar_angle + ring_bar_angle), so not in the table: any angle
        return CMZ_PARAMETERS.check(name, value, "make_cmz", kind="any")
    value = CMZ_PARAMETERS.check(name, value, "make_cmz")
    if name == "ring_axis_ratio" and value > 1:
        raise ValueError(f"ring_axis_ratio={value} must be <= 1 (b / a of the ring)")
    if name == "ring_lopsidedness" and value >= 1:
        raise ValueError(f"ring_lopsidedness={value} must be < 1 (densities stay positive)")
    if name == "latitude_offset" and abs(value) > 1:
        raise ValueError(f"latitude_offset={value} deg is beyond the CMZ; give a small offset (typical "
                         f"range {CMZ_PARAMETERS[name][:2]})")
    return value


def draw_cmz_parameters(rng: np.random.Generator, **params) -> dict:
    """Draw every parameter of :data:`CMZ_PARAMETERS` from its range, then apply ``params``.

    All parameters are always drawn in table order (so explicit values leave the others
    unchanged).  Unknown names raise :class:`TypeError` listing the valid ones.  Returns a
    dict of plain floats (``cloud_count`` an int), in the units of the table, plus
    ``ring_angle`` (deg from the GC -> Sun line: ``bar_angle + ring_bar_angle``, or the
    explicit value, which then sets ``ring_bar_angle``).
    """
    ring_angle = params.pop("ring_angle", None)
    drawn = CMZ_PARAMETERS.draw(rng, params, "make_cmz", _check_value)
    if ring_angle is None:
        drawn["ring_angle"] = drawn["bar_angle"] + drawn["ring_bar_angle"]
    else:
        drawn["ring_angle"] = _check_value("ring_angle", ring_angle)
        drawn["ring_bar_angle"] = drawn["ring_angle"] - drawn["bar_angle"]
    drawn["temperature_diffuse"] = max(drawn["temperature_diffuse"], drawn["temperature_dense"])
    if drawn["lane_start"] <= drawn["ring_semi_major"]:
        raise ValueError(f"lane_start ({drawn['lane_start']} pc) must exceed ring_semi_major "
                         f"({drawn['ring_semi_major']} pc): the dust lanes feed the ring from outside")
    return drawn


def _draw_clouds(rng: np.random.Generator, ring: Ring, p: dict) -> dict:
    n = p["cloud_count"]
    # anomalies drawn from the ring's own density along the orbit (open stream, lopsided)
    candidates = rng.uniform(0.0, 2 * np.pi, 8 * n + 64)
    keep = rng.uniform(0.0, 1.0 + p["ring_lopsidedness"], candidates.size) < ring.modulation(candidates)
    anomaly = candidates[keep][:n]
    if anomaly.size < n:  # (practically never) top up uniformly
        anomaly = np.concatenate([anomaly, rng.uniform(0.0, 2 * np.pi, n - anomaly.size)])
    offset = rng.normal(0.0, 0.5 * p["ring_width"], n)
    x, y = ring.point(anomaly, offset)
    z = ring.height(anomaly) + rng.normal(0.0, p["scale_height"] / 3.0, n)
    radius = p["cloud_radius"] * rng.uniform(0.4, 1.0, n)
    peak = p["ring_density"] * p["cloud_contrast"] * rng.uniform(0.3, 1.0, n)
    return {"x": x, "y": y, "z": z, "radius": radius, "peak": peak}


def _plane_maps(x, y, sun_r0, ring, lanes, p):
    """Structure densities (unscaled, solMass/pc3) and in-plane LOS velocities (km/s at b=0)."""
    ring_profile, ring_z, rvx, rvy = ring.evaluate(x, y, p["ring_width"])
    lane_profile, lvx, lvy = lanes.evaluate(x, y, p["lane_width"])
    radius = np.hypot(x, y)
    speed = p["ring_speed"] * np.minimum(1.0, radius / p["ring_semi_major"])
    dvx, dvy = -speed * y / np.maximum(radius, 1e-9), speed * x / np.maximum(radius, 1e-9)
    zero = np.zeros_like(x)

    def vlos(vx, vy):
        return line_of_sight_velocity(x, y, zero, vx, vy, zero, sun_r0).astype(np.float32)

    f32 = np.float32
    return {
        "ring": (p["ring_density"] * ring_profile).astype(f32), "ring_z": ring_z.astype(f32),
        "lane": (p["lane_density"] * p["ring_density"] * lane_profile).astype(f32),
        "diffuse": (p["diffuse_density"] * np.exp(-radius / p["diffuse_scale_length"])).astype(f32),
        "v_ring": vlos(rvx, rvy), "v_lane": vlos(lvx, lvy), "v_diffuse": vlos(dvx, dvy),
        "x": x, "y": y,
    }


def _cloud_boxes(clouds: dict, grid: Grid, r0: float, z_offset: float = 0.0) -> list:
    """Per cloud: index ranges ``(d0, d1, l0, l1, b0, b1)`` within 5 sigma, then ``(x, y, z, r, peak)``
    (``z`` above the CMZ mid-plane, which lies ``z_offset`` pc above the Sun's plane)."""
    boxes = []

    def index_range(axis, lo, hi):
        i0 = int(np.clip(math.floor((lo - axis.start) / axis.step), 0, axis.steps))
        i1 = int(np.clip(math.ceil((hi - axis.start) / axis.step), 0, axis.steps))
        return i0, i1

    for xc, yc, zc, rc, peak in zip(clouds["x"], clouds["y"], clouds["z"], clouds["radius"], clouds["peak"]):
        z_sky = zc + z_offset
        dist = math.sqrt(xc * xc + (yc + r0) ** 2 + z_sky * z_sky)
        reach = 5.0 * rc
        lon_c, lat_c = math.degrees(math.atan2(xc, yc + r0)), math.degrees(math.asin(z_sky / dist))
        spread = math.degrees(reach / (dist - reach))
        box = (index_range(grid.distance, dist - reach, dist + reach)
               + index_range(grid.lon, lon_c - spread, lon_c + spread)
               + index_range(grid.lat, lat_c - spread, lat_c + spread))
        boxes.append((box, (float(xc), float(yc), float(zc), float(rc), float(peak))))
    return boxes


def _add_clouds(w_ring, maps, z, d_range, b_range, boxes):
    """Add the clouds overlapping a block to ``w_ring`` (rows d_range, lats b_range), in place.

    ``w_ring`` is ``(nd, lon, nb)`` solMass/pc3, ``z`` the block's heights ``(nd, 1, nb)`` pc.
    """
    d0, d1 = d_range
    b0, b1 = b_range
    for (cd0, cd1, l0, l1, cb0, cb1), (xc, yc, zc, rc, peak) in boxes:
        i0, i1, j0, j1 = max(cd0, d0), min(cd1, d1), max(cb0, b0), min(cb1, b1)
        if i0 >= i1 or l0 >= l1 or j0 >= j1:
            continue
        dx = maps["x"][i0:i1, l0:l1, None] - xc
        dy = maps["y"][i0:i1, l0:l1, None] - yc
        dz = z[i0 - d0:i1 - d0, :, j0 - b0:j1 - b0] - zc
        blob = peak * np.exp(-0.5 * (dx * dx + dy * dy + dz * dz) / (rc * rc))
        w_ring[i0 - d0:i1 - d0, l0:l1, j0 - b0:j1 - b0] += blob.astype(np.float32)


def _fill_block(out, maps, block, d, lat, boxes, p):
    """Turn the turbulence already in ``out`` into the gas of one block, in place.

    ``block = (d0, d1, b0, b1)``: distance rows and latitude columns; ``out`` holds the
    full ``(distance, lon, lat)`` arrays; ``density`` and ``velocity_los`` come in holding
    unit Gaussian random fields.
    """
    f32 = np.float32
    d0, d1, b0, b1 = block
    sub = (slice(d0, d1), slice(None), slice(b0, b1))
    b = np.radians(lat[b0:b1])
    z = (d[d0:d1, None, None] * np.sin(b)[None, None, :]).astype(f32)          # (nd, 1, nb) pc
    z -= f32(p["z_offset"])  # height above the CMZ's own (offset) mid-plane
    cos_b = np.cos(b).astype(f32)[None, None, :]
    m = {key: value[d0:d1, :, None] for key, value in maps.items() if key not in ("x", "y")}
    h, hd = f32(p["scale_height"]), f32(p["diffuse_height"])

    w_ring = z - m["ring_z"]
    np.square(w_ring, out=w_ring)
    w_ring *= f32(-0.5) / (h * h)
    np.exp(w_ring, out=w_ring)
    w_ring *= m["ring"]
    _add_clouds(w_ring, maps, z, (d0, d1), (b0, b1), boxes)
    w_lane = m["lane"] * np.exp(f32(-0.5) * (z / h) ** 2)
    w_diff = m["diffuse"] * np.exp(f32(-0.5) * (z / hd) ** 2)
    w_diff += f32(1e-30)  # gas-free cells take the diffuse velocity
    total = w_ring + w_lane
    total += w_diff
    v_mean = w_ring * m["v_ring"]
    w_lane *= m["v_lane"]
    v_mean += w_lane
    w_diff *= m["v_diffuse"]
    v_mean += w_diff
    v_mean /= total
    v_mean *= cos_b
    velocity = out["velocity_los"][sub]
    velocity *= f32(p["velocity_dispersion"])
    velocity += v_mean

    sigma = p["turbulence_sigma"]
    rho = out["density"][sub]
    rho *= f32(sigma)
    rho -= f32(0.5 * sigma * sigma)
    np.exp(rho, out=rho)
    rho *= total
    rho *= f32(p["density_scale"])
    molecular = rho / (rho + f32(p["molecular_density"]))
    diffuse_fraction = f32(1) - molecular
    np.multiply(molecular, f32(0.5), out=out["x_h2"][sub])
    np.multiply(molecular, f32(p["tracer_abundance"]), out=out["x_tracer"][sub])
    t_dense, t_diffuse = p["temperature_dense"], p["temperature_diffuse"]
    np.multiply(diffuse_fraction, f32(t_diffuse - t_dense), out=out["temperature"][sub])
    out["temperature"][sub] += f32(t_dense)
    dust = out["temperature_dust"][sub]
    np.multiply(diffuse_fraction, f32(0.2), out=dust)
    dust += f32(1)
    dust *= f32(p["dust_temperature"])


def latitude_groups(grid: Grid) -> list:
    """Latitude runs ``[(b0, b1), ...]`` per group sharing one in-plane evaluation, with its cos b."""
    lat = grid.lat.centers()
    shift = grid.distance.stop * (1.0 - np.cos(np.radians(lat))) / grid.distance.step
    group = np.round(shift / 0.5).astype(int)
    out = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        runs = np.split(members, np.flatnonzero(np.diff(members) > 1) + 1)
        cos_g = float(np.cos(np.radians(lat[members])).mean())
        out.append((cos_g, [(int(r[0]), int(r[-1]) + 1) for r in runs]))
    return out


@dataclasses.dataclass
class Structure:
    """Everything of one sample that is drawn before any grid-sized work (see :func:`draw_structure`)."""

    streams: list  # the sample's four numpy seed streams: parameters, clouds, density and velocity turbulence
    parameters: dict
    z_offset: float  # height of the CMZ mid-plane above the Sun's plane, pc
    ring: Ring
    lanes: DustLanes
    boxes: list  # the clouds, as _cloud_boxes gives them


def draw_structure(grid: Grid, seed: int, params: dict) -> Structure:
    """The parameters, ring, dust lanes and clouds of sample ``seed`` (shared by ``make_cmz`` and
    the batched torch :class:`~iris_nb.sim.cmz_model.CMZModel`, so both draw the same CMZ)."""
    streams = np.random.SeedSequence(int(seed)).spawn(4)
    p = draw_cmz_parameters(np.random.default_rng(streams[0]), **params)
    r0 = grid.observer_distance
    z_offset = r0 * math.tan(math.radians(p["latitude_offset"]))
    ring = Ring(p["ring_semi_major"], p["ring_axis_ratio"], p["ring_angle"], p["ring_speed"],
                p["ring_twist"], p["ring_twist_phase"], coverage=p["ring_coverage"],
                gap_phase_deg=p["ring_gap_phase"], lopsidedness=p["ring_lopsidedness"],
                lopsided_phase_deg=p["ring_lopsided_phase"])
    lanes = DustLanes(ring, p["bar_angle"], p["lane_start"], p["lane_offset"], p["lane_speed"])
    boxes = _cloud_boxes(_draw_clouds(np.random.default_rng(streams[1]), ring, p), grid, r0, z_offset)
    return Structure(streams, p, z_offset, ring, lanes, boxes)


def make_cmz(grid: Grid, seed: int = 0, **params):
    """A random, physically plausible CMZ gas field on ``grid``.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid`; its distance, lon and lat axes and observer
        distance R0 are used (velocity axis ignored).
    seed:
        Non-negative integer; the same seed and parameters give a bit-identical field.
    **params:
        Any names of :data:`CMZ_PARAMETERS` to fix instead of drawing them (units as there).

    Returns
    -------
    xarray.Dataset
        A field (see :mod:`iris_nb.sim.fields`) on ``(distance, lon, lat)``: ``density``
        (solMass / pc3), ``velocity_los`` (km/s, v_LSR), ``temperature`` (K), ``x_h2``,
        ``x_tracer`` and ``temperature_dust`` (K), float32; attrs ``parameters`` (JSON of every
        value used), ``seed``, ``model`` = ``"make_cmz"`` and ``grid``.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"make_cmz needs an iris_nb.grids.Grid, got {type(grid).__name__}; "
                        "e.g. iris_nb.grids.SMALL")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"make_cmz seed must be a non-negative integer, got {seed!r}")
    drawn = draw_structure(grid, seed, params)
    streams, p, z_offset, ring, lanes, boxes = (drawn.streams, drawn.parameters, drawn.z_offset, drawn.ring,
                                                 drawn.lanes, drawn.boxes)
    r0 = grid.observer_distance

    d, lon, lat = grid.distance.centers(), grid.lon.centers(), grid.lat.centers()
    shape = (d.size, lon.size, lat.size)
    mid = 0.5 * (grid.distance.start + grid.distance.stop)
    spacing = (grid.distance.step, math.radians(grid.lon.step) * mid, math.radians(grid.lat.step) * mid)
    # the turbulence is generated straight into the output arrays, then turned into gas per block
    out = {"density": gaussian_random_field(shape, spacing, p["turbulence_slope"],
                                            np.random.default_rng(streams[2])),
           "velocity_los": gaussian_random_field(shape, spacing, VELOCITY_SPECTRUM_SLOPE,
                                                 np.random.default_rng(streams[3]))}
    for name in ("temperature", "x_h2", "x_tracer", "temperature_dust"):
        out[name] = np.empty(shape, np.float32)

    groups = []
    for cos_g, runs in latitude_groups(grid):
        x = (d[:, None] * cos_g) * np.sin(np.radians(lon))[None, :]
        y = (d[:, None] * cos_g) * np.cos(np.radians(lon))[None, :] - r0
        groups.append((_plane_maps(x, y, r0, ring, lanes, p), runs))
    rows = max(1, _CHUNK_CELLS // (lon.size * lat.size))
    for d0 in range(0, d.size, rows):
        d1 = min(d.size, d0 + rows)
        for maps, runs in groups:
            for b0, b1 in runs:
                _fill_block(out, maps, (d0, d1, b0, b1), d, lat, boxes, {**p, "z_offset": z_offset})
    return field_from_arrays(grid, **out, turbulent_b=p["turbulent_b"], parameters=p, seed=int(seed),
                             model="make_cmz")
