"""The rate equations of :func:`~iris_nb.sim.excitation.solve_excitation`, one Newton step at a time.

Escape probabilities, collision and radiative rate matrices (LAMDA rates,
:class:`~iris_nb.sim.molecule.Molecule`), the optically thin start and the Newton update of
the level populations, batched over inputs in float64.  The method and its formulas are in
:mod:`iris_nb.sim.excitation`'s text.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .._warnings import user_stacklevel
from .molecule import Molecule
from .radiative import line_temperature

__all__ = ["GEOMETRIES", "NonConvergenceWarning", "TemperatureClampWarning", "thermal_ortho_para",
           "escape_probability", "tau_scale", "partner_densities", "collision_matrix", "LineRates",
           "optically_thin_populations", "newton_step", "rate_residual", "solve_linear", "as_float_tensor",
           "check_inputs"]

GEOMETRIES = ("sphere", "slab", "lvg")

_C_CM = 2.99792458e10  # cm/s
_GAUSS = math.sqrt(math.pi) / (2.0 * math.sqrt(math.log(2.0)))  # 1.0645: integral of a unit-peak Gaussian / FWHM


def tau_scale(einstein_a, frequency_hz):
    """``c^3 A / (8 pi nu^3 1.0645)`` per km/s of FWHM: the line-centre optical depth per unit
    ``N / fwhm`` (cm-2 per km/s) and per unit population difference ``x_l g_u/g_l - x_u``."""
    return _C_CM**3 * einstein_a / (8.0 * math.pi * frequency_hz**3 * _GAUSS * 1e5)


class NonConvergenceWarning(RuntimeWarning):
    """Some inputs of :func:`solve_excitation` did not converge (see ``Excitation.converged``)."""


class TemperatureClampWarning(UserWarning):
    """Kinetic temperatures outside a molecule's collision-rate table were clamped to its range."""


def thermal_ortho_para(t_kin):
    """Ortho/para ratio of H2 in thermal equilibrium at ``t_kin`` (K), as RADEX takes it:
    ``min(3, 9 exp(-170.6 / T_kin))``.  Tensor in, tensor out."""
    return torch.clamp(9.0 * torch.exp(-170.6 / t_kin), max=3.0)


def escape_probability(tau, geometry: str = "sphere"):
    """Escape probability ``beta(tau)`` of a ``geometry`` (module text), elementwise.

    Stable for every ``tau``: series near 0, asymptotes for large ``tau``; a masing line
    (``tau < 0``) is evaluated at ``max(tau, -1)`` so that trapping never amplifies without bound.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    t = tau.clamp_min(-1.0)
    small = t.abs() < 0.1
    ts = torch.where(small, torch.ones_like(t), t)  # safe where small
    if geometry == "sphere":  # RADEX's asymptote 1.5/tau above tau = 100 (its t = tau/2 > 50)
        big = ts > 100.0
        tb = torch.where(big, torch.full_like(ts, 60.0), ts)
        full = 1.5 / tb * (1.0 - 2.0 / tb**2 + (2.0 / tb + 2.0 / tb**2) * torch.exp(-tb))
        full = torch.where(big, 1.5 / ts, full)
        series = 1.0 + t * (-0.375 + t * (0.1 + t * (-1.0 / 48.0 + t / 280.0)))
    elif geometry == "slab":
        full = -torch.expm1(-3.0 * ts) / (3.0 * ts)
        x = 3.0 * t
        series = 1.0 + x * (-0.5 + x * (1.0 / 6.0 + x * (-1.0 / 24.0 + x * (1.0 / 120.0 - x / 720.0))))
    else:  # RADEX's LVG: de Jong et al. (1980) with its factor 2, in tau = 2 t
        x = 1.17 * t
        full = -torch.expm1(-1.17 * ts) / (1.17 * ts)
        big = ts >= 14.0
        tb = torch.where(big, ts, torch.full_like(ts, 20.0))
        full = torch.where(big, 1.0 / (tb * torch.sqrt(torch.log(tb / (2.0 * math.sqrt(math.pi))))), full)
        series = 1.0 + x * (-0.5 + x * (1.0 / 6.0 + x * (-1.0 / 24.0 + x / 120.0)))
    return torch.where(small, series, full)


def as_float_tensor(value, name: str, device, dtype) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = np.array(value, dtype=np.float64)  # a writable copy
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if torch.isnan(t).any():
        raise ValueError(f"{name} holds NaN values; give finite numbers (mask or fill the NaN cells first)")
    return t


def check_inputs(n_h2, t_kin, column, fwhm):
    if not bool((n_h2 > 0).all()) or not bool(torch.isfinite(n_h2).all()):
        raise ValueError(f"n_h2 is the H2 number density in cm-3 and must be finite and > 0; "
                         f"got values down to {float(n_h2.min()):.3g}")
    if not bool((t_kin > 0).all()) or not bool(torch.isfinite(t_kin).all()):
        raise ValueError(f"t_kin is the kinetic temperature in K and must be finite and > 0; "
                         f"got values down to {float(t_kin.min()):.3g}")
    if not bool((column >= 0).all()) or not bool(torch.isfinite(column).all()):
        raise ValueError(f"column is the molecule's column density in cm-2 and must be finite and >= 0; "
                         f"got values down to {float(column.min()):.3g}")
    if not bool((fwhm > 0).all()) or not bool(torch.isfinite(fwhm).all()):
        raise ValueError(f"fwhm is the line width (FWHM) in km/s and must be finite and > 0; "
                         f"got values down to {float(fwhm.min()):.3g}")


def partner_densities(molecule: Molecule, n_h2, t_kin, ortho_para, partners) -> dict:
    """Density (cm-3, flat tensors) of each collision partner used."""
    names = set(molecule.partners)
    out = {}
    if {"p-H2", "o-H2"} <= names:
        opr = thermal_ortho_para(t_kin) if ortho_para is None else torch.full_like(t_kin, float(ortho_para))
        out["o-H2"] = n_h2 * opr / (1.0 + opr)
        out["p-H2"] = n_h2 / (1.0 + opr)
    elif "H2" in names:
        out["H2"] = n_h2
    elif "p-H2" in names:
        out["p-H2"] = n_h2  # rates for para-H2 only: take them for all H2 (as RADEX does)
    elif "o-H2" in names:
        out["o-H2"] = n_h2
    else:
        raise ValueError(f"{molecule.path.name} has no collision rates with H2 (partners: {sorted(names)}); "
                         "give the densities of its partners with partners={name: density}")
    for name, density in (partners or {}).items():
        if name not in names:
            raise ValueError(f"{molecule.path.name} has no collision rates for partner {name!r}; "
                             f"its partners are {sorted(names)}")
        d = torch.as_tensor(density, dtype=n_h2.dtype, device=n_h2.device)
        if bool((d < 0).any()) or torch.isnan(d).any():
            raise ValueError(f"the density of partner {name!r} must be >= 0 cm-3")
        out[name] = torch.broadcast_to(d, n_h2.shape).clone() if name not in out else out[name] + d
    return out


def collision_matrix(molecule: Molecule, densities: dict, t_kin) -> torch.Tensor:
    """``(M, L, L)`` collisional rate matrix, s^-1: entry ``[i, j]`` (i != j) is the rate from
    level j to level i, the diagonal minus the total rate out of level j."""
    n_lev = molecule.n_levels
    dev, dt = t_kin.device, t_kin.dtype
    energy = torch.tensor(molecule.level_energy, device=dev, dtype=dt)
    g = torch.tensor(molecule.weights, device=dev, dtype=dt)
    # rate matrices per distinct temperature, then weighted by each partner's density
    temps_u, inverse = torch.unique(t_kin, return_inverse=True)
    out = None
    clamped = False
    for name, density in densities.items():
        p = molecule.partners[name]
        temps = torch.tensor(p.temperatures, device=dev, dtype=dt)
        t = temps_u.clamp(float(temps[0]), float(temps[-1]))
        clamped |= bool((t != temps_u).any())
        # linear interpolation in T between the table's temperatures (as RADEX)
        i = torch.searchsorted(temps, t).clamp(1, len(temps) - 1)
        w = (t - temps[i - 1]) / (temps[i] - temps[i - 1])
        rates = torch.tensor(p.rates, device=dev, dtype=dt)  # (n_coll, T)
        down = (rates[:, i - 1] * (1 - w) + rates[:, i] * w).T  # (U, n_coll)
        swap = molecule.level_energy[p.upper] < molecule.level_energy[p.lower]
        hi = torch.tensor(np.where(swap, p.lower, p.upper), device=dev)
        lo = torch.tensor(np.where(swap, p.upper, p.lower), device=dev)
        up_rate = down * (g[hi] / g[lo]) * torch.exp(-(energy[hi] - energy[lo]) / temps_u.unsqueeze(1))
        per_t = torch.zeros(len(temps_u), n_lev * n_lev, device=dev, dtype=dt)
        per_t.index_add_(1, lo * n_lev + hi, down)     # hi -> lo
        per_t.index_add_(1, hi * n_lev + lo, up_rate)  # lo -> hi (detailed balance at T_kin)
        per_t.index_add_(1, hi * n_lev + hi, -down)    # outflows on the diagonal
        per_t.index_add_(1, lo * n_lev + lo, -up_rate)
        term = per_t.view(-1, n_lev, n_lev)[inverse] * density.view(-1, 1, 1)
        out = term if out is None else out.add_(term)
    if clamped:
        lo_t = min(float(molecule.partners[n].temperatures[0]) for n in densities)
        hi_t = max(float(molecule.partners[n].temperatures[-1]) for n in densities)
        warnings.warn(f"kinetic temperatures outside {lo_t:g}-{hi_t:g} K, the range of the collision rates "
                      f"in {molecule.path.name}, were clamped to it (rates held at the end values; the "
                      "Boltzmann factors use the true T_kin)", TemperatureClampWarning, stacklevel=user_stacklevel())
    return out


class LineRates:
    """Per-line constants as tensors on one device."""

    def __init__(self, molecule: Molecule, device, dtype, t_bg: float):
        as_t = lambda a: torch.tensor(np.asarray(a), device=device, dtype=dtype)  # noqa: E731
        self.upper = torch.tensor(molecule.upper, device=device)
        self.lower = torch.tensor(molecule.lower, device=device)
        self.a = as_t(molecule.einstein_a)
        self.nu = as_t(molecule.frequency * 1e9)
        g = as_t(molecule.weights)
        self.g_ratio = g[self.upper] / g[self.lower]  # g_u / g_l
        self.t0 = line_temperature(1.0) * self.nu / 1e9  # h nu / k, K (nu in Hz)
        self.n_bg = 1.0 / torch.expm1(self.t0 / t_bg) if t_bg > 0 else torch.zeros_like(self.nu)
        # tau = tau_scale * N/fwhm * (x_l g_u/g_l - x_u), N in cm-2, fwhm in km/s
        self.tau_scale = tau_scale(self.a, self.nu)
        n = molecule.n_levels
        u, l = self.upper, self.lower
        # flat positions in an (L, L) matrix: the net downward rate of a line enters row l (+)
        # and row u (-); it depends on x_u and x_l
        self.at_lu, self.at_ll, self.at_uu, self.at_ul = l * n + u, l * n + l, u * n + u, u * n + l

    def tau(self, x, column_per_fwhm):
        """(M, R) line-centre optical depths from populations (M, L) and N/fwhm (M,)."""
        return self.tau_scale * column_per_fwhm.unsqueeze(1) * (x[:, self.lower] * self.g_ratio - x[:, self.upper])

    def net_rate(self, x, beta):
        """(M, R) net downward radiative rate per molecule, ``A beta [x_u (1 + n_bg) - x_l g n_bg]``."""
        return self.a * beta * ((1.0 + self.n_bg) * x[:, self.upper] - self.g_ratio * self.n_bg * x[:, self.lower])

    def add_to_matrix(self, matrix, d_upper, d_lower):
        """Add to ``matrix`` (M, L, L) the Jacobian of the net rates, given their derivatives with
        respect to ``x_u`` and ``x_l`` (M, R each)."""
        flat = matrix.view(matrix.shape[0], -1)
        flat.index_add_(1, self.at_lu, d_upper)
        flat.index_add_(1, self.at_ll, d_lower)
        flat.index_add_(1, self.at_uu, -d_upper)
        flat.index_add_(1, self.at_ul, -d_lower)
        return matrix


def rate_residual(x, coll, lines: LineRates, beta):
    """Rate-equation residual ``(M, L)`` (s^-1 per molecule), first row ``sum x - 1``."""
    residual = torch.einsum("mij,mj->mi", coll, x)
    net = lines.net_rate(x, beta)
    residual.index_add_(1, lines.lower, net)
    residual.index_add_(1, lines.upper, -net)
    residual[:, 0] = x.sum(dim=1) - 1.0
    return residual


def solve_linear(matrix, residual):
    matrix[:, 0, :] = 1.0
    return torch.linalg.solve(matrix, residual.unsqueeze(-1)).squeeze(-1)


def optically_thin_populations(coll, lines: LineRates):
    """Populations with every escape probability 1 (no trapping): a linear solve, (M, L)."""
    m = coll.shape[0]
    beta = torch.ones(m, len(lines.a), device=coll.device, dtype=coll.dtype)
    d_upper = lines.a * (1.0 + lines.n_bg) * beta
    d_lower = -lines.a * lines.g_ratio * lines.n_bg * beta
    matrix = lines.add_to_matrix(coll.clone(), d_upper, d_lower)
    rhs = torch.zeros(m, coll.shape[1], device=coll.device, dtype=coll.dtype)
    rhs[:, 0] = 1.0
    x = solve_linear(matrix, rhs).clamp_min(0.0)
    return x / x.sum(dim=1, keepdim=True)


def newton_step(x, coll, lines: LineRates, column_per_fwhm, geometry: str):
    """One Newton step with a backtracking line search on the rate equations
    ``C x + (radiative net rates with beta(tau(x))) = 0`` (first row replaced by ``sum x = 1``),
    from populations ``x`` (M, L); returns the new ``x``.

    The Jacobian includes the change of each line's net rate through ``beta(tau(x))``.  Each
    population moves by at most a factor 10 per step; of the step lengths 1, 1/2, 1/4, 1/10 the
    one with the smallest residual is taken (none if none improves), so the iteration cannot
    cycle; near the solution the full step wins (quadratic convergence).
    """
    s = lines.tau_scale * column_per_fwhm.unsqueeze(1)  # (M, R)
    tau = lines.tau(x, column_per_fwhm)
    with torch.enable_grad():
        t = tau.detach().requires_grad_(True)
        beta = escape_probability(t, geometry)
        (dbeta,) = torch.autograd.grad(beta.sum(), t)
    beta = beta.detach()
    residual = rate_residual(x, coll, lines, beta)
    q = lines.net_rate(x, torch.ones_like(beta))  # net rate per unit beta
    coef = q * dbeta * s  # d(net)/d(tau) * d(tau)/d(tau-populations)
    d_upper = lines.a * beta * (1.0 + lines.n_bg) - coef
    d_lower = -lines.a * beta * lines.g_ratio * lines.n_bg + coef * lines.g_ratio
    step = solve_linear(lines.add_to_matrix(coll.clone(), d_upper, d_lower), -residual)
    best, best_norm = x, residual.abs().sum(dim=1)
    for length in (1.0, 0.5, 0.25, 0.1):
        trial = torch.minimum(torch.maximum(x + length * step, 0.1 * x), 10.0 * x + 1e-30)
        trial = trial / trial.sum(dim=1, keepdim=True)
        trial_beta = escape_probability(lines.tau(trial, column_per_fwhm), geometry)
        norm = rate_residual(trial, coll, lines, trial_beta).abs().sum(dim=1)
        better = norm < best_norm
        best = torch.where(better.unsqueeze(1), trial, best)
        best_norm = torch.where(better, norm, best_norm)
    return best
