"""SimpleObserver and LineObserver on small hand-built fields (issue 3, "Done when")."""

import json
import math

import astropy.constants as const
import numpy as np
import pytest
import torch
import xarray as xr
from scipy import special

from iris_nb.grids import SMALL, Axis
from iris_nb.sim.fields import HYDROGEN_MASS_FRACTION, field_from_arrays, field_tensors
from iris_nb.sim.observers import LineObserver, SimpleObserver
from iris_nb.units import H2_MASS

H, K, C, AMU = const.h.value, const.k_B.value, const.c.value, const.u.value
NU = 220.3986842e9
T0 = H * NU / K
A_UL, G_U, E_U, B_ROT = 6.038e-7, 5, 15.87, H * 55.101e9 / K
M_SUN_PC3 = (const.M_sun / const.pc**3).to_value("kg / m3")
PC = const.pc.value

# 16 distance x 4 lon x 3 lat x 40 velocity cells, same physics as SMALL
TINY = SMALL.replace(distance=Axis(8100.0, 8420.0, 16), lon=Axis(-0.2, 0.2, 4), lat=Axis(-0.06, 0.06, 3),
                     velocity=Axis(-100.0, 100.0, 40), name="tiny")


def j_rj(t):
    return T0 / np.expm1(T0 / np.asarray(t, dtype=np.float64))


def n_upper(column_h2_rho_dr, x_tracer, t):
    """N_u in m^-2 from rho_H2 * dr (solMass/pc3 * pc), abundance and temperature, float64."""
    n_tracer = x_tracer * column_h2_rho_dr * M_SUN_PC3 * PC / H2_MASS.to_value("kg")
    j = np.arange(300)
    q = ((2 * j + 1) * np.exp(-B_ROT * j * (j + 1) / t)).sum()
    return n_tracer * G_U * np.exp(-E_U / t) / q


def reference_cube(field, turbulent_b, dust=False):
    """Plain float64 LTE transfer in SI (Planck intensities), every channel, far side first."""
    grid = TINY
    v = grid.velocity.centers() * 1e3
    dv = grid.velocity.step * 1e3
    dr = grid.distance.step
    planck = lambda t: 2 * H * NU**3 / C**2 / np.expm1(H * NU / (K * t))  # noqa: E731
    arr = {k: field[k].values.astype(np.float64) for k in field.data_vars}
    out = np.zeros(grid.ppv_shape)
    kappa = 0.899e-1 * (NU / 230e9) ** 1.8 / 100  # m2 / kg of gas
    for il in range(grid.lon.steps):
        for ib in range(grid.lat.steps):
            intensity = np.full(v.size, planck(2.725))
            cont = planck(2.725)
            for d in range(grid.distance.steps - 1, -1, -1):
                t = arr["temperature"][d, il, ib]
                rho_h2 = 2 * HYDROGEN_MASS_FRACTION * arr["x_h2"][d, il, ib] * arr["density"][d, il, ib]
                nu_col = n_upper(rho_h2 * dr, arr["x_tracer"][d, il, ib], t)
                b = math.sqrt(2 * K * t / (29 * AMU) + (turbulent_b * 1e3) ** 2)
                v0 = arr["velocity_los"][d, il, ib] * 1e3
                phi = (special.erf((v + dv / 2 - v0) / b) - special.erf((v - dv / 2 - v0) / b)) / (2 * dv)
                tau = C**3 * A_UL / (8 * np.pi * NU**3) * nu_col * np.expm1(H * NU / (K * t)) * phi
                source = planck(t)
                if dust:
                    tau_d = kappa * arr["density"][d, il, ib] * M_SUN_PC3 * dr * PC
                    td = arr.get("temperature_dust", arr["temperature"])[d, il, ib]
                    source = (source * tau + planck(td) * tau_d) / np.maximum(tau + tau_d, 1e-300)
                    tau = tau + tau_d
                    cont = cont * np.exp(-tau_d) + planck(td) * -np.expm1(-tau_d)
                intensity = intensity * np.exp(-tau) + source * -np.expm1(-tau)
            out[il, ib] = C**2 / (2 * K * NU**2) * (intensity - cont)
    return out


def random_field(grid, seed, fill=0.5, dust=False):
    rng = np.random.default_rng(seed)
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    density = rng.lognormal(2.0, 1.5, shape) * (rng.random(shape) < fill)
    extra = {"temperature_dust": rng.uniform(10, 40, shape)} if dust else {}
    return field_from_arrays(grid, density=density, velocity_los=rng.normal(0, 40, shape),
                             temperature=rng.uniform(3, 120, shape), x_h2=rng.uniform(0.2, 0.5, shape),
                             x_tracer=rng.uniform(1e-6, 8e-6, shape), seed=seed, model="random", **extra)


def one_cell_field(grid, cells, temperature=50.0, x_tracer=4e-6):
    """Field with gas only in the given (distance, lon, lat) -> (density, velocity, temperature) cells."""
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    density, velocity, temp = np.zeros(shape), np.zeros(shape), np.full(shape, temperature)
    for (d, il, ib), (rho, v, t) in cells.items():
        density[d, il, ib], velocity[d, il, ib], temp[d, il, ib] = rho, v, t
    return field_from_arrays(grid, density=density, velocity_los=velocity, temperature=temp, x_tracer=x_tracer)


# ============================================================================ SimpleObserver
def test_tent_weights_conserve_the_column_exactly():
    grid = TINY
    rng = np.random.default_rng(1)
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    centres, edges = grid.velocity.centers(), grid.velocity.edges()
    fields = []
    for seed in range(2):
        v = rng.uniform(-100, 100, shape)
        flat = v.reshape(-1)
        flat[:40] = rng.choice(centres, 40)  # exactly on channel centres
        flat[40:80] = rng.choice((centres[1:] + centres[:-1]) / 2, 40)  # halfway between
        flat[80:84] = [edges[0], edges[-1], centres[0] - 1.0, centres[-1] + 1.0]  # window edges, half channels
        fields.append(field_from_arrays(grid, density=rng.uniform(0, 50, shape), velocity_los=v,
                                        x_h2=rng.uniform(0, 0.5, shape), seed=seed))
    tensors = field_tensors(fields, dtype=torch.float64)
    cube = SimpleObserver(grid)(tensors)
    assert cube.shape == (2, 4, 3, 40)
    column = (2 * HYDROGEN_MASS_FRACTION * tensors["x_h2"] * tensors["density"]).sum(1) * grid.distance.step
    torch.testing.assert_close(cube.sum(-1) * grid.velocity.step, column, rtol=1e-12, atol=0)
    # same in float32 to float32 rounding, with and without gradients (two code paths)
    t32 = field_tensors(fields)
    c32 = SimpleObserver(grid)(t32)
    torch.testing.assert_close(c32.sum(-1) * grid.velocity.step, column.float(), rtol=2e-6, atol=0)
    t32["density"].requires_grad_(True)
    torch.testing.assert_close(SimpleObserver(grid)(t32), c32, rtol=1e-6, atol=1e-6)


def test_tent_weights_place_gas_by_velocity():
    grid = TINY  # channels 5 km/s wide, centres -97.5 ... 97.5
    cells = {(3, 0, 0): (10.0, 2.5, 50.0), (5, 1, 1): (10.0, 5.0, 50.0), (7, 2, 2): (10.0, 150.0, 50.0),
             (8, 3, 0): (10.0, -99.0, 50.0)}
    cube = SimpleObserver(grid)(field_tensors(one_cell_field(grid, cells), dtype=torch.float64))[0].numpy()
    col = 10.0 * 0.71 * grid.distance.step / grid.velocity.step  # x_h2 = 0.5
    assert cube[0, 0, 20] == pytest.approx(col) and np.count_nonzero(cube[0, 0]) == 1  # on a centre
    assert cube[1, 1, 20] == pytest.approx(col / 2) and cube[1, 1, 21] == pytest.approx(col / 2)  # between
    assert np.abs(cube[2, 2]).max() == 0  # outside the window: dropped
    assert cube[3, 0, 0] == pytest.approx(col) and np.count_nonzero(cube[3, 0]) == 1  # outer half channel


def test_simple_observer_gradient_and_bad_input():
    grid = TINY
    t = field_tensors(random_field(grid, 2))
    t["velocity_los"].requires_grad_(True)
    t["density"].requires_grad_(True)
    weights = torch.linspace(0, 1, grid.velocity.steps)
    (SimpleObserver(grid)(t) * weights).sum().backward()
    assert torch.isfinite(t["velocity_los"].grad).all() and t["velocity_los"].grad.abs().sum() > 0
    assert t["density"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="missing"):
        SimpleObserver(grid)({"density": t["density"]})
    bad = {k: v.detach()[:, :-1] for k, v in t.items()}
    with pytest.raises(ValueError, match="grid expects"):
        SimpleObserver(grid)(bad)
    with pytest.raises(TypeError, match="dict"):
        SimpleObserver(grid)(random_field(grid, 2).density.values)
    with pytest.raises(TypeError, match="Grid"):
        SimpleObserver("SMALL")


# ============================================================================ LineObserver
def analytic_thin_integral(rho_h2_dr, x_tracer, t):
    """h c^3 A N_u / (8 pi k nu^2) [1 - (e^{T0/T} - 1)/(e^{T0/Tcmb} - 1)], in K km/s."""
    nu_col = n_upper(rho_h2_dr, x_tracer, t)
    factor = 1 - np.expm1(T0 / t) / np.expm1(T0 / 2.725)
    return H * C**3 * A_UL * nu_col / (8 * np.pi * K * NU**2) * factor / 1e3


@pytest.mark.parametrize("turbulent_b,temperature,velocity", [(2.0, 40.0, 3.0), (0.0, 10.0, 1.0), (0.0, 25.0, 2.5)])
def test_optically_thin_line_matches_analytic_formula(turbulent_b, temperature, velocity):
    # b = 0.08-0.12 km/s in 5 km/s channels for turbulent_b = 0: the line is far narrower than a channel
    grid = TINY
    cells = {(4, 1, 1): (1e-3, velocity, temperature), (9, 2, 0): (2e-3, -velocity, temperature)}
    field = one_cell_field(grid, cells)
    cube = LineObserver(grid, excitation="lte", turbulent_b=turbulent_b, beam=False)(field_tensors(field, dtype=torch.float32))[0]
    for (d, il, ib), (rho, _, t) in cells.items():
        expected = analytic_thin_integral(rho * 0.71 * grid.distance.step, 4e-6, t)
        got = float(cube[il, ib].double().sum()) * grid.velocity.step
        assert got == pytest.approx(expected, rel=1e-3)
    assert float(cube[0].abs().max()) == 0.0


@pytest.mark.parametrize("behind", [False, True])
def test_emitter_in_front_of_cold_cloud_is_seen_and_behind_is_absorbed(behind):
    grid = TINY
    emitter = (14 if behind else 2, 1, 1)
    cells = {emitter: (300.0, 12.0, 30.0), (8, 1, 1): (3000.0, 12.0, 3.0)}
    cube = LineObserver(grid, excitation="lte", beam=False)(field_tensors(one_cell_field(grid, cells)))[0, 1, 1]
    peak = float(cube.max())
    warm = float(j_rj(30.0) - j_rj(2.725))
    cold = float(j_rj(3.0) - j_rj(2.725))
    if behind:
        assert peak < cold + 0.01 * warm
    else:
        assert peak == pytest.approx(warm, rel=0.02)
        assert int(cube.argmax()) == 22  # channel [10, 15) km/s


def test_receding_gas_appears_at_positive_velocity():
    grid = TINY
    cube = LineObserver(grid, excitation="lte", beam=False).observe(one_cell_field(grid, {(6, 2, 1): (50.0, 62.0, 30.0)}))
    spectrum = cube.isel(lon=2, lat=1)
    assert float(spectrum.velocity[int(np.argmax(spectrum.values))]) == pytest.approx(62.5)
    assert float(spectrum.where(spectrum.velocity < 0).max()) < 1e-6 * float(spectrum.max())


def test_brightness_bounded_by_warmest_excitation_temperature():
    grid = TINY
    for seed in range(3):
        field = random_field(grid, seed, fill=0.7)
        cube = LineObserver(grid, excitation="lte", beam=False)(field_tensors(field, dtype=torch.float64))[0].numpy()
        temps = np.where(field.density.values > 0, field.temperature.values, np.nan)
        hottest = j_rj(np.nanmax(temps, axis=0)) - j_rj(2.725)
        coldest = j_rj(np.nanmin(temps, axis=0)) - j_rj(2.725)
        assert (cube.max(-1) <= hottest + 1e-9).all()
        assert (cube.min(-1) >= np.minimum(coldest, 0) - 1e-9).all()
        assert cube.max() > 1.0


@pytest.mark.parametrize("dust", [False, True])
def test_float32_matches_float64_numpy_reference(dust):
    field = random_field(TINY, 7, dust=dust)
    expected = reference_cube(field, turbulent_b=1.5, dust=dust)
    observer = LineObserver(TINY, excitation="lte", turbulent_b=1.5, dust=dust, beam=False)
    got = observer(field_tensors(field))[0].double().numpy()
    assert expected.max() > 5.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())
    got64 = observer(field_tensors(field, dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(got64, expected, rtol=1e-7, atol=1e-7 * expected.max())


@pytest.mark.parametrize("excitation, rtol", [("lte", 1e-6), ("escape", 2e-5)])
def test_windowed_channels_equal_full_evaluation_and_ray_batches_agree(excitation, rtol):
    # escape-probability excitation gives larger optical depths here (tau_int up to 70 km/s), so
    # float32 rounding in the different summation orders reaches ~1e-5 of the peak
    grid = TINY
    fields = [random_field(grid, 11, dust=True), random_field(grid, 12, dust=True)]
    t = field_tensors(fields)
    full = LineObserver(grid, dust=True, channel_window=None, excitation=excitation)(t)
    windowed = LineObserver(grid, dust=True, excitation=excitation)(t)
    torch.testing.assert_close(windowed, full, rtol=rtol, atol=rtol * float(full.abs().max()))
    for batch in (1, 5, 12, 25, 10**6):
        torch.testing.assert_close(LineObserver(grid, dust=True, ray_batch=batch, excitation=excitation)(t),
                                   windowed, rtol=0, atol=1e-6)
    # batched equals one sample at a time
    for i, field in enumerate(fields):
        torch.testing.assert_close(LineObserver(grid, dust=True, excitation=excitation)(field_tensors(field))[0],
                                   windowed[i], rtol=0, atol=1e-6)


def test_planck_output_and_dust_subtraction():
    grid = TINY
    thick = one_cell_field(grid, {(5, 0, 0): (2000.0, 0.0, 20.0)})
    rj = LineObserver(grid, excitation="lte", beam=False)(field_tensors(thick))[0, 0, 0].max()
    planck = LineObserver(grid, excitation="lte", beam=False, output="planck")(field_tensors(thick))[0, 0, 0].max()
    assert float(rj) == pytest.approx(float(j_rj(20.0) - j_rj(2.725)), rel=1e-4)
    assert float(planck) == pytest.approx(20.0 - 2.725, rel=1e-4)
    # dust alone (no tracer) leaves nothing after continuum subtraction
    shape = (grid.distance.steps, grid.lon.steps, grid.lat.steps)
    dusty = field_from_arrays(grid, density=np.full(shape, 1e5), x_tracer=0.0, temperature_dust=25.0)
    cube = LineObserver(grid, excitation="lte", dust=True, output="planck")(field_tensors(dusty))
    assert float(cube.abs().max()) < 1e-5


def test_subthermal_excitation_limits_in_the_observer():
    grid = TINY
    dense = one_cell_field(grid, {(5, 0, 0): (1e6, 0.0, 30.0)}, x_tracer=4e-12)
    thin = one_cell_field(grid, {(5, 0, 0): (1e-3, 0.0, 30.0)})
    for field, ratio in ((dense, (0.997, 1.003)), (thin, (0.0, 0.01))):
        t = field_tensors(field, dtype=torch.float64)
        lte = LineObserver(grid, excitation="lte", beam=False)(t).sum()
        sub = LineObserver(grid, beam=False, subthermal=True)(t).sum()
        assert ratio[0] <= float(sub / lte) <= ratio[1]


def test_line_observer_beam_spreads_a_point_source_and_keeps_its_flux():
    grid = TINY.replace(lon=Axis(-0.165, 0.165, 33), lat=Axis(-0.165, 0.165, 33), beam_fwhm=144.0)
    t = field_tensors(one_cell_field(grid, {(5, 16, 16): (1.0, 0.0, 30.0)}), dtype=torch.float64)
    sharp = LineObserver(grid, beam=False)(t)[0].sum(-1).numpy()
    smooth = LineObserver(grid)(t)[0].sum(-1).numpy()
    assert smooth.sum() == pytest.approx(sharp.sum(), rel=1e-9)
    x = np.arange(33) - 16
    for profile in (smooth.sum(1), smooth.sum(0)):
        sigma = math.sqrt((profile * x**2).sum() / profile.sum() - 1 / 12)
        assert sigma * math.sqrt(8 * math.log(2)) == pytest.approx(4.0, rel=1e-3)
    assert smooth.max() < 0.1 * sharp.max()


def test_line_observer_is_differentiable():
    grid = TINY
    t = field_tensors(random_field(grid, 5, fill=1.0, dust=True))
    for name in ("density", "temperature", "velocity_los"):
        t[name].requires_grad_(True)
    LineObserver(grid, dust=True, subthermal=True)(t).square().sum().backward()
    for name in ("density", "temperature", "velocity_los"):
        grad = t[name].grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_observe_returns_labelled_cubes():
    grid = TINY
    fields = [random_field(grid, 1), random_field(grid, 2)]
    one = LineObserver(grid).observe(fields[0])
    assert one.dims == ("lon", "lat", "velocity") and one.dtype == np.float32
    assert one.attrs["units"] == "K" and one.attrs["line"] == "13CO(2-1)"
    assert one.attrs["rest_frequency"] == pytest.approx(220.3986842)
    assert one.attrs["beam_fwhm"] == 30.0  # 30" is 0.21 px of TINY's 144" lon pixels: applied
    assert json.loads(one.attrs["observer"])["observer"] == "LineObserver"
    assert "seed 1" in one.attrs["source"]
    for name, unit in (("lon", "deg"), ("lat", "deg"), ("velocity", "km/s")):
        assert one[name].attrs["units"] == unit
    np.testing.assert_allclose(one.velocity.values, grid.velocity.centers())
    many = SimpleObserver(grid).observe(fields)
    assert many.dims == ("sample", "lon", "lat", "velocity") and many.sizes["sample"] == 2
    assert many.attrs["units"] == "solMass s / (km pc2)" and many.attrs["beam_fwhm"] == 0.0
    assert list(many.seed.values) == [1, 2]
    np.testing.assert_allclose(many.isel(sample=1).values, SimpleObserver(grid).observe(fields[1]).values)
    assert isinstance(many, xr.DataArray)
    with pytest.raises(ValueError, match="do not match"):
        LineObserver(SMALL).observe(fields[0])


def test_observers_take_xarray_fields_when_called():
    grid = TINY
    fields = [random_field(grid, 1), random_field(grid, 2)]
    for observer in (SimpleObserver(grid), LineObserver(grid, excitation="lte")):
        one = observer(fields[0])
        assert isinstance(one, xr.DataArray) and one.dims == ("lon", "lat", "velocity")
        xr.testing.assert_identical(one, observer.observe(fields[0]))
        many = observer(fields)
        assert many.dims[0] == "sample" and many.sizes["sample"] == 2
        tensor = observer(field_tensors(fields))
        np.testing.assert_allclose(tensor.numpy(), many.values, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="xarray field Dataset"):
        SimpleObserver(grid)(fields[0].density)


def test_line_observer_rejects_bad_settings():
    with pytest.raises(ValueError, match="output"):
        LineObserver(TINY, output="brightness")
    with pytest.raises(ValueError, match="ray_batch"):
        LineObserver(TINY, ray_batch=0)
    with pytest.raises(ValueError, match="turbulent_b"):
        LineObserver(TINY, turbulent_b=-1.0)
    with pytest.raises(ValueError, match="channel_window"):
        LineObserver(TINY, channel_window=1.0)
    with pytest.raises(ValueError, match="rest_frequency"):
        LineObserver(TINY.replace(rest_frequency=230.538, line="CO(2-1)"))
    t = field_tensors(random_field(TINY, 0))
    t["temperature"] = t["temperature"] * 0
    with pytest.raises(ValueError, match="> 0 K"):
        LineObserver(TINY)(t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    t = field_tensors(random_field(TINY, 3, dust=True))
    for obs in (SimpleObserver(TINY), LineObserver(TINY, dust=True)):
        cpu = obs(t)
        gpu = obs({k: v.cuda() for k, v in t.items()})
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4 * float(cpu.abs().max()))


def test_field_line_widths_replace_the_observer_default():
    """A field's own ``turbulent_b`` (one value per field, or per cell) sets its line widths."""
    grid = TINY
    cells = {(6, 2, 1): (2.0, 0.0, 30.0)}
    base = one_cell_field(grid, cells, x_tracer=1e-8)  # optically thin: the spectrum is the profile
    v = torch.as_tensor(grid.velocity.centers())

    def width(field, **kwargs):
        spectrum = LineObserver(grid, beam=False, excitation="lte", **kwargs)(field_tensors(field))[0, 2, 1]
        mean = (spectrum * v).sum() / spectrum.sum()
        return float(torch.sqrt((spectrum * (v - mean) ** 2).sum() / spectrum.sum()))

    def with_b(value):
        data = {k: base[k].values for k in ("density", "velocity_los", "temperature", "x_tracer")}
        return field_from_arrays(grid, **data, turbulent_b=value)

    narrow, wide = with_b(3.0), with_b(12.0)
    assert narrow["turbulent_b"].ndim == 0 and field_tensors([narrow, wide])["turbulent_b"].shape == (2, 1, 1, 1)
    thermal = 2 * 1.380649e-23 * 30.0 / (29 * 1.66053907e-27) / 1e6  # (km/s)^2
    for field, b in ((narrow, 3.0), (wide, 12.0)):  # sigma = b / sqrt(2), broadened by the channel width
        expected = math.sqrt((thermal + b * b) / 2 + grid.velocity.step ** 2 / 12)
        assert width(field, turbulent_b=0.5) == pytest.approx(expected, rel=0.05)
    assert width(base, turbulent_b=12.0) == pytest.approx(width(wide), rel=1e-4)
    per_cell = with_b(np.full((grid.distance.steps, grid.lon.steps, grid.lat.steps), 12.0))
    assert per_cell["turbulent_b"].ndim == 3 and width(per_cell) == pytest.approx(width(wide), rel=1e-4)
    t = field_tensors(wide)
    t["turbulent_b"] = torch.ones(1, 2, 1, 1)
    with pytest.raises(ValueError, match="turbulent_b"):
        LineObserver(grid)(t)
    with pytest.raises(ValueError, match="turbulent_b"):
        with_b(-1.0)
