"""Tests for iris_nb.plot: labels with units, geometry of the views, NaNs, errors, PNG output."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from iris_nb import plot  # noqa: E402
from iris_nb.grids import SMALL, galactocentric_xy  # noqa: E402

GRID = SMALL.replace(
    distance=SMALL.distance.with_steps(64),
    lon=SMALL.lon.with_steps(64),
    lat=SMALL.lat.with_steps(8),
    velocity=SMALL.velocity.with_steps(48),
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_pv(rng, velocity_units="km/s"):
    lon, velocity = GRID.lon.centers(), GRID.velocity.centers()
    data = 10 * np.exp(-((velocity[None, :] - 50 * lon[:, None]) / 20) ** 2) + rng.normal(0, 0.2, GRID.pv_shape)
    scale = 1000.0 if velocity_units == "m/s" else 1.0
    return xr.DataArray(
        data,
        dims=("lon", "velocity"),
        coords={"lon": ("lon", lon, {"units": "deg"}),
                "velocity": ("velocity", velocity * scale, {"units": velocity_units})},
        attrs={"units": "K"},
        name="brightness_temperature",
    )


def make_td(values=None, units="Msun/pc3"):
    distance, lon = GRID.distance.centers(), GRID.lon.centers()
    if values is None:
        values = np.random.default_rng(1).gamma(2.0, 5.0, GRID.top_down_shape)
    return xr.DataArray(
        values,
        dims=("distance", "lon"),
        coords={"distance": ("distance", distance, {"units": "pc"}), "lon": ("lon", lon, {"units": "deg"})},
        attrs={"units": units},
    )


def map_axes(fig):
    """The Axes holding images, without the colorbars (in the order they were made)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colorbar_label(ax):
    return ax.collections[0].colorbar.ax.get_ylabel()


def saved_size(fig, path):
    fig.savefig(path, dpi=60)
    return path.stat().st_size


# ---------------------------------------------------------------------------- pv_image
def test_pv_image_labels_units_and_inverted_longitude(tmp_path):
    pv = make_pv(np.random.default_rng(0))
    ax = plot.pv_image(pv, title="synthetic")
    assert ax.get_xlabel() == "Galactic longitude [deg]"
    assert ax.get_ylabel() == "v_LSR [km/s]"
    assert colorbar_label(ax) == "T_B [K]"
    lon_edges = GRID.lon.edges()
    x0, x1 = ax.get_xlim()
    assert x0 > x1
    assert x0 == pytest.approx(lon_edges[-1]) and x1 == pytest.approx(lon_edges[0])
    assert ax.get_ylim() == pytest.approx((GRID.velocity.start, GRID.velocity.stop))
    assert isinstance(ax.collections[0].norm, matplotlib.colors.AsinhNorm)
    assert ax.collections[0].cmap.name.startswith("inferno")
    assert saved_size(ax.figure, tmp_path / "pv.png") > 5_000


def test_pv_image_uses_coordinate_units_and_any_dim_order():
    pv = make_pv(np.random.default_rng(0), velocity_units="m/s").transpose("velocity", "lon")
    ax = plot.pv_image(pv, stretch="linear")
    assert ax.get_ylabel() == "v_LSR [m/s]"
    assert ax.get_ylim() == pytest.approx((GRID.velocity.start * 1e3, GRID.velocity.stop * 1e3))


def test_pv_image_descending_longitude_keeps_pixels_in_place():
    pv = make_pv(np.random.default_rng(0)) * 0.0
    pv.attrs["units"] = "K"
    pv[10, 30] = 100.0  # lon index 10, velocity index 30
    flipped = pv.isel(lon=slice(None, None, -1))  # FITS-like, lon descending in memory
    mesh = plot.pv_image(flipped).collections[0]
    row, col = np.unravel_index(np.argmax(mesh.get_array()), mesh.get_array().shape)
    corners = mesh.get_coordinates()[row:row + 2, col:col + 2].reshape(-1, 2).mean(axis=0)
    assert corners[0] == pytest.approx(GRID.lon.centers()[10])
    assert corners[1] == pytest.approx(GRID.velocity.centers()[30])


def test_pv_image_reduces_ppv_cube_with_nanmean_and_blanks_nans():
    rng = np.random.default_rng(2)
    cube_values = rng.normal(1.0, 0.5, GRID.ppv_shape)
    cube_values[5, :, 7] = np.nan  # a fully unobserved spectrum-pixel
    cube_values[6, :3, 7] = np.nan  # partly observed: nanmean of the rest
    cube = xr.DataArray(
        cube_values,
        dims=("lon", "lat", "velocity"),
        coords={name: (name, GRID.coords()[name], {"units": unit})
                for name, unit in (("lon", "deg"), ("lat", "deg"), ("velocity", "km/s"))},
        attrs={"units": "K"},
    )
    with pytest.raises(ValueError, match="reduce='mean'"):
        plot.pv_image(cube)
    mesh = plot.pv_image(cube, reduce="mean", stretch="linear").collections[0]
    drawn = mesh.get_array()  # (velocity, lon)
    assert drawn.mask[7, 5]
    assert drawn[7, 6] == pytest.approx(np.mean(cube_values[6, 3:, 7]))
    assert np.ma.allclose(drawn[:, 20], cube_values[20].mean(axis=0))
    assert mesh.cmap.get_bad()[3] == 0.0  # NaN pixels are transparent (blank)


def test_pv_image_with_an_existing_axes_returns_it():
    fig, ax = plt.subplots()
    assert plot.pv_image(make_pv(np.random.default_rng(0)), ax=ax) is ax


# ---------------------------------------------------------------------------- top_down
def test_top_down_polar_wedge_limits_labels_and_tight_frame(tmp_path):
    ax = plot.top_down(make_td())
    assert ax.name == "polar"
    lon_edges, d_edges = GRID.lon.edges(), GRID.distance.edges()
    assert ax.get_thetamin() == pytest.approx(lon_edges[0])
    assert ax.get_thetamax() == pytest.approx(lon_edges[-1])
    assert ax.get_rmin() == pytest.approx(d_edges[0])
    assert ax.get_rmax() == pytest.approx(d_edges[-1])
    assert ax.get_xlabel() == "Galactic longitude [deg]"
    assert ax.get_ylabel() == "heliocentric distance [pc]"
    assert colorbar_label(ax) == "ρ_H2 [Msun/pc3]"
    # positive longitude is drawn left of negative longitude, and the wedge fills its frame
    ax.figure.canvas.draw()
    left = ax.transData.transform((np.deg2rad(lon_edges[-1]), d_edges[-1]))
    right = ax.transData.transform((np.deg2rad(lon_edges[0]), d_edges[-1]))
    near = ax.transData.transform((0.0, d_edges[0]))
    far = ax.transData.transform((0.0, d_edges[-1]))
    assert left[0] < right[0] and near[1] < far[1]
    bbox = ax.get_window_extent()
    assert (right[0] - left[0]) > 0.6 * bbox.width
    assert (far[1] - near[1]) > 0.6 * bbox.height
    assert saved_size(ax.figure, tmp_path / "polar.png") > 5_000


def test_top_down_cartesian_places_bright_pixel_at_galactocentric_xy(tmp_path):
    values = np.zeros(GRID.top_down_shape)
    i, j = 40, 12
    values[i, j] = 50.0
    td = make_td(values)
    td.attrs["observer_distance"] = 8178.0
    td = td.isel(lon=slice(None, None, -1)).transpose("lon", "distance")  # any order, lon descending
    ax = plot.top_down(td, kind="cartesian", colorbar=False)
    assert ax.get_xlabel() == "x [pc]" and ax.get_ylabel() == "y [pc]"
    assert ax.get_aspect() == 1.0
    x_true, y_true = map(float, galactocentric_xy(GRID.distance.centers()[i], GRID.lon.centers()[j], 8178.0))
    # 1) the QuadMesh quad holding the maximum sits at the predicted position
    mesh = ax.collections[0]
    row, col = np.unravel_index(np.argmax(mesh.get_array()), mesh.get_array().shape)
    centre = mesh.get_coordinates()[row:row + 2, col:col + 2].reshape(-1, 2).mean(axis=0)
    assert tuple(centre) == pytest.approx((x_true, y_true), abs=0.05)
    # 2) the rendered image shows the brightest colour there
    fig = ax.figure
    fig.set_dpi(100)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    target = np.asarray(mesh.cmap(1.0)[:3])
    distance_to_top = np.linalg.norm(rgba - target, axis=-1)
    row_px, col_px = np.unravel_index(np.argmin(distance_to_top), distance_to_top.shape)
    x_px, y_px = col_px + 0.5, rgba.shape[0] - row_px - 0.5
    x_seen, y_seen = ax.transData.inverted().transform((x_px, y_px))
    pixel_pc = GRID.distance.step
    assert abs(x_seen - x_true) < 1.5 * pixel_pc and abs(y_seen - y_true) < 1.5 * pixel_pc
    assert saved_size(fig, tmp_path / "cartesian.png") > 3_000


def test_top_down_cartesian_positive_longitude_on_the_left_and_number_density_label():
    ax = plot.top_down(make_td(units="cm-3"), kind="cartesian")
    assert ax.xaxis_inverted()
    assert colorbar_label(ax) == "n_H2 [cm-3]"


def test_top_down_nan_pixels_are_masked():
    values = np.ones(GRID.top_down_shape)
    values[3, 4] = np.nan
    mesh = plot.top_down(make_td(values)).collections[0]
    assert mesh.get_array().mask[3, 4] and mesh.get_array().mask.sum() == 1


# ------------------------------------------------------------------------ multi-panel
def test_side_by_side_has_both_views(tmp_path):
    fig = plot.side_by_side(make_pv(np.random.default_rng(0)), make_td(), title="CMZ")
    pv_ax, td_ax = map_axes(fig)
    assert pv_ax.get_xlabel() == "Galactic longitude [deg]" and pv_ax.xaxis_inverted()
    assert td_ax.name == "polar" and td_ax.get_ylabel() == "heliocentric distance [pc]"
    assert saved_size(fig, tmp_path / "side.png") > 10_000


def test_ensemble_mean_and_std_with_units(tmp_path):
    mean = make_td()
    ds = xr.Dataset({"mean": mean, "std": (mean * 0.1).assign_attrs(units=None)}, attrs={"units": "Msun/pc3"})
    del ds["std"].attrs["units"]
    fig = plot.ensemble(ds, kind="cartesian")
    maps = map_axes(fig)
    assert [ax.get_title() for ax in maps] == ["ensemble mean", "ensemble std"]
    assert colorbar_label(maps[0]) == "ρ_H2 [Msun/pc3]"
    assert colorbar_label(maps[1]) == "σ(ρ_H2) [Msun/pc3]"
    assert all(ax.get_xlabel() == "x [pc]" for ax in maps)
    assert saved_size(fig, tmp_path / "ensemble.png") > 10_000
    with pytest.raises(ValueError, match="lacks \\['std'\\]"):
        plot.ensemble(ds[["mean"]])
    with pytest.raises(TypeError, match="Dataset"):
        plot.ensemble(mean)


def test_truth_vs_prediction_residual_is_symmetric_and_aligned(tmp_path):
    truth = make_td()
    prediction = (truth * 1.2).assign_attrs(units="Msun/pc3")
    prediction = prediction.isel(lon=slice(None, None, -1))  # other memory order, same pixels
    prediction_gcm3 = prediction * 6.770e-23  # 1 Msun/pc3 = 6.770e-23 g/cm3
    prediction_gcm3.attrs["units"] = "g/cm3"
    fig = plot.truth_vs_prediction(truth, prediction_gcm3, kind="cartesian")
    maps = map_axes(fig)
    assert [ax.get_title() for ax in maps] == ["truth", "prediction", "residual"]
    residual = maps[2].collections[0]
    assert residual.norm.vmin == pytest.approx(-residual.norm.vmax)
    assert residual.cmap.name.startswith("RdBu")
    expected = 0.2 * truth.values
    np.testing.assert_allclose(residual.get_array(), expected, rtol=2e-3)
    assert maps[0].collections[0].norm.vmax == maps[1].collections[0].norm.vmax
    assert colorbar_label(maps[2]) == "prediction − truth [Msun/pc3]"
    assert saved_size(fig, tmp_path / "tvp.png") > 10_000


def test_truth_vs_prediction_rejects_other_pixels():
    truth = make_td()
    shifted = truth.assign_coords(lon=("lon", truth.lon.values + 0.1, {"units": "deg"}))
    with pytest.raises(ValueError, match="different 'lon' pixels"):
        plot.truth_vs_prediction(truth, shifted)


# ---------------------------------------------------------------------------- loss curves
def test_loss_curves_log_axis_and_learning_rate_twin(tmp_path):
    epochs = np.arange(32)
    train = 2.0 * np.exp(-epochs / 8) + 0.1
    validation = train * 1.1
    lr = 1e-3 * 0.5 ** np.clip(epochs - 15, 0, 3)
    ax = plot.loss_curves(train, validation, lr)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss [dimensionless]"
    twin = [other for other in ax.figure.axes if other is not ax][0]
    assert twin.get_ylabel() == "learning rate [dimensionless]"
    assert [line.get_label() for line in ax.get_lines()] == ["train", "validation"]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), epochs + 1)
    assert saved_size(ax.figure, tmp_path / "loss.png") > 5_000


def test_loss_curves_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        plot.loss_curves(np.ones((3, 3)))
    with pytest.raises(ValueError, match="one value per epoch"):
        plot.loss_curves([1.0, 0.5], epochs=[1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        plot.loss_curves([0.0, 0.0])


# ---------------------------------------------------------------------------- bad input
def test_wrong_dims_and_missing_units_raise_helpful_errors():
    pv = make_pv(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dims \('glon', 'velocity'\).*rename"):
        plot.pv_image(pv.rename(lon="glon"))
    no_units = pv.copy()
    no_units.attrs = {}
    with pytest.raises(ValueError, match="no units.*attrs\\['units'\\]"):
        plot.pv_image(no_units)
    bare_coord = pv.copy()
    bare_coord["velocity"].attrs = {}
    with pytest.raises(ValueError, match="coordinate 'velocity' has no units"):
        plot.pv_image(bare_coord)
    wrong_coord = pv.copy()
    wrong_coord["velocity"].attrs["units"] = "GHz"
    with pytest.raises(ValueError, match="not a v_LSR unit"):
        plot.pv_image(wrong_coord)
    with pytest.raises(TypeError, match="DataArray"):
        plot.pv_image(pv.values)
    with pytest.raises(ValueError, match="expected \\('distance', 'lon'\\)"):
        plot.top_down(pv)
    with pytest.raises(ValueError, match="not a density"):
        plot.top_down(make_td(units="K"))
    with pytest.raises(ValueError, match="cannot parse"):
        plot.top_down(make_td(units="Msun per parsec"))


def test_bad_options_raise_before_drawing():
    td = make_td()
    with pytest.raises(ValueError, match="kind='face-on'"):
        plot.top_down(td, kind="face-on")
    with pytest.raises(ValueError, match="stretch='sqrt'"):
        plot.top_down(td, stretch="sqrt")
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="polar Axes"):
        plot.top_down(td, kind="polar", ax=ax)
    with pytest.raises(ValueError, match="no finite values"):
        plot.top_down(make_td(np.full(GRID.top_down_shape, np.nan)))
    with pytest.raises(ValueError, match="vmin"):
        plot.top_down(td, vmin=5.0, vmax=1.0)


# ----------------------------------------------------------------- asinh colorbar ticks
def _visible_tick_labels(colorbar, renderer):
    """(value, window extent) of the drawn, non-empty tick labels of a vertical colorbar."""
    low, high = sorted(colorbar.ax.get_ylim())
    labels = []
    for tick in colorbar.ax.yaxis.get_major_ticks():
        if tick.label2.get_visible() and tick.label2.get_text() and low <= tick.get_loc() <= high:
            labels.append((tick.get_loc(), tick.label2.get_window_extent(renderer)))
    return labels


@pytest.mark.parametrize("peak", [0.3, 3.0, 20.0, 300.0])
def test_asinh_colorbar_tick_labels_do_not_overlap(peak):
    from matplotlib.colors import AsinhNorm
    from matplotlib.ticker import AsinhLocator

    values = np.linspace(0.0, peak, GRID.distance.steps * GRID.lon.steps).reshape(GRID.top_down_shape)
    ax = plot.top_down(make_td(values), kind="cartesian")
    colorbar = ax.collections[0].colorbar
    assert isinstance(colorbar.norm, AsinhNorm)
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    # the plain AsinhLocator crowds a tick into the bottom few percent of the bar, next to "0"
    width = colorbar.norm.linear_width
    raw = AsinhLocator(width, numticks=7).tick_values(0.0, peak)
    raw = raw[(raw > 0) & (raw <= peak)]
    assert colorbar.norm(raw).min() < 0.06

    labels = _visible_tick_labels(colorbar, renderer)
    values_shown = [value for value, _ in labels]
    assert 0.0 in values_shown and len(labels) >= 2
    assert [t.get_text() for t in colorbar.ax.get_yticklabels() if t.get_text()][0] == "0"
    for (v1, box1), (v2, box2) in zip(labels, labels[1:]):
        assert not box1.overlaps(box2), f"tick labels {v1} and {v2} overlap"
        assert colorbar.norm(v2) - colorbar.norm(v1) >= 0.06


def test_asinh_colorbar_keeps_zero_and_large_ticks_for_signed_data():
    rng = np.random.default_rng(4)
    pv = make_pv(rng)
    ax = plot.pv_image(pv)  # noise makes the PV image slightly negative: ticks on both sides of 0
    fig = ax.figure
    fig.canvas.draw()
    colorbar = ax.collections[0].colorbar
    labels = _visible_tick_labels(colorbar, fig.canvas.get_renderer())
    shown = [value for value, _ in labels]
    assert 0.0 in shown and max(shown) >= 1.0
    for (v1, box1), (v2, box2) in zip(labels, labels[1:]):
        assert not box1.overlaps(box2), f"tick labels {v1} and {v2} overlap"
