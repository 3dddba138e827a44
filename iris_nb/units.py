"""Physical units: parsing, brightness and density conversions, model unit factors.

Everything here is a plain function of astropy units and floats; nothing imports torch.

Four *spaces* of quantities appear in reversion, each with an SI reference unit:

=============  ===========================  ==========================================
space          SI reference                 meaning
=============  ===========================  ==========================================
temperature    K                            brightness temperature of a line cube
intensity      W m-2 Hz-1 sr-1 (= kg s-2)   specific intensity of a line cube
v_density      kg s m-3                     velocity-resolved column density (vrho)
density        kg m-3                       (H2) mass density of a top-down map
=============  ===========================  ==========================================

A model stores, for each space, how many of its own units make one SI unit
(``per_si``), the same convention as the reference IRIS checkpoints.
"""

from __future__ import annotations

import math

import astropy.constants as const
import astropy.units as u

__all__ = [
    "SI_UNITS",
    "DEFAULT_MODEL_UNITS",
    "INPUT_SPACES",
    "input_space_name",
    "H2_MASS",
    "parse_unit",
    "h2_number_density",
    "density_scale",
    "brightness_scale",
    "per_si",
    "unit_from_per_si",
    "rayleigh_jeans_factor",
    "beam_solid_angle",
]

SI_UNITS = {
    "temperature": u.K,
    "intensity": u.W / u.m**2 / u.Hz / u.sr,
    "v_density": u.kg * u.s / u.m**3,
    "density": u.kg / u.m**3,
}

DEFAULT_MODEL_UNITS = {
    "temperature": "K",
    "intensity": "MJy / sr",
    "v_density": "solMass s / (km pc2)",
    "density": "solMass / pc3",
}

# Named units tried when a bare checkpoint only gives a scale factor.
_NICE_UNITS = {
    "temperature": ["K", "mK"],
    "intensity": ["MJy / sr", "Jy / sr", "W / (m2 Hz sr)", "erg / (s cm2 Hz sr)"],
    "v_density": ["solMass s / (km pc2)", "g s / (cm2 km)", "kg s / m3"],
    "density": ["solMass / pc3", "g / cm3", "kg / m3"],
}

INPUT_SPACES = ("temperature", "intensity", "v_density")
"""What a network can take as input: the names of the first three spaces above."""

_OLD_INPUT_SPACES = {"T": "temperature", "I": "intensity", "vrho": "v_density"}
# The old short codes, still found in model files, store attrs and run configs written before the rename.

H2_MASS = 2.01588 * u.u
"""Mass of one H2 molecule."""


def parse_unit(value, what: str = "value") -> u.UnitBase:
    """Turn a string, unit or ``None`` into an astropy unit, with an actionable error."""
    if isinstance(value, u.UnitBase):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"{what} has no units; set attrs['units'] (e.g. 'K', 'km/s', 'deg') "
            "or pass the unit explicitly"
        )
    if isinstance(value, u.Quantity):
        return u.Unit(value)
    try:
        return u.Unit(str(value).replace("Msun", "solMass"), parse_strict="raise")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what} has units {value!r} that astropy cannot parse ({err})") from None


def input_space_name(value, what: str = "input_space") -> str:
    """The canonical name of an input space: ``"temperature"``, ``"intensity"`` or ``"v_density"``.

    The old codes ``"T"``, ``"I"`` and ``"vrho"`` (in model files, store attrs and run
    configs written before the rename) are accepted and translated.
    """
    name = _OLD_INPUT_SPACES.get(value, value) if isinstance(value, str) else value
    if name not in INPUT_SPACES:
        raise ValueError(
            f"{what} must be one of {list(INPUT_SPACES)} (brightness temperature, specific intensity, "
            f"velocity-resolved column density), got {value!r}"
        )
    return name


def h2_number_density() -> list:
    """Equivalency between H2 mass density and H2 number density (n = rho / m_H2)."""
    m = H2_MASS.to_value(u.kg)
    return [(u.kg / u.m**3, u.m**-3, lambda rho: rho / m, lambda n: n * m)]


def density_scale(from_unit, to_unit) -> float:
    """Factor ``f`` with ``value_in_to = f * value_in_from`` for densities.

    Both units may be mass densities (``Msun/pc3``, ``g/cm3``) or H2 number densities
    (``cm-3``); number and mass density are related by the H2 molecular mass.
    """
    src = parse_unit(from_unit, "density")
    dst = parse_unit(to_unit, "density")
    try:
        return float((1.0 * src).to_value(dst, equivalencies=h2_number_density()))
    except u.UnitConversionError:
        raise ValueError(
            f"cannot convert density from {src} to {dst}: use a mass density (e.g. 'Msun/pc3', "
            "'g/cm3') or an H2 number density (e.g. 'cm-3')"
        ) from None


def beam_solid_angle(fwhm_major_arcsec: float, fwhm_minor_arcsec: float | None = None) -> u.Quantity:
    """Solid angle of a Gaussian beam, ``pi / (4 ln 2) * FWHM_maj * FWHM_min`` in sr."""
    minor = fwhm_major_arcsec if fwhm_minor_arcsec is None else fwhm_minor_arcsec
    area = math.pi / (4.0 * math.log(2.0)) * fwhm_major_arcsec * minor * u.arcsec**2
    return area.to(u.sr)


def rayleigh_jeans_factor(rest_frequency_ghz: float) -> float:
    """Kelvin per SI intensity unit: ``T = c^2 I / (2 k nu^2)`` at the line frequency."""
    nu = rest_frequency_ghz * 1e9
    return const.c.value**2 / (2.0 * const.k_B.value * nu**2)


def brightness_scale(from_unit, rest_frequency_ghz: float, beam_fwhm_arcsec=None) -> float:
    """Factor converting a cube's brightness unit to Rayleigh-Jeans brightness temperature (K).

    ``from_unit`` may be a temperature (``K``, ``mK``), a surface brightness (``Jy/sr``,
    ``W m-2 Hz-1 sr-1``) or a flux per beam (``Jy/beam``), which needs the beam FWHM in
    arcsec (a number, or a ``(major, minor)`` pair).
    """
    src = parse_unit(from_unit, "cube data")
    if src.is_equivalent(u.K):
        return float((1.0 * src).to_value(u.K))
    nu = rest_frequency_ghz * u.GHz
    if src.is_equivalent(u.Jy / u.beam) or "beam" in str(src):
        if beam_fwhm_arcsec is None:
            raise ValueError(
                f"cube data are in {src} but no beam is known: give the beam FWHM "
                "(FITS BMAJ/BMIN, or beam_fwhm= in arcsec) to convert to K"
            )
        if isinstance(beam_fwhm_arcsec, (tuple, list)):
            omega = beam_solid_angle(*beam_fwhm_arcsec)
        else:
            omega = beam_solid_angle(float(beam_fwhm_arcsec))
        per_sr = (1.0 * src * u.beam).to_value(u.Jy) / omega.to_value(u.sr)
        return per_sr * float((1.0 * u.Jy / u.sr).to_value(u.K, equivalencies=u.brightness_temperature(nu)))
    try:
        return float((1.0 * src).to_value(u.K, equivalencies=u.brightness_temperature(nu)))
    except u.UnitConversionError:
        raise ValueError(
            f"cube data are in {src}, which is not a brightness: expected K, Jy/beam or Jy/sr"
        ) from None


def per_si(unit, space: str) -> float:
    """How many ``unit`` make one SI unit of ``space`` (the checkpoint convention)."""
    if space not in SI_UNITS:
        raise ValueError(f"unknown unit space {space!r}; expected one of {sorted(SI_UNITS)}")
    target = parse_unit(unit, space)
    try:
        return float((1.0 * SI_UNITS[space]).to_value(target))
    except u.UnitConversionError:
        raise ValueError(f"{target} is not a unit of {space} (SI: {SI_UNITS[space]})") from None


def unit_from_per_si(factor: float, space: str, rtol: float = 1e-5) -> u.UnitBase:
    """The unit of which ``factor`` make one SI unit; a named unit when one matches."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"unit factor for {space} must be a positive number, got {factor}")
    for name in _NICE_UNITS[space]:
        if math.isclose(per_si(name, space), factor, rel_tol=rtol):
            return u.Unit(name)
    return u.CompositeUnit(1.0 / factor, [SI_UNITS[space]], [1])
