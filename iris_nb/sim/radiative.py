"""Per-cell physics of a rotational line in (near-)LTE: level populations, opacities, profiles.

Every function works on torch tensors of any shape (and keeps their dtype and device), so the
observers can call them on ``(distance, rays)`` blocks and differentiate through them.  The
conventions, from DESIGN.md section 4:

* intensities are expressed as Rayleigh-Jeans temperatures, ``J = c^2 I / (2 k nu^2)`` in K,
  so the source function of gas at excitation temperature ``T`` is
  ``J(T) = T0 / (exp(T0 / T) - 1)`` with ``T0 = h nu / k``;
* velocities are in km/s, so a line profile is per km/s and an integrated optical depth
  (the optical depth times the profile width) is in km/s;
* densities are in solMass / pc3 and path lengths in pc, as in a physical field.

The transfer itself (cell by cell, from the far side towards the observer) lives in
:mod:`iris_nb.sim.transfer`; :func:`transfer_step` is the update it applies to one cell.
"""

from __future__ import annotations

import dataclasses
import math

import astropy.constants as const
import astropy.units as u
import torch

from ..units import H2_MASS

__all__ = [
    "LineConstants",
    "THIRTEEN_CO_21",
    "T_CMB",
    "DUST_OPACITY_230GHZ",
    "DUST_BETA",
    "GAS_TO_DUST",
    "DEFAULT_CRITICAL_DENSITY",
    "line_temperature",
    "rj_temperature",
    "planck_brightness_temperature",
    "partition_function",
    "upper_level_factor",
    "subthermal_excitation_temperature",
    "doppler_parameter",
    "channel_profile",
    "scaled_channel_profile",
    "line_opacity_scale",
    "dust_opacity_scale",
    "h2_number_density_scale",
    "transfer_step",
]

T_CMB = 2.725
"""Temperature of the cosmic microwave background, K."""

DUST_OPACITY_230GHZ = 0.899
"""Dust mass absorption coefficient at 230 GHz (1.3 mm), cm2 per g of dust.

Ossenkopf & Henning (1994), grains with thin ice mantles coagulated at 1e6 cm-3."""

DUST_BETA = 1.8
"""Dust emissivity index: the opacity scales as ``(nu / 230 GHz) ** DUST_BETA``."""

GAS_TO_DUST = 100.0
"""Total gas mass per dust mass."""

DEFAULT_CRITICAL_DENSITY = 1e4
"""Critical density of 13CO(2-1) for collisions with H2, cm-3 (order of magnitude, 20-100 K)."""

_H = const.h.value
_K = const.k_B.value
_C = const.c.value
_AMU = const.u.value


@dataclasses.dataclass(frozen=True)
class LineConstants:
    """Molecular data of one rotational transition ``J_u -> J_u - 1`` of a linear rotor.

    Attributes: ``name``; ``rest_frequency`` (GHz); ``einstein_a`` (A_ul, s^-1); ``g_upper``,
    ``g_lower`` (statistical weights); ``upper_energy`` (E_u / k, K); ``rotational_constant``
    (B0, GHz); ``molecular_mass`` (u).
    """

    name: str
    rest_frequency: float
    einstein_a: float
    g_upper: int
    g_lower: int
    upper_energy: float
    rotational_constant: float
    molecular_mass: float

    @property
    def t0(self) -> float:
        """Temperature equivalent of the line photon, ``h nu / k``, K."""
        return line_temperature(self.rest_frequency)

    @property
    def lower_energy(self) -> float:
        """E_l / k = E_u / k - h nu / k, K."""
        return self.upper_energy - self.t0

    @property
    def rotational_temperature(self) -> float:
        """``h B0 / k``, K: the level energies are ``J (J + 1)`` times this."""
        return _H * self.rotational_constant * 1e9 / _K


THIRTEEN_CO_21 = LineConstants(
    name="13CO(2-1)", rest_frequency=220.3986842, einstein_a=6.038e-7, g_upper=5, g_lower=3,
    upper_energy=15.87, rotational_constant=55.101, molecular_mass=29.0,
)
"""13CO J = 2-1 (DESIGN.md section 4)."""


# ----------------------------------------------------------------------- radiation
def line_temperature(frequency_ghz: float) -> float:
    """Temperature equivalent of a photon of ``frequency_ghz`` GHz, ``h nu / k``, K."""
    return _H * float(frequency_ghz) * 1e9 / _K


def rj_temperature(temperature, t0: float):
    """Planck intensity as a Rayleigh-Jeans temperature, ``J(T) = T0 / (exp(T0 / T) - 1)``.

    ``temperature`` (K, > 0, any shape); ``t0 = h nu / k`` (K).  Returns K, same shape.
    Stable for any ``T > 0`` (no overflow for ``T << T0``).
    """
    x = t0 / temperature
    return t0 * torch.exp(-x) / -torch.expm1(-x)


def planck_brightness_temperature(intensity, t0: float):
    """Invert :func:`rj_temperature`: the temperature of a black body of that intensity, K.

    ``intensity`` is a Rayleigh-Jeans temperature (K, > 0); returns ``T0 / ln(1 + T0 / J)``.
    """
    return t0 / torch.log1p(t0 / intensity.clamp_min(torch.finfo(intensity.dtype).tiny))


def partition_function(temperature, rotational_temperature: float):
    """Rotational partition function of a linear rotor, ``Q(T) = sum_J (2J+1) exp(-B J(J+1) / T)``.

    ``temperature`` (K, > 0, any shape); ``rotational_temperature`` = ``h B0 / k`` (K).
    Below ``8 B`` (21 K for CO) the sum is evaluated term by term up to ``J = 14`` (the next
    term is < 1e-12 of the total); above, the asymptotic series
    ``Q = (T/B) (1 + x/3 + x^2/15 + 4x^3/315 + x^4/315)``, ``x = B/T``, agrees with the full sum
    to better than 1e-7 (float32 precision).  Returns a dimensionless tensor, same shape.
    """
    b = rotational_temperature
    switch = 8.0 * b
    t_low = temperature.clamp_max(switch)
    q = torch.exp(-b / t_low)
    q2 = q * q
    step = q2  # q^(2J) for J = 1
    power = torch.ones_like(q)  # q^(J(J+1)) for J = 0
    exact = torch.ones_like(q)
    for j in range(1, 15):
        power = power * step
        exact = exact + (2 * j + 1) * power
        step = step * q2
    x = b / temperature.clamp_min(switch)
    series = (1.0 + x * (1.0 / 3.0 + x * (1.0 / 15.0 + x * (4.0 / 315.0 + x / 315.0)))) / x
    return torch.where(temperature < switch, exact, series)


def upper_level_factor(excitation_temperature, line: LineConstants = THIRTEEN_CO_21):
    """``g_u exp(-E_u / kT) (exp(h nu / kT) - 1) / Q(T)``: the fraction of molecules in the upper
    level times the stimulated-emission correction, i.e. what multiplies the tracer column in
    the line opacity.  Written as ``g_u (exp(-E_l/T) - exp(-E_u/T)) / Q`` so that it never
    overflows.  ``excitation_temperature`` in K (> 0, any shape); returns a dimensionless tensor.
    """
    t = excitation_temperature
    boltzmann = torch.exp(-line.lower_energy / t) * -torch.expm1(-line.t0 / t)
    return line.g_upper * boltzmann / partition_function(t, line.rotational_temperature)


def subthermal_excitation_temperature(kinetic_temperature, h2_number_density,
                                      critical_density: float = DEFAULT_CRITICAL_DENSITY,
                                      t0: float = THIRTEEN_CO_21.t0, background: float = T_CMB):
    """Excitation temperature of a two-level system excited by collisions and the CMB.

    Statistical equilibrium of the two levels with collisional rates ``n C_ul`` (``C_lu`` from
    detailed balance at the kinetic temperature), spontaneous emission ``A_ul`` and a black-body
    background of occupation ``n_bg = 1 / (exp(T0 / T_bg) - 1)`` gives, with
    ``y = n / n_crit`` (``n_crit = A_ul / C_ul``) and no radiative trapping,

        exp(-T0 / T_ex) = (y exp(-T0 / T_kin) + n_bg) / (y + 1 + n_bg),

    so ``T_ex -> T_kin`` for ``n >> n_crit`` and ``T_ex -> T_bg`` for ``n << n_crit``.  The whole
    rotational ladder is then taken to be populated at ``T_ex`` (a single-temperature
    approximation).  ``kinetic_temperature`` (K) and ``h2_number_density`` (cm-3) broadcast;
    ``critical_density`` in cm-3.  Returns ``T_ex`` in K.
    """
    y = h2_number_density / critical_density
    n_bg = 1.0 / math.expm1(t0 / background)
    ratio = (y * torch.exp(-t0 / kinetic_temperature) + n_bg) / (y + 1.0 + n_bg)
    return t0 / -torch.log(ratio)


def doppler_parameter(kinetic_temperature, turbulent_b: float, molecular_mass: float):
    """Doppler parameter ``b = sqrt(2 k T / m + b_turb^2)`` in km/s.

    ``kinetic_temperature`` (K, any shape), ``turbulent_b`` (km/s), ``molecular_mass`` (u).
    The line profile is ``exp(-(v - v0)^2 / b^2) / (sqrt(pi) b)``; ``b = sqrt(2) sigma``.
    """
    thermal = 2.0 * _K / (molecular_mass * _AMU) / 1e6  # (km/s)^2 per K
    return torch.sqrt(thermal * kinetic_temperature + turbulent_b**2)


def channel_profile(edges, v0, b):
    """Line profile averaged over channels, times the channel width: ``phi_k dv``.

    ``edges`` (..., C + 1) channel edges in km/s (ascending, equal widths); ``v0`` and ``b``
    (..., 1) line centre and Doppler parameter, km/s.  Returns (..., C), dimensionless:
    ``[erf((hi - v0)/b) - erf((lo - v0)/b)] / 2`` for each channel.  Divide by the channel width
    to get the mean profile per km/s.  Both tails are evaluated through ``erfc`` so that far-wing
    values keep their relative precision, and the sum over channels telescopes to the fraction
    of the line inside the edges (exactly 1 when they cover it): flux is conserved however
    narrow the line is compared with a channel.
    """
    return scaled_channel_profile((edges - v0) / b)


def scaled_channel_profile(a, dim: int = -1):
    """:func:`channel_profile` from the edges in units of the Doppler parameter,
    ``a = (edges - v0) / b``, with ``C + 1`` edges along ``dim``; returns ``C`` channels there."""
    c = torch.erfc(a.abs())  # 1 - erf(|a|), precise when |a| is large
    n = a.shape[dim] - 1
    lo, hi = a.narrow(dim, 0, n), a.narrow(dim, 1, n)
    c_lo, c_hi = c.narrow(dim, 0, n), c.narrow(dim, 1, n)
    diff = torch.where(lo >= 0, c_lo - c_hi, torch.where(hi <= 0, c_hi - c_lo, 2.0 - c_hi - c_lo))
    return 0.5 * diff


# ----------------------------------------------------------------------- unit scales
def h2_number_density_scale() -> float:
    """cm-3 of H2 molecules per solMass / pc3 of H2 mass density."""
    return float((1.0 * u.solMass / u.pc**3 / H2_MASS).to_value(u.cm**-3))


def line_opacity_scale(line: LineConstants = THIRTEEN_CO_21) -> float:
    """Factor ``K`` with velocity-integrated optical depth of a cell
    ``tau_int [km/s] = K * x_tracer * rho_H2 [solMass/pc3] * dr [pc] * upper_level_factor(T_ex)``.

    ``K = c^3 A_ul / (8 pi nu^3) / m_H2`` in the field units; the profile is per unit velocity,
    hence ``c^3 / nu^3``.
    """
    nu = line.rest_frequency * 1e9
    column = (1.0 * u.solMass / u.pc**3 * u.pc / H2_MASS).to_value(u.m**-2)  # H2 per m2
    return _C**3 * line.einstein_a / (8.0 * math.pi * nu**3) * column / 1e3


def dust_opacity_scale(rest_frequency_ghz: float, opacity_230ghz: float = DUST_OPACITY_230GHZ,
                       beta: float = DUST_BETA, gas_to_dust: float = GAS_TO_DUST) -> float:
    """Dust optical depth per (solMass / pc3 of total gas) per pc of path at the line frequency.

    ``kappa_gas = opacity_230ghz [cm2/g dust] (nu / 230 GHz)^beta / gas_to_dust``.
    """
    kappa = opacity_230ghz * (rest_frequency_ghz / 230.0) ** beta / gas_to_dust * u.cm**2 / u.g
    return float((kappa * u.solMass / u.pc**3 * u.pc).to_value(u.one))


# ----------------------------------------------------------------------- transfer
def _escape(tau):
    """``(1 - exp(-tau)) / tau``, 1 at tau = 0, with finite gradients everywhere (tau >= 0)."""
    small = tau < 1e-4
    safe = torch.where(small, torch.ones_like(tau), tau)
    return torch.where(small, 1.0 - tau * (0.5 - tau / 6.0), -torch.expm1(-safe) / safe)


def transfer_step(line_excess, tau_line, j_line, continuum, tau_dust=None, j_dust=None):
    """Pass the radiation through one cell: ``I <- I exp(-tau) + S (1 - exp(-tau))``.

    The state is the continuum-subtracted intensity ``line_excess = I - I_cont`` (K, as a
    Rayleigh-Jeans temperature), where ``I_cont`` is the intensity the same ray would have
    without the line (``continuum``, K: the CMB plus dust behind this cell).  Working with the
    excess keeps full float32 precision for faint lines.  With ``tau = tau_line + tau_dust`` and
    ``S tau = J_line tau_line + J_dust tau_dust`` the exact update is

        excess' = excess e^-tau + J_line tau_line g(tau) - I_cont e^-tau_dust tau_line g(tau_line)
                  + J_dust tau_dust (g(tau) - g(tau_dust)),   g(t) = (1 - e^-t) / t.

    Shapes: ``line_excess`` and ``tau_line`` (..., C) channels; ``j_line``, ``continuum``,
    ``tau_dust``, ``j_dust`` broadcast against them (usually (..., 1)).  Returns the new excess.
    """
    if tau_dust is None:
        return line_excess * torch.exp(-tau_line) + (j_line - continuum) * -torch.expm1(-tau_line)
    tau = tau_line + tau_dust
    g_tau = _escape(tau)
    out = line_excess * torch.exp(-tau) + tau_line * (j_line * g_tau
                                                      - continuum * torch.exp(-tau_dust) * _escape(tau_line))
    return out + j_dust * tau_dust * (g_tau - _escape(tau_dust))
