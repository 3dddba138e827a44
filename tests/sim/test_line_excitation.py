"""LineObserver with non-LTE (escape-probability) excitation: limits, trapping, table cache,
several lines and molecules, bad input, pickling, gradients.

Only two excitation tables are built for real (13CO and CS, LVG, CMB background); they are
shared through the disk cache ($IRIS_NB_CACHE) and the process's memory.  The cache test
replaces the (slow) table build by a counting stand-in.
"""

import json
import math
import pickle
import warnings

import astropy.constants as const
import numpy as np
import pytest
import torch
import xarray as xr
from scipy import special

from iris_nb.sim import excitation_table
from iris_nb.sim.excitation import TemperatureClampWarning, solve_excitation
from iris_nb.sim.excitation_table import ExcitationTable, cache_dir
from iris_nb.sim.fields import HYDROGEN_MASS_FRACTION, field_tensors
from iris_nb.sim.molecule import Molecule
from iris_nb.sim.observers import LineObserver
from iris_nb.sim.radiative import h2_number_density_scale
from iris_nb.units import H2_MASS
from sim.test_observers import TINY, one_cell_field, random_field

H, K, C, AMU = const.h.value, const.k_B.value, const.c.value, const.u.value
PC_M = const.pc.value
M_SUN_PC3 = (const.M_sun / const.pc**3).to_value("kg / m3")
T_CMB = 2.725
N_SCALE = h2_number_density_scale()  # cm-3 of H2 per solMass/pc3 of H2
RHO_PER_N = 1.0 / (N_SCALE * 2 * HYDROGEN_MASS_FRACTION * 0.5)  # total density (x_h2 = 0.5) per cm-3 of H2
DV = TINY.velocity.step
DR = TINY.distance.step
FWHM_PER_B = 2 * math.sqrt(math.log(2))
TURBULENT_B = 2.0  # the observer's default, km/s


def cs_grid():
    cs = Molecule.load("CS")
    return TINY.replace(rest_frequency=float(cs.frequency[cs.transition("2-1")]), line="CS(2-1)")


def tensors(field, dtype=torch.float64):
    return field_tensors(field, dtype=dtype)


def line_data(molecule, transition):
    """(nu Hz, A s^-1, g_u, g_l, upper index, lower index, T0 K, mass u) from the LAMDA file."""
    m = Molecule.load(molecule)
    i = m.transition(transition)
    up, low = int(m.upper[i]), int(m.lower[i])
    nu = float(m.frequency[i]) * 1e9
    return nu, float(m.einstein_a[i]), float(m.weights[up]), float(m.weights[low]), up, low, H * nu / K, \
        float(m.molecular_mass)


def j_rj(t, t0):
    return t0 / math.expm1(t0 / t)


def thin_populations(molecule, n_h2, t_kin, column=0.0, fwhm=1.0):
    """Level populations from solve_excitation: LVG, CMB background, N/fwhm = column / fwhm."""
    return solve_excitation(molecule, n_h2, t_kin, column, fwhm, geometry="lvg", t_bg=T_CMB).populations.numpy()


def doppler_b(t_kin, mass=29.0):
    return math.sqrt(2 * K * t_kin / (mass * AMU) / 1e6 + TURBULENT_B**2)


def one_cell_spectrum(populations, n_h2, x_tracer, t_kin, v0, molecule="13CO", transition="2-1"):
    """Spectrum (K, per TINY channel) of one cell of TINY's depth seen against the CMB, in SI
    from the populations: integrated tau = c^3 A / (8 pi nu^3) N (x_l g_u/g_l - x_u), source
    J = T0 x_u / (x_l g_u/g_l - x_u), Gaussian profile averaged over each channel."""
    nu, a, g_u, g_l, up, low, t0, mass = line_data(molecule, transition)
    x_u, x_l = populations[up], populations[low]
    column = x_tracer * n_h2 * 1e6 * DR * PC_M  # molecules per m2
    tau_int = C**3 * a / (8 * math.pi * nu**3) * column * (x_l * g_u / g_l - x_u) / 1e3  # km/s
    source = t0 * x_u / (x_l * g_u / g_l - x_u)
    b = doppler_b(t_kin, mass)
    edges = TINY.velocity.edges()
    phi = (special.erf((edges[1:] - v0) / b) - special.erf((edges[:-1] - v0) / b)) / (2 * DV)
    return (source - j_rj(T_CMB, t0)) * -np.expm1(-tau_int * phi)


@pytest.fixture(scope="module")
def co_table():
    """The real 13CO LVG table (disk cache, else built once); module scope: set up before fresh_cache."""
    return ExcitationTable.get("13CO", "lvg", None, T_CMB)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty IRIS_NB_CACHE and an empty in-memory table store (both restored afterwards)."""
    monkeypatch.setenv("IRIS_NB_CACHE", str(tmp_path))
    monkeypatch.setattr(excitation_table, "_MEMORY", {})
    return tmp_path / "excitation"


# ============================================================================ physics limits
def test_dense_gas_gives_the_lte_line():
    # n_H2 = 1.5e8 - 4.5e8 cm-3 (beyond the table's 1e8 edge; 13CO thermalised there), 15-80 K,
    # x_tracer small enough for peak optical depths ~0.1; two rays hold two overlapping clouds
    n = 1.5e8 * RHO_PER_N
    cells = {(3, 0, 0): (n, 5.0, 20.0), (8, 0, 0): (2 * n, -20.0, 60.0), (5, 1, 2): (n, 30.0, 35.0),
             (10, 1, 2): (n, 28.0, 15.0), (12, 3, 1): (3 * n, 0.0, 80.0), (2, 2, 2): (n, 52.0, 27.0)}
    t = tensors(one_cell_field(TINY, cells, x_tracer=1e-12))
    escape = LineObserver(TINY, beam=False)(t)[0].numpy()
    lte = LineObserver(TINY, excitation="lte", beam=False)(t)[0].numpy()
    for il, ib in {(0, 0), (1, 2), (3, 1), (2, 2)}:
        assert lte[il, ib].max() > 1.0
        assert escape[il, ib].sum() == pytest.approx(lte[il, ib].sum(), rel=0.01)
        assert escape[il, ib].max() == pytest.approx(lte[il, ib].max(), rel=0.01)
    assert np.abs(escape[1, 0]).max() == 0.0  # no gas on that ray


@pytest.mark.parametrize("n_h2, t_kin", [(1e3, 50.0), (1e2, 50.0), (2.2e3, 37.0)])
def test_optically_thin_line_from_solved_populations(n_h2, t_kin):
    x_tracer, trapping = 1e-10, 5.0
    t = tensors(one_cell_field(TINY, {(5, 1, 1): (n_h2 * RHO_PER_N, 3.0, t_kin)}, x_tracer=x_tracer))
    escape = LineObserver(TINY, beam=False, trapping_length=trapping)(t)[0, 1, 1].numpy()
    lte = LineObserver(TINY, excitation="lte", beam=False)(t)[0, 1, 1].numpy()
    got = escape.sum() * DV

    # the cell's trapping column: no velocity gradient, so the full trapping length
    nu, a, g_u, g_l, up, low, t0, _ = line_data("13CO", "2-1")
    fwhm = FWHM_PER_B * doppler_b(t_kin)
    column = n_h2 * x_tracer * trapping * PC_M * 100  # cm-2
    x = thin_populations("13CO", n_h2, t_kin, column, fwhm)
    # integral = tau_int_scale * x_tracer * rho_H2 * (T0 x_u - J(T_CMB) (x_l g_u/g_l - x_u)), K km/s
    h2_per_m2 = n_h2 / N_SCALE * M_SUN_PC3 * DR * PC_M / H2_MASS.to_value("kg")  # rho_H2 dr in H2 / m2
    tau_int_scale = C**3 * a / (8 * math.pi * nu**3) * h2_per_m2 / 1e3
    expected = tau_int_scale * x_tracer * (t0 * x[up] - j_rj(T_CMB, t0) * (x[low] * g_u / g_l - x[up]))
    assert got == pytest.approx(expected, rel=0.02)
    assert int(escape.argmax()) == 20  # channel [0, 5) km/s

    t_ex = t0 / math.log(x[low] * g_u / (g_l * x[up]))
    assert t_ex < 0.3 * t_kin  # subthermal: n_H2 below 13CO(2-1)'s critical density
    if n_h2 <= 1e2:
        # far below LTE; at 1e3 cm-3 the thin integrals agree to 1% although T_ex = 7 K: the
        # J = 2 population that sub-thermal J >= 3 lose makes up for the lower T_ex
        assert got / (lte.sum() * DV) < 0.5


def test_trapping_brightens_subthermal_line_and_vanishes_for_short_lengths():
    n_h2, t_kin, x_tracer, v0 = 1e3, 30.0, 1e-6, 0.0
    t = tensors(one_cell_field(TINY, {(5, 1, 1): (n_h2 * RHO_PER_N, v0, t_kin)}, x_tracer=x_tracer))
    spectra = [LineObserver(TINY, beam=False, trapping_length=length)(t)[0, 1, 1].numpy()
               for length in (1e-7, 0.5, 5.0, 50.0)]
    totals = [s.sum() for s in spectra]
    assert all(b > 1.02 * a for a, b in zip(totals, totals[1:])), totals
    # 1e-7 pc traps nothing: the populations are the optically thin (beta = 1) solution
    expected = one_cell_spectrum(thin_populations("13CO", n_h2, t_kin), n_h2, x_tracer, t_kin, v0)
    assert expected.max() > 1.0  # optical depth ~0.5 at the peak: populations matter, not just N_u
    np.testing.assert_allclose(spectra[0], expected, rtol=0.02, atol=1e-3 * expected.max())
    # 5 pc of trapping raises the line clearly above it
    assert spectra[2].max() > 1.5 * expected.max()


# ============================================================================ table cache
def test_excitation_table_cache_writes_loads_and_rebuilds(co_table, fresh_cache, monkeypatch):
    # the build is replaced by a counting stand-in that returns the real 13CO table's numbers
    builds = []

    def counting_build(molecule, geometry="lvg", ortho_para=None, t_bg=2.73, device=None):
        builds.append(geometry)
        return ExcitationTable(Molecule.load(molecule), {"geometry": geometry, "ortho_para": ortho_para,
                                                         "t_bg": t_bg}, co_table.log_populations.clone())

    monkeypatch.setattr(ExcitationTable, "build", staticmethod(counting_build))
    first = ExcitationTable.get("13CO", "lvg", None, T_CMB)
    files = sorted(fresh_cache.iterdir())
    assert builds == ["lvg"] and len(files) == 1 and files[0].suffix == ".pt"
    assert files[0].parent == cache_dir()
    key = ExcitationTable.key(Molecule.load("13CO"), "lvg", None, T_CMB)
    assert key in files[0].name
    assert ExcitationTable.get("13CO", "lvg", None, T_CMB) is first  # memory

    excitation_table._MEMORY.clear()
    monkeypatch.setattr(ExcitationTable, "build", staticmethod(lambda *a, **k: pytest.fail("rebuilt")))
    loaded = ExcitationTable.get("13CO", "lvg", None, T_CMB)
    assert loaded is not first and torch.equal(loaded.log_populations, first.log_populations)
    assert loaded.settings == {"geometry": "lvg", "ortho_para": None, "t_bg": T_CMB}

    size = files[0].stat().st_size
    with open(files[0], "r+b") as fh:
        fh.truncate(size // 2)
    excitation_table._MEMORY.clear()
    monkeypatch.setattr(ExcitationTable, "build", staticmethod(counting_build))
    rebuilt = ExcitationTable.get("13CO", "lvg", None, T_CMB)
    assert builds == ["lvg", "lvg"]
    assert torch.equal(rebuilt.log_populations, first.log_populations)
    assert files[0].stat().st_size == size  # rewritten whole
    assert torch.load(files[0], weights_only=True)["key"] == key

    ExcitationTable.get("13CO", "sphere", None, T_CMB)
    assert builds == ["lvg", "lvg", "sphere"]
    sphere_key = ExcitationTable.key(Molecule.load("13CO"), "sphere", None, T_CMB)
    names = sorted(p.name for p in fresh_cache.iterdir())  # no temporary files left behind
    assert names == sorted([f"13co-{key}.pt", f"13co-{sphere_key}.pt"])
    for other in (("sphere", None, T_CMB), ("lvg", 3.0, T_CMB), ("lvg", None, 2.73)):
        assert ExcitationTable.key(Molecule.load("13CO"), *other) != key


# ============================================================================ lines and molecules
def test_several_transitions_at_once():
    fields = [random_field(TINY, 3, fill=0.7), random_field(TINY, 4, fill=0.7)]
    t = field_tensors(fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TemperatureClampWarning)  # random_field reaches 3 K
        both = LineObserver(TINY, transition=("1-0", "2-1"))(t)
        single = LineObserver(TINY, transition="2-1")(t)
        # the 1-0 line alone, on a grid at its own rest frequency (same velocity axis and beam)
        nu_10 = line_data("13CO", "1-0")[0] / 1e9
        alone = LineObserver(TINY.replace(rest_frequency=nu_10, line="13CO(1-0)"), transition="1-0")(t)
        cube = LineObserver(TINY, transition=("1-0", "2-1")).observe(fields[0])
        many = LineObserver(TINY, transition=("1-0", "2-1")).observe(fields)
    assert both.shape == (2, 2, 4, 3, 40)
    assert torch.equal(both[:, 1], single)
    assert torch.equal(both[:, 0], alone)
    assert float(both[:, 0].max()) > 1.0 and not torch.allclose(both[:, 0], both[:, 1])
    assert isinstance(cube, xr.DataArray) and cube.dims == ("transition", "lon", "lat", "velocity")
    assert list(cube.transition.values) == ["1-0", "2-1"]
    np.testing.assert_array_equal(cube.values, both[0].numpy())
    assert many.dims == ("sample", "transition", "lon", "lat", "velocity")
    np.testing.assert_array_equal(many.values, both.numpy())
    with pytest.raises(ValueError, match="rest_frequency"):
        LineObserver(cs_grid(), transition=("1-0", "2-1"))
    with pytest.raises(ValueError, match="rest_frequency"):
        LineObserver(cs_grid())


def test_cs_line_on_its_own_grid():
    grid = cs_grid()
    assert grid.rest_frequency == pytest.approx(97.9809533)
    dense, moderate = 1.5e8, 1e4  # cm-3: thermalised, and below CS(2-1)'s critical density
    cells = {(5, 0, 0): (dense * RHO_PER_N, 12.0, 30.0), (5, 2, 1): (moderate * RHO_PER_N, 12.0, 30.0)}
    t = tensors(one_cell_field(grid, cells, x_tracer=1e-14))
    t["x_tracer"][0, 5, 2, 1] = 1e-9  # similar column of CS in both cells
    escape = LineObserver(grid, molecule="CS", transition="2-1", beam=False)(t)[0].numpy()
    lte = LineObserver(grid, molecule="CS", transition="2-1", excitation="lte", beam=False)(t)[0].numpy()
    assert int(escape[0, 0].argmax()) == 22 and int(escape[2, 1].argmax()) == 22  # channel [10, 15) km/s
    assert escape[0, 0].sum() == pytest.approx(lte[0, 0].sum(), rel=0.02)
    assert escape[2, 1].max() > 0.5 and escape[2, 1].sum() < 0.5 * lte[2, 1].sum()
    # the line from the populations solved directly, trapped over the default 5 pc
    fwhm = FWHM_PER_B * doppler_b(30.0, mass=line_data("CS", "2-1")[-1])
    x = thin_populations("CS", moderate, 30.0, moderate * 1e-9 * 5.0 * PC_M * 100, fwhm)
    expected = one_cell_spectrum(x, moderate, 1e-9, 30.0, 12.0, molecule="CS")
    np.testing.assert_allclose(escape[2, 1], expected, rtol=0.02, atol=1e-3 * expected.max())
    observer = LineObserver(grid, molecule="cs", transition=(2, 1))
    assert observer.line.name == "CS(2-1)" and observer.config["molecule"] == "CS"


# ============================================================================ bad input
def test_bad_molecule_transition_and_settings():
    with pytest.raises(ValueError, match="unknown molecule") as err:
        LineObserver(TINY, molecule="H2O")
    for name in Molecule.shipped():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="no radiative transition"):
        LineObserver(TINY, transition="45-44")
    with pytest.raises(ValueError, match="excitation must be one of"):
        LineObserver(TINY, excitation="nlte")
    with pytest.raises(ValueError, match="contradicts"):
        LineObserver(TINY, subthermal=True, excitation="escape")
    assert LineObserver(TINY, subthermal=True).excitation == "subthermal"
    for bad in (0.0, -1.0, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="trapping_length"):
            LineObserver(TINY, trapping_length=bad)
    with pytest.raises(ValueError, match="geometry"):
        LineObserver(TINY, geometry="cube")


def test_nan_density_is_refused():
    t = tensors(one_cell_field(TINY, {(5, 1, 1): (100.0, 0.0, 30.0)}), dtype=torch.float32)
    t["density"][0, 3, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="'density'"):
        LineObserver(TINY)(t)


@pytest.mark.parametrize("t_kin", [2.0, 2000.0])
def test_temperatures_outside_the_table_warn_and_stay_finite(t_kin):
    cells = {(5, 1, 1): (300.0, 0.0, t_kin), (7, 2, 2): (300.0, 10.0, 40.0)}
    t = tensors(one_cell_field(TINY, cells, temperature=40.0), dtype=torch.float32)
    with pytest.warns(TemperatureClampWarning, match="5-1000 K") as record:
        cube = LineObserver(TINY)(t)
    assert torch.isfinite(cube).all() and float(cube[0, 2, 2].max()) > 0.1
    assert record[0].filename == __file__  # the warning names the caller's line, not torch's
    with warnings.catch_warnings():
        warnings.simplefilter("error", TemperatureClampWarning)  # in range: no warning
        t["temperature"][0, 5, 1, 1] = 40.0
        LineObserver(TINY)(t)


# ============================================================================ pickling, gradients, config
def test_pickled_observer_reloads_its_table_from_disk(co_table, monkeypatch):
    field = random_field(TINY, 8, fill=0.7)
    field["temperature"] = field.temperature.clip(10, 100)
    t = field_tensors(field)
    observer = LineObserver(TINY, trapping_length=2.0)
    expected = observer(t)
    assert observer.table is co_table
    blob = pickle.dumps(observer)
    assert len(blob) < 1_000_000 < co_table.log_populations.numel() * 4
    monkeypatch.setattr(excitation_table, "_MEMORY", {})  # as in a fresh worker process
    monkeypatch.setattr(ExcitationTable, "build", staticmethod(lambda *a, **k: pytest.fail("rebuilt")))
    clone = pickle.loads(blob)
    assert clone._table is None and clone.trapping_length == 2.0
    assert torch.equal(clone(t), expected)
    assert torch.equal(clone.table.log_populations, co_table.log_populations)


def test_escape_observation_is_differentiable():
    field = random_field(TINY, 5, fill=1.0)
    field["temperature"] = field.temperature.clip(10, 100)
    t = field_tensors(field)
    for name in ("density", "temperature", "velocity_los", "x_tracer"):
        t[name].requires_grad_(True)
    LineObserver(TINY)(t).square().sum().backward()
    for name in ("density", "temperature", "velocity_los", "x_tracer"):
        grad = t[name].grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["density", "temperature"])
def test_escape_gradient_matches_finite_differences(name):
    # subthermal 13CO (3e3 cm-3, 30 K): the populations change with density and temperature
    t = tensors(one_cell_field(TINY, {(5, 1, 1): (3e3 * RHO_PER_N, 0.0, 30.0)}, x_tracer=1e-7))
    observer = LineObserver(TINY, beam=False)
    t[name].requires_grad_(True)
    observer(t).sum().backward()
    autograd = float(t[name].grad[0, 5, 1, 1])
    step = 1e-4 * float(t[name].detach()[0, 5, 1, 1])
    values = []
    for sign in (1, -1):
        shifted = {k: v.detach().clone() for k, v in t.items()}
        shifted[name][0, 5, 1, 1] += sign * step
        values.append(float(observer(shifted).sum()))
    assert autograd == pytest.approx((values[0] - values[1]) / (2 * step), rel=0.05)


def test_config_records_the_excitation_settings():
    config = LineObserver(TINY, trapping_length=3.0, geometry="sphere").config
    assert config["excitation"] == "escape" and config["geometry"] == "sphere"
    assert config["trapping_length"] == 3.0 and config["ortho_para"] is None
    assert config["molecule"] == "13CO" and config["transition"] == "2-1" and config["line"] == "13CO(2-1)"
    multi = LineObserver(TINY, transition=("1-0", "2-1")).config
    assert multi["transition"] == ["1-0", "2-1"] and multi["trapping_length"] == 5.0
    assert multi["geometry"] == "lvg"
    # LTE and sub-thermal 13CO(2-1) keep the keys they had before non-LTE excitation existed
    lte = LineObserver(TINY, excitation="lte").config
    assert lte["subthermal"] is False and not {"excitation", "trapping_length", "geometry"} & set(lte)
    sub = LineObserver(TINY, excitation="subthermal").config
    assert sub["subthermal"] is True and sub["critical_density"] == 1e4 and "trapping_length" not in sub
    lte_multi = LineObserver(TINY, transition=("1-0", "2-1"), excitation="lte").config
    assert lte_multi["excitation"] == "lte" and "trapping_length" not in lte_multi
    cs = LineObserver(cs_grid(), molecule="CS", transition="2-1", trapping_length=1.5)
    assert cs.config["molecule"] == "CS" and cs.config["trapping_length"] == 1.5
    cube = cs.observe(one_cell_field(cs_grid(), {(5, 1, 1): (100.0, 0.0, 30.0)}, x_tracer=1e-9))
    assert json.loads(cube.attrs["observer"]) == json.loads(json.dumps(cs.config))
    assert cube.attrs["line"] == "CS(2-1)"
