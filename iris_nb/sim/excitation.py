"""Non-LTE level populations: statistical equilibrium with radiative trapping by escape probability.

:func:`solve_excitation` does what RADEX (van der Tak et al. 2007, A&A 468, 627) does for a
uniform medium, batched in torch on any device: for every input it balances collisional
excitation and de-excitation (rates from a LAMDA file, :class:`~iris_nb.sim.molecule.Molecule`)
against spontaneous and stimulated emission and absorption of the background radiation,
with the line radiation trapped in the medium through the escape probability ``beta(tau)``:

* ``"sphere"`` (uniform sphere, RADEX's default): ``beta = 1.5/tau [1 - 2/tau^2 + (2/tau + 2/tau^2) e^-tau]``
* ``"slab"`` (plane-parallel slab): ``beta = (1 - e^(-3 tau)) / (3 tau)``
* ``"lvg"`` (expanding sphere, Sobolev; de Jong, Boland & Dalgarno 1980 as RADEX writes it):
  ``beta = (1 - e^(-1.17 tau)) / (1.17 tau)`` for ``tau < 14``, ``1 / (tau sqrt(ln(tau / (2 sqrt(pi)))))`` above

The mean intensity in a line is ``J = (1 - beta) S + beta I_bg``, so the net radiative rate
of a line is ``A_ul beta [x_u (1 + n_bg) - x_l (g_u / g_l) n_bg]`` with the background photon
occupation ``n_bg = 1 / (exp(h nu / k T_bg) - 1)``: linear in the populations for given
``beta``.  The solver iterates populations -> optical depths -> escape probabilities ->
populations (starting from the optically thin solution, under-relaxed) until the populations
stop changing; inputs that do not converge are reported, never returned silently.

The optical depth is RADEX's line-centre value for a Gaussian line of width ``fwhm``:
``tau = c^3 A_ul N (x_l g_u / g_l - x_u) / (8 pi nu^3 1.0645 fwhm)``, and the radiation
temperature ``T_R = [J(T_ex) - J(T_bg)] (1 - e^-tau)`` with ``J(T) = (h nu / k) / (exp(h nu / kT) - 1)``
(Rayleigh-Jeans units, K), as RADEX reports it.
"""

from __future__ import annotations

import math
import warnings

import torch

from .._warnings import user_stacklevel
from .molecule import Molecule
from .radiative import line_temperature
from .statistical_equilibrium import (GEOMETRIES, LineRates, NonConvergenceWarning, TemperatureClampWarning,
                                      as_float_tensor, check_inputs, collision_matrix, escape_probability, newton_step,
                                      optically_thin_populations, partner_densities, tau_scale, thermal_ortho_para)

__all__ = ["solve_excitation", "Excitation", "GEOMETRIES", "thermal_ortho_para", "escape_probability",
           "NonConvergenceWarning", "TemperatureClampWarning"]


class Excitation:
    """Result of :func:`solve_excitation`: level populations and the line quantities they give.

    Attributes: ``populations`` ``(..., L)`` fractional level populations (sum 1), ``converged``
    ``(...)`` bool, ``iterations`` (the most any input needed), ``shape`` (the broadcast shape
    of the inputs), ``molecule``, ``geometry``, ``t_bg``.  A transition is ``"2-1"`` or a
    ``(upper, lower)`` pair of level labels (:meth:`Molecule.transition`).
    """

    def __init__(self, molecule, populations, converged, iterations, column_per_fwhm, geometry, t_bg):
        self.molecule = molecule
        self.populations = populations
        self.converged = converged
        self.iterations = iterations
        self.geometry = geometry
        self.t_bg = t_bg
        self._column_per_fwhm = column_per_fwhm
        self.shape = tuple(converged.shape)

    def _line(self, transition):
        i = self.molecule.transition(transition)
        x_u = self.populations[..., int(self.molecule.upper[i])]
        x_l = self.populations[..., int(self.molecule.lower[i])]
        g_ratio = self.molecule.weights[self.molecule.upper[i]] / self.molecule.weights[self.molecule.lower[i]]
        t0 = line_temperature(float(self.molecule.frequency[i]))
        return i, x_u, x_l, g_ratio, t0

    def t_ex(self, transition) -> torch.Tensor:
        """Excitation temperature, K (negative for a masing line)."""
        _, x_u, x_l, g_ratio, t0 = self._line(transition)
        return t0 / torch.log(x_l * g_ratio / x_u)

    def tau(self, transition) -> torch.Tensor:
        """Line-centre optical depth (RADEX's ``tau``; negative for a masing line)."""
        i, x_u, x_l, g_ratio, _ = self._line(transition)
        a, nu = float(self.molecule.einstein_a[i]), float(self.molecule.frequency[i]) * 1e9
        scale = tau_scale(a, nu)
        return scale * self._column_per_fwhm * (x_l * g_ratio - x_u)

    def source_function(self, transition) -> torch.Tensor:
        """Line source function as a Rayleigh-Jeans temperature ``J(T_ex)``, K."""
        _, x_u, x_l, g_ratio, t0 = self._line(transition)
        return t0 * x_u / (x_l * g_ratio - x_u)

    def t_r(self, transition) -> torch.Tensor:
        """Radiation temperature ``T_R = [J(T_ex) - J(T_bg)] (1 - e^-tau)``, K (RADEX's ``T_R``).

        A strongly masing line is amplified at most ``e^50`` (``tau`` taken as ``max(tau, -50)``),
        so ``T_R`` stays finite."""
        _, _, _, _, t0 = self._line(transition)
        j_bg = t0 / math.expm1(t0 / self.t_bg) if self.t_bg > 0 else 0.0
        tau = self.tau(transition).clamp_min(-50.0)
        return (self.source_function(transition) - j_bg) * -torch.expm1(-tau)

    def __repr__(self) -> str:
        n_bad = int((~self.converged).sum())
        return (f"Excitation({self.molecule.name}, shape {self.shape}, geometry {self.geometry!r}, "
                f"{'all converged' if n_bad == 0 else f'{n_bad} not converged'})")


def solve_excitation(molecule, n_h2, t_kin, column, fwhm, geometry: str = "sphere", ortho_para=None,
                     t_bg: float = 2.73, partners: dict | None = None, *, device=None,
                     tolerance: float = 1e-6, max_iterations: int = 400) -> Excitation:
    """Statistical-equilibrium level populations with escape-probability trapping (module text).

    Parameters
    ----------
    molecule:
        A :class:`Molecule` or a name/path for :meth:`Molecule.load` (e.g. ``"13CO"``).
    n_h2:
        H2 number density, cm-3 (> 0).
    t_kin:
        Kinetic temperature, K.  Outside the file's collision temperatures the rates are
        clamped to the end values, with a :class:`TemperatureClampWarning`.
    column:
        Column density of the molecule, cm-2 (>= 0).
    fwhm:
        Line width (FWHM), km/s (> 0).
    geometry:
        ``"sphere"``, ``"slab"`` or ``"lvg"`` (escape probability; module text).
    ortho_para:
        Ortho/para ratio of H2 for files with separate o-H2 and p-H2 rates; ``None`` takes
        the thermal value :func:`thermal_ortho_para` (RADEX's rule).
    t_bg:
        Background black-body temperature, K (CMB: 2.73).
    partners:
        Densities (cm-3) of further collision partners of the file, e.g. ``{"H": 10.0}``.
    device:
        Where to compute (default: where ``n_h2`` lives, else CPU).  Always float64.
    tolerance, max_iterations:
        Converged when no population of at least 1e-10 changes by more than ``tolerance``
        (relative) in an iteration.

    ``n_h2``, ``t_kin``, ``column``, ``fwhm`` are numbers, arrays or tensors that broadcast.

    Returns
    -------
    Excitation
        ``populations`` ``(*shape, L)``; ``.t_ex(tr)``, ``.tau(tr)``, ``.t_r(tr)`` ``(*shape)``.
        Inputs that did not converge are flagged in ``.converged`` and named in a
        :class:`NonConvergenceWarning`.
    """
    molecule = Molecule.load(molecule)
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if ortho_para is not None and not (float(ortho_para) >= 0 and math.isfinite(float(ortho_para))):
        raise ValueError(f"ortho_para must be a ratio >= 0 or None (thermal), got {ortho_para!r}")
    if not (isinstance(t_bg, (int, float)) and t_bg >= 0 and math.isfinite(t_bg)):
        raise ValueError(f"t_bg is the background temperature in K (>= 0), got {t_bg!r}")
    if device is None:
        device = n_h2.device if isinstance(n_h2, torch.Tensor) else "cpu"
    dt = torch.float64
    names = ("n_h2", "t_kin", "column", "fwhm")
    values = [as_float_tensor(v, k, device, dt) for v, k in zip((n_h2, t_kin, column, fwhm), names)]
    try:
        values = torch.broadcast_tensors(*values)
    except RuntimeError as err:
        raise ValueError(f"n_h2, t_kin, column and fwhm must broadcast: {err}") from None
    shape = values[0].shape
    n_h2, t_kin, column, fwhm = (v.reshape(-1) for v in values)
    check_inputs(n_h2, t_kin, column, fwhm)
    densities = partner_densities(molecule, n_h2, t_kin, ortho_para, partners)
    coll = collision_matrix(molecule, densities, t_kin)
    lines = LineRates(molecule, device, dt, float(t_bg))
    n_lev = molecule.n_levels
    cpf = column / fwhm

    x = optically_thin_populations(coll, lines)
    converged = torch.zeros(len(cpf), dtype=torch.bool, device=device)
    active = torch.arange(len(cpf), device=device)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        xa = x[active]
        new = newton_step(xa, coll[active], lines, cpf[active], geometry)
        significant = new > 1e-10
        change = torch.where(significant, (new - xa).abs() / new.clamp_min(1e-300), torch.zeros_like(new))
        done = change.amax(dim=1) < tolerance
        x[active] = new
        converged[active[done]] = True
        active = active[~done]
        if len(active) == 0:
            break
    bad = ~converged
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten()[:3].tolist()
        examples = "; ".join(f"n_h2={float(n_h2[i]):.3g}, t_kin={float(t_kin[i]):.3g}, "
                             f"column={float(column[i]):.3g}, fwhm={float(fwhm[i]):.3g}" for i in idx)
        warnings.warn(f"solve_excitation: {int(bad.sum())} of {len(cpf)} inputs did not converge in "
                      f"{max_iterations} iterations (e.g. {examples}); their populations are the last "
                      "iterate, flagged False in .converged", NonConvergenceWarning, stacklevel=user_stacklevel())
    return Excitation(molecule, x.reshape(*shape, n_lev), converged.reshape(shape), iterations,
                      cpf.reshape(shape), geometry, float(t_bg))
