"""Tests for the published CMZ geometry (iris_nb.plot.orbits) and its overlays and l-b maps."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from cubes import make_cube  # noqa: E402
from iris_nb import plot  # noqa: E402
from iris_nb.grids import SMALL, galactocentric_xy  # noqa: E402
from iris_nb.plot import orbits  # noqa: E402
from iris_nb.plot.overlays import integrated_intensity  # noqa: E402

GRID = SMALL.replace(
    distance=SMALL.distance.with_steps(64),
    lon=SMALL.lon.with_steps(64),
    lat=SMALL.lat.with_steps(8),
    velocity=SMALL.velocity.with_steps(48),
)

# Points of the published tracks as tabulated by the 3-D CMZ collaboration
# (github.com/CentralMolecularZone/3D_CMZ, Paper_IV/LBV_plots): (l deg, b deg, v km/s).
MOLINARI_TRACK = [  # molinari_lbvlos.txt, drawn there with l mirrored and v - 14 km/s; R0 = 8.5 kpc
    (-0.4414, -0.1711, -75.3), (-0.4740, -0.0700, -85.1), (-0.1850, 0.0311, -65.4), (0.2563, -0.0700, -25.8),
    (0.5914, -0.1711, 47.3), (0.6240, -0.0700, 57.1), (0.3350, 0.0311, 37.4), (-0.1063, -0.0700, -2.2),
]
KDL_TRACK = [  # kdl_lbv.txt: (index of the point, 0.0984 Myr apart, l, b, v); R0 = 8.3 kpc
    (0, -0.680, -0.081, -129.6), (6, 0.017, 0.028, -35.0), (12, 0.653, -0.050, 68.7), (18, 0.675, -0.130, 81.9),
    (24, 0.056, -0.042, -4.7), (30, -0.674, 0.028, -110.0), (36, -0.828, -0.066, -105.2),
    (42, -0.340, -0.120, -14.4), (48, 0.408, -0.005, 105.5),
]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_td(observer_distance=None):
    distance, lon = GRID.distance.centers(), GRID.lon.centers()
    td = xr.DataArray(
        np.random.default_rng(1).gamma(2.0, 5.0, GRID.top_down_shape),
        dims=("distance", "lon"),
        coords={"distance": ("distance", distance, {"units": "pc"}), "lon": ("lon", lon, {"units": "deg"})},
        attrs={"units": "Msun/pc3"},
    )
    if observer_distance is not None:
        td.attrs["observer_distance"] = observer_distance
    return td


def orbit_lines(ax, name):
    return [line for line in ax.get_lines() if line.get_gid() == name]


def joined(near, far, axis):
    """The whole track from its near-side (solid) and far-side (dashed) lines."""
    get = "get_xdata" if axis == "x" else "get_ydata"
    a, b = getattr(near, get)(), getattr(far, get)()
    return np.where(np.isfinite(a), a, b)


def nearest(ds, point, scales=(0.01, 0.01, 2.0)):
    """Index of the orbit point closest to (l, b, v) in units of ``scales``."""
    l, b, v = point
    d2 = (((ds["lon"] - l) / scales[0]) ** 2 + ((ds["lat"] - b) / scales[1]) ** 2
          + ((ds["velocity"] - v) / scales[2]) ** 2)
    return int(np.argmin(d2.values))


def sgr_a_star_offsets(ds):
    return np.stack([ds[c].values for c in "xyz"]) - orbits._sgr_a_star(ds.attrs["observer_distance"])[:, None]


# ---------------------------------------------------------------------- Molinari ring
def test_molinari_ring_is_the_published_ellipse():
    ring = plot.orbit("molinari2011")
    assert ring.attrs["closed"] == 1
    x, y, z = (ring[c].values[:-1] for c in "xyz")  # the last point repeats the first
    assert ring["x"].values[[0, -1]] == pytest.approx(ring["x"].values[[-1, 0]])
    assert ring["y"].values[[0, -1]] == pytest.approx(ring["y"].values[[-1, 0]])
    centre = np.array([x.mean(), y.mean()])
    assert centre == pytest.approx([11.34, 0.0], abs=1e-6)
    radius = np.hypot(x - centre[0], y - centre[1])
    assert radius.max() == pytest.approx(100.0, abs=1e-3) and radius.min() == pytest.approx(60.0, abs=1e-3)
    far_end = np.argmax(radius * np.sign(x - centre[0]))  # the +l end of the major axis
    angle = np.degrees(np.arctan2(y[far_end] - centre[1], x[far_end] - centre[0]))
    assert angle == pytest.approx(40.0, abs=0.5)  # inclined 40 deg to the plane of the sky, +l end far
    assert z.mean() == pytest.approx(-10.39, abs=1e-6)
    assert z.max() - z.mean() == pytest.approx(15.0, abs=1e-3)  # +-15 pc, two oscillations per orbit
    crossings = np.count_nonzero(np.diff((z > z.mean()).astype(int)))
    assert crossings == 4
    lon_c = np.degrees(np.arctan2(11.34, orbits.R0_DEFAULT))
    lon = ring["lon"].values
    assert (lon.max() + lon.min()) / 2 == pytest.approx(lon_c, abs=0.01)


def test_molinari_ring_reproduces_the_published_track():
    ring = plot.orbit("Molinari", observer_distance=8500.0, samples=4001)
    for point in MOLINARI_TRACK:
        i = nearest(ring, point)
        assert ring["lon"][i] == pytest.approx(point[0], abs=0.006)
        assert ring["lat"][i] == pytest.approx(point[1], abs=0.006)
        assert ring["velocity"][i] == pytest.approx(point[2], abs=3.0)  # LSR motion: <= 2.5 km/s


# -------------------------------------------------------------------- KDL15 open orbit
def test_kdl_orbit_pericentre_apocentre_period_and_speed():
    kdl = plot.orbit("kdl2015", samples=4001)
    assert kdl.attrs["closed"] == 0
    radius = np.linalg.norm(sgr_a_star_offsets(kdl), axis=0)
    assert radius.min() == pytest.approx(59.0, abs=2.0)  # KDL15: pericentre 59 pc
    assert radius.max() == pytest.approx(121.0, abs=2.0)  # KDL15: apocentre 121 pc
    offsets = sgr_a_star_offsets(kdl)
    azimuth = np.unwrap(np.arctan2(offsets[1], offsets[0]))
    time = kdl["time"].values
    assert azimuth[-1] > azimuth[0]  # prograde (counter-clockwise in this frame, like the Sun)
    apocentres = [i for i in range(1, time.size - 1) if radius[i - 1] < radius[i] >= radius[i + 1]]
    assert len(apocentres) == 2
    first, second = apocentres
    radial_period = time[second] - time[first]
    period = 2 * np.pi * radial_period / (azimuth[second] - azimuth[first])
    assert radial_period == pytest.approx(2.0, abs=0.05)
    assert period == pytest.approx(3.69, rel=0.03)  # KDL15's orbital period, Myr
    step = np.linalg.norm(np.diff(offsets, axis=1), axis=0) / np.diff(time)  # pc / Myr
    speed = step / 1.0227121650537077
    assert 95.0 < speed.min() < 110.0 and 195.0 < speed.max() < 215.0  # KDL15: 100-200 km/s
    assert np.abs(offsets[2]).max() < 20.0


def test_kdl_orbit_reproduces_the_published_track():
    kdl = plot.orbit("KDL15", observer_distance=8300.0, samples=51)
    assert np.diff(kdl["time"].values) == pytest.approx(0.0984, abs=1e-4)
    for index, l, b, v in KDL_TRACK:
        assert kdl["lon"][index] == pytest.approx(l, abs=0.025)
        assert kdl["lat"][index] == pytest.approx(b, abs=0.012)
        assert kdl["velocity"][index] == pytest.approx(v, abs=3.0)


def test_tracks_pass_near_landmark_velocities():
    marks = orbits.landmarks()

    def miss(ds, name):
        mark = marks.sel(landmark=name)
        lon_miss, velocity_miss = (ds["lon"] - mark["lon"]) / 0.05, (ds["velocity"] - mark["velocity"]) / 10.0
        return float(np.min(np.hypot(lon_miss, velocity_miss)))

    kdl, ring = plot.orbit("kdl2015"), plot.orbit("molinari2011")
    assert miss(kdl, "Sgr B2") < 1.0 and miss(kdl, "Sgr C") < 1.0
    assert miss(ring, "Sgr B2") < 1.0
    assert marks["lon"].sel(landmark="Sgr A*") == pytest.approx(-0.0558)
    assert marks["velocity"].attrs["units"] == "km/s" and marks["lat"].attrs["units"] == "deg"


# ----------------------------------------------------------------- package conventions
@pytest.mark.parametrize("name", sorted(orbits.ORBITS))
def test_orbit_coordinates_follow_the_package_frame(name):
    from iris_nb.sim.kinematics import cell_positions

    ds = plot.orbit(name, observer_distance=8178.0)
    assert ds.attrs["observer_distance"] == 8178.0
    for variable, unit in (("x", "pc"), ("distance", "pc"), ("lon", "deg"), ("velocity", "km/s")):
        assert ds[variable].attrs["units"] == unit
    x, y, z = cell_positions(ds["distance"], ds["lon"], ds["lat"], 8178.0)
    np.testing.assert_allclose(np.stack([x, y, z]), np.stack([ds.x, ds.y, ds.z]), atol=1e-6)
    flat_x, flat_y = galactocentric_xy(ds["distance"] * np.cos(np.deg2rad(ds["lat"])), ds["lon"], 8178.0)
    np.testing.assert_allclose(flat_x, ds.x, atol=1e-6)
    np.testing.assert_allclose(flat_y, ds.y, atol=1e-6)
    assert np.all((ds["lon"] > -180) & (ds["lon"] <= 180))
    # prograde gas recedes at its positive-longitude end (v_LSR radio convention)
    lon = ds["lon"].values
    assert ds["velocity"][np.argmax(lon)] > 30 and ds["velocity"][np.argmin(lon)] < -30


def test_kdl_velocities_are_lsr_projections_of_the_motion():
    from iris_nb.sim.kinematics import line_of_sight_velocity

    kdl = plot.orbit("kdl2015", samples=20001)
    dt = np.gradient(kdl["time"].values)
    pc_per_myr = 1.0227121650537077
    vx, vy, vz = (np.gradient(kdl[c].values) / dt / pc_per_myr for c in "xyz")
    expected = line_of_sight_velocity(kdl.x.values, kdl.y.values, kdl.z.values, vx, vy, vz,
                                      kdl.attrs["observer_distance"]) + kdl.attrs["velocity_offset"]
    np.testing.assert_allclose(kdl["velocity"].values[1:-1], expected[1:-1], atol=0.05)


def test_observer_distance_moves_only_the_observer():
    near, far = plot.orbit("molinari2011", observer_distance=8000.0), plot.orbit("molinari2011")
    np.testing.assert_allclose(np.stack([near.x, near.y, near.z]), np.stack([far.x, far.y, far.z]))
    assert float((far["distance"] - near["distance"]).mean()) == pytest.approx(277.0, abs=1.0)
    kdl_near, kdl_far = plot.orbit("kdl2015", observer_distance=8000.0), plot.orbit("kdl2015")
    np.testing.assert_allclose(sgr_a_star_offsets(kdl_near), sgr_a_star_offsets(kdl_far), atol=1e-9)


def test_orbit_names_aliases_copies_and_errors():
    both = plot.published_orbits(samples=11)
    assert sorted(both) == sorted(orbits.ORBITS) and both["kdl2015"].sizes["point"] == 11
    assert plot.orbit("Kruijssen 2015").attrs["name"] == "kdl2015"
    edited = plot.orbit("kdl2015")
    edited["x"][:] = 0.0  # a caller's copy, not the cache
    assert float(np.abs(plot.orbit("kdl2015")["x"]).max()) > 50
    with pytest.raises(ValueError, match=r"orbit 'sofue1995'; choose one of \['kdl2015', 'molinari2011'\]"):
        plot.orbit("sofue1995")
    with pytest.raises(TypeError, match="string"):
        plot.orbit(2015)
    with pytest.raises(ValueError, match="samples"):
        plot.orbit("kdl2015", samples=2)
    with pytest.raises(ValueError, match="Sun - Galactic Centre distance"):
        plot.orbit("kdl2015", observer_distance=-8.3)


# ------------------------------------------------------------------------- overlays
def test_overlay_on_polar_top_down_uses_the_maps_observer_distance(tmp_path):
    ax = plot.top_down(make_td(observer_distance=8178.0), colorbar=False)
    limits = (ax.get_thetamin(), ax.get_thetamax(), ax.get_rmin(), ax.get_rmax())
    assert plot.overlay_orbits(ax) is ax
    for name in orbits.ORBITS:
        (line,) = orbit_lines(ax, name)
        ds = plot.orbit(name, observer_distance=8178.0)
        np.testing.assert_allclose(line.get_xdata(), np.deg2rad(ds["lon"]))
        np.testing.assert_allclose(line.get_ydata(), ds["distance"])
    assert (ax.get_thetamin(), ax.get_thetamax(), ax.get_rmin(), ax.get_rmax()) == pytest.approx(limits)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["Molinari+2011 ring", "KDL15 orbit"]
    ax.figure.savefig(tmp_path / "polar_orbits.png", dpi=50)


def test_overlay_polar_in_kpc_and_outside_the_wedge():
    td = make_td()
    td = td.assign_coords(distance=("distance", td.distance.values / 1000, {"units": "kpc"}))
    ax = plot.top_down(td, colorbar=False)
    plot.overlay_orbits(ax, "kdl2015")
    (line,) = orbit_lines(ax, "kdl2015")
    np.testing.assert_allclose(line.get_ydata(), plot.orbit("kdl2015")["distance"] / 1000)
    small = make_td().isel(distance=slice(28, 36))  # a thin annulus: most of the orbit lies outside
    ax = plot.top_down(small, colorbar=False)
    plot.overlay_orbits(ax, "kdl2015")
    r = orbit_lines(ax, "kdl2015")[0].get_ydata()
    inside = r[np.isfinite(r)]
    assert 0 < inside.size < r.size and inside.min() >= ax.get_rmin() and inside.max() <= ax.get_rmax()


def test_overlay_on_cartesian_top_down_lands_on_galactocentric_xy():
    ax = plot.top_down(make_td(), kind="cartesian", colorbar=False)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    plot.overlay_orbits(ax, ["kdl2015"], kind="top-down", linewidth=2)
    (line,) = orbit_lines(ax, "kdl2015")
    ds = plot.orbit("kdl2015")
    x, y = galactocentric_xy(ds["distance"], ds["lon"], orbits.R0_DEFAULT)
    np.testing.assert_allclose(line.get_xdata(), x)
    np.testing.assert_allclose(line.get_ydata(), y)
    assert line.get_linewidth() == 2 and line.get_color() == "lime"
    assert ax.get_xlim() == xlim and ax.get_ylim() == ylim and ax.xaxis_inverted()
    assert orbit_lines(ax, "molinari2011") == []


def test_overlay_on_pv_image_draws_near_and_far_sides_and_landmarks():
    lon, velocity = GRID.lon.centers(), GRID.velocity.centers()
    pv = xr.DataArray(np.ones(GRID.pv_shape), dims=("lon", "velocity"), attrs={"units": "K"},
                      coords={"lon": ("lon", lon, {"units": "deg"}),
                              "velocity": ("velocity", velocity * 1000, {"units": "m/s"})})
    ax = plot.pv_image(pv, colorbar=False)
    plot.overlay_orbits(ax, colors={"kdl2015": "red"})
    ds = plot.orbit("kdl2015")
    near, far = orbit_lines(ax, "kdl2015")
    assert near.get_linestyle() == "-" and far.get_linestyle() == "--" and near.get_color() == "red"
    np.testing.assert_allclose(joined(near, far, "y"), ds["velocity"] * 1000)  # the image shows m/s
    np.testing.assert_allclose(joined(near, far, "x"), ds["lon"])
    in_front = ds["y"].values < 0
    assert np.all(np.isfinite(near.get_ydata()[in_front])) and np.all(np.isfinite(far.get_ydata()[~in_front]))
    marks = [c for c in ax.collections if c.get_gid() == "landmarks"]
    assert len(marks) == 1
    expected = orbits.landmarks()
    np.testing.assert_allclose(marks[0].get_offsets(), np.c_[expected["lon"], expected["velocity"] * 1000])
    assert {t.get_text() for t in ax.texts} >= {"Sgr B2", "Sgr C", "Brick"}
    assert ax.get_ylim() == pytest.approx((GRID.velocity.start * 1000, GRID.velocity.stop * 1000))


def test_overlay_on_a_foreign_axes_needs_a_kind():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="cannot tell what this Axes shows"):
        plot.overlay_orbits(ax)
    plot.overlay_orbits(ax, "molinari2011", kind="lb", landmarks=False, legend=False)
    near, far = orbit_lines(ax, "molinari2011")
    ds = plot.orbit("molinari2011")
    np.testing.assert_allclose(joined(near, far, "y"), ds["lat"])
    assert ax.get_legend() is None


def test_overlay_options_and_bad_input_fail_before_drawing():
    ax = plot.top_down(make_td(), kind="cartesian", colorbar=False)
    before = len(ax.get_lines())
    with pytest.raises(ValueError, match="unknown orbit 'launhardt'"):
        plot.overlay_orbits(ax, ["kdl2015", "launhardt"])
    with pytest.raises(ValueError, match="kind='face-on' is not known"):
        plot.overlay_orbits(ax, kind="face-on")
    with pytest.raises(ValueError, match="does not fit a rectilinear Axes"):
        plot.overlay_orbits(ax, kind="polar")
    with pytest.raises(ValueError, match="landmarks have no reliable distances"):
        plot.overlay_orbits(ax, landmarks=True)
    with pytest.raises(TypeError, match="orbits must be"):
        plot.overlay_orbits(ax, orbits=3)
    assert len(ax.get_lines()) == before
    polar = plot.top_down(make_td(), colorbar=False)
    plot.overlay_orbits(polar, "molinari2011", grid=SMALL.replace(observer_distance=8000.0))
    (line,) = orbit_lines(polar, "molinari2011")
    drawn, expected = line.get_ydata(), plot.orbit("molinari2011", observer_distance=8000.0)["distance"].values
    shown = np.isfinite(drawn)  # the part nearer than the wedge's inner edge is left out
    np.testing.assert_allclose(drawn[shown], expected[shown])
    assert 0 < shown.sum() < shown.size and np.all(expected[~shown] < polar.get_rmin())


# --------------------------------------------------------------------------- l-b maps
def test_integrated_intensity_of_known_cubes():
    velocity = GRID.velocity.centers()
    dv = GRID.velocity.step
    # a Gaussian line: integral A sigma sqrt(2 pi), whatever the channel order and unit
    amplitude, centre, sigma = 3.0, 20.0, 15.0
    values = amplitude * np.exp(-0.5 * ((velocity - centre) / sigma) ** 2)
    cube = make_cube(np.broadcast_to(values, (GRID.lon.steps, GRID.lat.steps, velocity.size)).copy(), grid=GRID)
    moment = integrated_intensity(cube)
    assert moment.dims == ("lat", "lon") and moment.attrs["units"] == "K km/s"
    np.testing.assert_allclose(moment, amplitude * sigma * np.sqrt(2 * np.pi), rtol=1e-6)
    flipped = make_cube(cube.values[..., ::-1], velocity=velocity[::-1], velocity_units="m/s", grid=GRID)
    np.testing.assert_allclose(integrated_intensity(flipped), moment)
    # a flat 1 K spectrum over a window that cuts channels: the window's width exactly
    ones = make_cube(1.0, grid=GRID)
    np.testing.assert_allclose(integrated_intensity(ones, velocity_range=(-10.3, 20.7)), 31.0)
    np.testing.assert_allclose(integrated_intensity(ones), velocity.size * dv)
    # NaN channels are left out; a sightline without data stays NaN
    holes = np.ones(ones.shape)
    holes[3, 2, :10] = np.nan
    holes[4, 5, :] = np.nan
    moment = integrated_intensity(make_cube(holes, grid=GRID))
    assert moment[2, 3] == pytest.approx((velocity.size - 10) * dv) and np.isnan(moment[5, 4])
    assert np.isfinite(moment).sum() == moment.size - 1


def test_lb_map_draws_the_moment_with_labels_and_orbits(tmp_path):
    velocity = GRID.velocity.centers()
    lon = GRID.lon.centers()
    values = np.zeros((GRID.lon.steps, GRID.lat.steps, velocity.size))
    values[40, 3, :] = 2.0  # one bright sightline
    cube = make_cube(values, grid=GRID).isel(lon=slice(None, None, -1))  # FITS-like descending longitude
    ax = plot.lb_map(cube, orbits="all", landmarks=True, title="CMZ")
    mesh = ax.collections[0]
    drawn = mesh.get_array()  # (lat, lon), lon ascending
    row, col = np.unravel_index(np.argmax(drawn), drawn.shape)
    assert (row, col) == (3, 40) and drawn[row, col] == pytest.approx(2.0 * velocity.size * GRID.velocity.step)
    centre = mesh.get_coordinates()[row:row + 2, col:col + 2].reshape(-1, 2).mean(axis=0)
    assert tuple(centre) == pytest.approx((lon[40], GRID.lat.centers()[3]))
    assert ax.get_xlabel() == "Galactic longitude [deg]" and ax.get_ylabel() == "Galactic latitude [deg]"
    assert ax.xaxis_inverted() and ax.get_aspect() == 1.0 and ax.get_title() == "CMZ"
    assert mesh.colorbar.ax.get_ylabel() == "∫ T_B dv [K km/s]"
    assert ax.get_ylim() == pytest.approx((GRID.lat.start, GRID.lat.stop))
    near, far = orbit_lines(ax, "kdl2015")
    np.testing.assert_allclose(joined(near, far, "x"), plot.orbit("kdl2015")["lon"])
    assert any(c.get_gid() == "landmarks" for c in ax.collections)
    ax.figure.savefig(tmp_path / "lb.png", dpi=60)
    assert (tmp_path / "lb.png").stat().st_size > 3_000
    ax = plot.lb_map(make_cube(1.0, grid=GRID), velocity_range=(-50, 50), colorbar=False)
    np.testing.assert_allclose(ax.collections[0].get_array(), 100.0)
    assert any("v_LSR -50 to 50 km/s" in t.get_text() for t in ax.texts)


def test_lb_map_bad_input_says_what_to_do():
    cube = make_cube(1.0, grid=GRID)
    figures = plt.get_fignums()
    with pytest.raises(ValueError, match="no 'velocity' axis to integrate over"):
        plot.lb_map(cube.isel(velocity=0, drop=True))
    with pytest.raises(ValueError, match="no 'velocity' axis"):
        plot.lb_map(cube.rename(velocity="freq"))
    with pytest.raises(TypeError, match="DataArray"):
        plot.lb_map(cube.values)
    ghz = cube.copy()
    ghz["velocity"].attrs["units"] = "GHz"
    with pytest.raises(ValueError, match="not a v_LSR unit"):
        plot.lb_map(ghz)
    with pytest.raises(ValueError, match="misses the cube's channels"):
        plot.lb_map(cube, velocity_range=(300, 400))
    with pytest.raises(ValueError, match="low < high"):
        plot.lb_map(cube, velocity_range=(50, -50))
    with pytest.raises(ValueError, match="unknown orbit 'sawada2004'"):
        plot.lb_map(cube, orbits=["sawada2004"])
    with pytest.raises(ValueError, match="no units"):
        plot.lb_map(cube.assign_attrs(units=None))
    assert plt.get_fignums() == figures  # nothing was drawn
