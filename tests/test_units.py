import math

import astropy.constants as const
import astropy.units as u
import pytest

from iris_nb import units


def test_mass_and_number_density_conversions():
    factor = units.density_scale("Msun/pc3", "g/cm3")
    assert factor == pytest.approx((1 * u.Msun / u.pc**3).to_value(u.g / u.cm**3))
    n_per_msun_pc3 = units.density_scale("Msun/pc3", "cm-3")
    expected = (1 * u.Msun / u.pc**3 / (2.01588 * u.u)).to_value(u.cm**-3)
    assert n_per_msun_pc3 == pytest.approx(expected)
    assert units.density_scale("cm-3", "Msun/pc3") == pytest.approx(1 / expected)


def test_paper_loss_normalisation_in_msun_per_pc3():
    # DESIGN.md section 6: 1e-19 kg/m^3 is about 1.478 Msun/pc^3
    assert units.density_scale("kg/m3", "Msun/pc3") * 1e-19 == pytest.approx(1.478, rel=1e-3)


def test_brightness_scale_for_temperatures_and_fluxes():
    assert units.brightness_scale("mK", 220.4) == pytest.approx(1e-3)
    assert units.brightness_scale("K", 220.4) == 1.0
    # radio astronomers' rule: T = 1.222e6 S / (nu_GHz^2 bmaj bmin) for S in Jy/beam, beam in arcsec
    nu, bmaj, bmin = 220.3986842, 30.0, 24.0
    expected = 1.222e6 / (nu**2 * bmaj * bmin)
    assert units.brightness_scale("Jy/beam", nu, (bmaj, bmin)) == pytest.approx(expected, rel=2e-3)
    # Rayleigh-Jeans for surface brightness
    rj = const.c.value**2 / (2 * const.k_B.value * (nu * 1e9) ** 2) * 1e-26
    assert units.brightness_scale("Jy/sr", nu) == pytest.approx(rj, rel=1e-9)
    assert units.rayleigh_jeans_factor(nu) * 1e-26 == pytest.approx(rj, rel=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: units.brightness_scale("Jy/beam", 220.4), "no beam is known"),
        (lambda: units.brightness_scale("km/s", 220.4), "not a brightness"),
        (lambda: units.parse_unit(None, "cube data"), "cube data has no units"),
        (lambda: units.parse_unit("furlongs per K", "cube data"), "cannot parse"),
        (lambda: units.density_scale("Msun/pc3", "K"), "cannot convert density"),
        (lambda: units.per_si("K", "density"), "not a unit of density"),
        (lambda: units.per_si("K", "pressure"), "unknown unit space"),
    ],
)
def test_bad_units_give_actionable_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("space", sorted(units.SI_UNITS))
def test_model_unit_factors_round_trip(space):
    unit = units.DEFAULT_MODEL_UNITS[space]
    factor = units.per_si(unit, space)
    assert units.unit_from_per_si(factor, space) == u.Unit(unit)
    odd = units.unit_from_per_si(7.0, space)
    assert math.isclose((1.0 * units.SI_UNITS[space]).to_value(odd), 7.0, rel_tol=1e-12)


def test_msun_alias_is_accepted():
    assert units.parse_unit("Msun/pc3") == u.solMass / u.pc**3


def test_input_space_names_and_the_old_codes():
    assert all(units.input_space_name(name) == name for name in units.INPUT_SPACES)
    assert [units.input_space_name(code) for code in ("T", "I", "vrho")] == list(units.INPUT_SPACES)
    assert set(units.INPUT_SPACES) <= set(units.SI_UNITS)
    with pytest.raises(ValueError, match=r"in_space must be one of \['temperature', 'intensity', 'v_density'\].*'K'"):
        units.input_space_name("K", "in_space")
