"""The line observer: brightness temperature of a molecular line from radiative transfer.

:class:`LineObserver` turns a physical field into a PPV cube in K.  Per cell it needs the
line's optical depth and source function, which follow from the level populations:

* ``excitation="escape"`` (default): non-LTE statistical equilibrium with radiative trapping
  by escape probability, from the molecule's LAMDA collision rates
  (:func:`~iris_nb.sim.excitation.solve_excitation`), looked up per cell in a table
  (:class:`~iris_nb.sim.excitation_table.ExcitationTable`) over (n_H2, T_kin, N/fwhm);
* ``excitation="lte"``: Boltzmann populations at the kinetic temperature (linear rotor);
* ``excitation="subthermal"``: the older two-level approximation
  (:func:`~iris_nb.sim.radiative.subthermal_excitation_temperature`), kept for comparison.

The local column that traps the line (escape mode) is the Sobolev (LVG) length along the
line of sight, ``L = fwhm / |dv_los/ds|``, capped at ``trapping_length`` (a cloud does not
trap photons beyond its own size, and a nearly uniform velocity field would otherwise give
an unbounded length): ``N / fwhm = n_mol min(L, trapping_length) / fwhm``, with the
gradient from central differences of ``velocity_los`` along each ray and ``fwhm`` the
cell's thermal plus microturbulent line width.  The escape probability is RADEX's LVG one
(``geometry="lvg"``) unless another is given.

The transfer itself (far side to observer, channel windows) is :mod:`iris_nb.sim.transfer`,
the beam :mod:`iris_nb.sim.beam`.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .._warnings import user_stacklevel
from ..grids import Grid
from .beam import MIN_BEAM_PIXELS, apply_beam, beam_fwhm_pixels
from .excitation import GEOMETRIES, TemperatureClampWarning
from .excitation_table import AXES, ExcitationTable
from .fields import REQUIRED_VARIABLES, h2_density
from .molecule import Molecule
from .observer_base import Observer
from .radiative import (
    DEFAULT_CRITICAL_DENSITY, T_CMB, THIRTEEN_CO_21, LineConstants, doppler_parameter, dust_opacity_scale,
    h2_number_density_scale, line_opacity_scale, line_temperature, planck_brightness_temperature, rj_temperature,
    subthermal_excitation_temperature, upper_level_factor,
)
from .transfer import transfer_rays

__all__ = ["LineObserver", "EXCITATIONS", "line_constants"]

_OUTPUTS = ("rayleigh-jeans", "planck")
EXCITATIONS = ("escape", "lte", "subthermal")
_PC_CM = 3.0856775814913673e18
_FWHM_PER_B = 2.0 * math.sqrt(math.log(2.0))


def line_constants(molecule: Molecule, transition) -> LineConstants:
    """:class:`LineConstants` of one transition of a linear-rotor molecule (LTE partition
    function from the rotational constant ``B0 = E(level 2) / 2``)."""
    i = molecule.transition(transition)
    up, low = int(molecule.upper[i]), int(molecule.lower[i])
    b0_k = float(molecule.level_energy[1] - molecule.level_energy[0]) / 2.0
    b0_ghz = b0_k / line_temperature(1.0)
    return LineConstants(name=f"{_short_name(molecule)}({molecule.transition_name(i)})",
                         rest_frequency=float(molecule.frequency[i]), einstein_a=float(molecule.einstein_a[i]),
                         g_upper=int(round(molecule.weights[up])), g_lower=int(round(molecule.weights[low])),
                         upper_energy=float(molecule.level_energy[up]), rotational_constant=b0_ghz,
                         molecular_mass=float(molecule.molecular_mass))


def _short_name(molecule: Molecule) -> str:
    for name in Molecule.shipped():
        if Molecule.load(name).sha256 == molecule.sha256:
            return name
    return molecule.name


class LineObserver(Observer):
    """Brightness temperature of a molecular line (default 13CO(2-1)) from radiative transfer.

    Per cell: level populations from ``excitation`` (module text), giving the line optical
    depth (``c^3 / nu^3``, profile per unit velocity) and source function; line profile with
    ``b^2 = 2kT/m + turbulent_b^2`` averaged over each channel (erf formula, flux-conserving).
    With ``dust=True`` a dust continuum (gas-to-dust 100, 0.899 cm2/g at 230 GHz, beta = 1.8;
    dust temperature ``temperature_dust`` or the gas temperature) absorbs and emits too.  The
    transfer starts at the far edge of the grid with the CMB (2.725 K) and runs cell by cell
    towards the observer.  The output is the continuum-subtracted intensity as a
    Rayleigh-Jeans temperature ``J(I) - J(I_cont)`` (``output="rayleigh-jeans"``) or the
    difference of Planck brightness temperatures (``output="planck"``), convolved with the
    grid's Gaussian beam (``beam=True``), in K.

    Parameters
    ----------
    grid:
        Geometry, rest frequency (must be that of ``transition``, or of one of them) and beam.
    molecule:
        A shipped molecule name (:meth:`Molecule.shipped`), a LAMDA file path or a
        :class:`Molecule`; the field's ``x_tracer`` is its abundance per H2.
    transition:
        ``"2-1"`` or an ``(upper, lower)`` pair; a tuple of those observes several lines at
        once (output ``(B, n_lines, lon, lat, velocity)``, all on the grid's velocity axis and beam).
    excitation:
        ``"escape"`` (default), ``"lte"`` or ``"subthermal"``.
    geometry:
        Escape probability for ``"escape"``: ``"lvg"`` (default), ``"sphere"`` or ``"slab"``.
    trapping_length:
        Largest trapping length, pc (module text); default 5 pc.
    ortho_para:
        H2 ortho/para ratio for the collision rates; ``None``: thermal (RADEX's rule).
    turbulent_b:
        Microturbulent Doppler parameter, km/s (``b = sqrt(2) sigma``); default 2 km/s.  A field
        that carries its own ``turbulent_b`` (per sample or per cell) uses that instead.
    subthermal, critical_density:
        ``subthermal=True`` is the old spelling of ``excitation="subthermal"``; the critical
        density (cm-3) of that mode.
    dust:
        Include the dust continuum (then subtracted from the output).
    output:
        ``"rayleigh-jeans"`` or ``"planck"``.
    beam:
        Convolve with the grid's beam (skipped when it is below 0.1 pixel).
    ray_batch:
        Lines of sight transferred together (working set about
        ``ray_batch * (10 distance + 4 velocity)`` values, 18 per distance cell with the escape
        excitation's look-up, plus the autograd graph when
        differentiating); ``None`` keeps it near 64 MiB on CPU and an eighth of the free
        memory (at most 4 GiB) on GPU.  Several whole samples share a batch when they fit.
    channel_window:
        Only channels within ``channel_window`` Doppler parameters of a cell's velocity are
        updated for that cell (the profile there is below ``erfc(channel_window)``, 1.5e-12
        for 5); ``None`` evaluates every channel for every cell (slow reference).
    line:
        LTE/sub-thermal constants overriding those from the molecule file (one transition only).
    """

    units = "K"
    input_space = "temperature"
    required = REQUIRED_VARIABLES

    def __init__(self, grid: Grid, *, molecule="13CO", transition="2-1", excitation: str | None = None,
                 geometry: str = "lvg", trapping_length: float = 5.0, ortho_para=None,
                 turbulent_b: float = 2.0, subthermal: bool = False,
                 critical_density: float = DEFAULT_CRITICAL_DENSITY, dust: bool = False,
                 output: str = "rayleigh-jeans", beam: bool = True, ray_batch: int | None = None,
                 channel_window: float | None = 5.0, line: LineConstants | None = None):
        super().__init__(grid)
        if excitation is None:
            excitation = "subthermal" if subthermal else "escape"
        elif subthermal and excitation != "subthermal":
            raise ValueError(f"subthermal=True contradicts excitation={excitation!r}; pass only excitation=")
        if excitation not in EXCITATIONS:
            raise ValueError(f"excitation must be one of {EXCITATIONS}, got {excitation!r}")
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        _check_number("trapping_length", trapping_length, "pc", positive=True)
        _check_number("turbulent_b", turbulent_b, "km/s (the microturbulent Doppler parameter)")
        _check_number("critical_density", critical_density, "cm-3", positive=True)
        if ortho_para is not None:
            _check_number("ortho_para", ortho_para, "(ratio, or None for thermal)")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if ray_batch is not None and (int(ray_batch) != ray_batch or ray_batch < 1):
            raise ValueError(f"ray_batch must be a positive integer or None (automatic), got {ray_batch!r}")
        if channel_window is not None and not (isinstance(channel_window, numbers.Real)
                                               and math.isfinite(channel_window) and channel_window >= 3):
            raise ValueError(f"channel_window is in Doppler parameters and must be >= 3 (or None for "
                             f"every channel), got {channel_window!r}")
        self.molecule = Molecule.load(molecule)
        self._molecule_name = _short_name(self.molecule)
        multi = isinstance(transition, (tuple, list)) and len(transition) > 0 and \
            all(isinstance(t, (str, tuple, list)) for t in transition)
        self.transitions = tuple(transition) if multi else (transition,)
        self.multi_line = multi
        indices = [self.molecule.transition(t) for t in self.transitions]  # errors name the molecule
        self._names = [self.molecule.transition_name(i) for i in indices]
        if line is not None:
            if not isinstance(line, LineConstants):
                raise TypeError(f"line must be a LineConstants, got {type(line).__name__}")
            if multi:
                raise ValueError("line= constants describe one transition; omit it for several transitions")
            lines = [line]
        elif self.molecule.name == "13C16O" and self._names == ["2-1"]:
            lines = [THIRTEEN_CO_21]  # DESIGN.md's constants: the LTE path stays as it was
        else:
            lines = [line_constants(self.molecule, t) for t in self.transitions]
        freqs = [ln.rest_frequency for ln in lines]
        if not any(math.isclose(f, grid.rest_frequency, rel_tol=1e-6) for f in freqs):
            raise ValueError(f"the grid is for {grid.line} at {grid.rest_frequency} GHz but "
                             f"{', '.join(ln.name for ln in lines)} is at {', '.join(f'{f:.7g}' for f in freqs)} GHz; "
                             "observe a transition at the grid's rest_frequency or make a grid for this line")
        self.lines = tuple(lines)
        self.line = lines[0]
        self._levels = [(int(self.molecule.upper[i]), int(self.molecule.lower[i])) for i in indices]
        self.excitation = excitation
        self.geometry = geometry
        self.trapping_length = float(trapping_length)
        self.ortho_para = None if ortho_para is None else float(ortho_para)
        self.turbulent_b = float(turbulent_b)
        self.subthermal = excitation == "subthermal"
        self.critical_density = float(critical_density)
        self.dust = bool(dust)
        self.output = output
        self.beam = bool(beam)
        self.ray_batch = None if ray_batch is None else int(ray_batch)
        self.channel_window = None if channel_window is None else float(channel_window)
        self._tau_scales = [line_opacity_scale(ln) * grid.distance.step for ln in lines]
        self._dust_scales = [dust_opacity_scale(ln.rest_frequency) * grid.distance.step for ln in lines]
        self._n_scale = h2_number_density_scale()
        self._table = None
        t_lo = max(10 ** AXES["t_kin"][0], *(float(p.temperatures[0]) for p in self.molecule.partners.values()))
        t_hi = min(10 ** AXES["t_kin"][1], *(float(p.temperatures[-1]) for p in self.molecule.partners.values()))
        self._t_range = (t_lo, t_hi)

    def __getstate__(self):  # the table is reloaded from the disk cache where the observer is unpickled
        state = self.__dict__.copy()
        state["_table"] = None
        return state

    @property
    def config(self) -> dict:
        """JSON-ready settings.  For LTE or sub-thermal 13CO(2-1) exactly the keys of the
        observer before non-LTE excitation existed, so stores written then still resume."""
        out = {"observer": "LineObserver", "line": self.line.name, "turbulent_b": self.turbulent_b,
               "subthermal": self.subthermal, "critical_density": self.critical_density, "dust": self.dust,
               "output": self.output, "beam": self.beam, "channel_window": self.channel_window}
        if self.excitation == "escape" or self._molecule_name != "13CO" or self._names != ["2-1"]:
            out.update(molecule=self._molecule_name, excitation=self.excitation,
                       transition=self._names if self.multi_line else self._names[0])
        if self.excitation == "escape":
            out.update(geometry=self.geometry, trapping_length=self.trapping_length, ortho_para=self.ortho_para)
        return out

    def _extra_dims(self) -> dict:
        return {"transition": self._names} if self.multi_line else {}

    def _beam_applied(self) -> float:
        used = self.beam and max(beam_fwhm_pixels(self.grid)) >= MIN_BEAM_PIXELS
        return self.grid.beam_fwhm if used else 0.0

    @property
    def table(self) -> ExcitationTable | None:
        """The excitation table (escape mode), built or loaded from the disk cache on first use."""
        if self.excitation != "escape":
            return None
        if self._table is None:
            self._table = ExcitationTable.get(self.molecule, self.geometry, self.ortho_para, T_CMB)
        return self._table

    # ------------------------------------------------------------------ batching of rays
    def _rays_per_batch(self, device, itemsize: int) -> int:
        """Rays per block: ``ray_batch``, or what fits the working-set budget (see class text)."""
        if self.ray_batch is not None:
            return self.ray_batch
        budget = 2**26  # bytes: 64 MiB on CPU (blocks that stay in the caches: 1.6x faster than 256 MiB on SMALL)
        device = torch.device(device)
        if device.type == "cuda":  # an eighth of the free memory, between 256 MiB and 4 GiB
            free, _ = torch.cuda.mem_get_info(device)
            budget = min(2**32, max(2**28, free // 8))
        # per distance cell: ~10 values of cell quantities, ~8 more for the excitation look-up
        per_cell = 18 if self.excitation == "escape" else 10
        per_ray = (per_cell * self.grid.distance.steps + 4 * self.grid.velocity.steps) * itemsize
        return max(1, budget // per_ray)

    def _ray_blocks(self, fields: dict, n_batch: int, n_ray: int, per: int):
        """Yield dicts of ``(distance, rays)`` blocks, rays in (sample, lon, lat) order."""
        if per >= n_ray:
            k = max(1, per // n_ray)
            for b0 in range(0, n_batch, k):
                yield {name: t[b0:b0 + k].transpose(0, 1).reshape(t.shape[1], -1) for name, t in fields.items()}
        else:
            for b in range(n_batch):
                for r0 in range(0, n_ray, per):
                    yield {name: t[b, :, r0:r0 + per] for name, t in fields.items()}

    def forward(self, fields: dict) -> torch.Tensor:
        """Observe ``fields`` (dict of ``(B, distance, lon, lat)`` tensors in the field units:
        ``density`` solMass/pc3, ``velocity_los`` km/s, ``temperature`` K, ``x_h2``, ``x_tracer``,
        optional ``temperature_dust`` K).  Returns ``(B, lon, lat, velocity)`` brightness in K,
        or ``(B, n_lines, lon, lat, velocity)`` for several transitions.
        """
        fields = self._check_fields(fields)
        t_min, t_max = float(fields["temperature"].detach().min()), float(fields["temperature"].detach().max())
        if t_min <= 0:
            raise ValueError("field temperature must be > 0 K everywhere; fix the field (validate_field "
                             "checks xarray fields)")
        if self.excitation == "escape":
            lo, hi = self._t_range
            if t_min < lo or t_max > hi:
                warnings.warn(f"kinetic temperatures {t_min:.3g}-{t_max:.3g} K reach outside {lo:g}-{hi:g} K, "
                              f"where the {self.molecule.name} excitation table and its collision rates are "
                              "defined; populations there are those at the nearest edge",
                              TemperatureClampWarning, stacklevel=user_stacklevel())
            _ = self.table  # build or load before the ray loop
        names = list(self.required) + (["temperature_dust"] if self.dust and "temperature_dust" in fields else [])
        n_batch, n_dist, n_lon, n_lat = fields["density"].shape
        n_ray, n_chan = n_lon * n_lat, self.grid.velocity.steps
        flat = {k: fields[k].reshape(n_batch, n_dist, n_ray) for k in names}
        if "turbulent_b" in fields:  # the field's own line widths, per sample or per cell
            flat["turbulent_b"] = self._turbulent_b(fields["turbulent_b"], fields["density"])
        per = self._rays_per_batch(fields["density"].device, fields["density"].element_size())
        n_lines = len(self.lines)
        excess, continuum = [[] for _ in range(n_lines)], [[] for _ in range(n_lines)]
        for block in self._ray_blocks(flat, n_batch, n_ray, per):
            for k, cells in enumerate(self._cell_quantities(block)):
                e, c = transfer_rays(cells, self.grid.velocity, self.lines[k].t0, self.channel_window)
                excess[k].append(e)
                continuum[k].append(c)
        out = [self._finish(torch.cat(e), torch.cat(c), ln, n_batch, n_lon, n_lat, n_chan)
               for e, c, ln in zip(excess, continuum, self.lines)]
        return torch.stack(out, dim=1) if self.multi_line else out[0]

    @staticmethod
    def _turbulent_b(b, density):
        """A field's ``turbulent_b`` as ``(B, 1, rays)`` (one value per sample) or ``(B, distance, rays)``."""
        n_batch, n_dist, n_lon, n_lat = density.shape
        if not isinstance(b, torch.Tensor) or b.device != density.device:
            raise ValueError("field variable 'turbulent_b' must be a tensor on the field's device")
        if bool((b.detach() < 0).any()) or bool(torch.isnan(b.detach()).any()):
            raise ValueError("field variable 'turbulent_b' (km/s) must be >= 0 and not NaN")
        b = b.to(density.dtype)
        if b.numel() == n_batch:
            return b.reshape(n_batch, 1, 1).expand(n_batch, 1, n_lon * n_lat)
        if tuple(b.shape) == tuple(density.shape):
            return b.reshape(n_batch, n_dist, n_lon * n_lat)
        raise ValueError(f"field variable 'turbulent_b' has shape {tuple(b.shape)}; give (B, 1, 1, 1) "
                         f"(one value per sample) or (B, distance, lon, lat) = {tuple(density.shape)}")

    def _finish(self, excess, continuum, line, n_batch, n_lon, n_lat, n_chan):
        """Beam and output convention of one line: ``(B, lon, lat, velocity)`` in K."""
        excess = excess.reshape(n_batch, n_lon, n_lat, n_chan)
        j_cmb = float(rj_temperature(torch.tensor(T_CMB, dtype=torch.float64), line.t0))
        continuum = continuum.reshape(n_batch, n_lon, n_lat) - j_cmb
        if self.beam:
            excess = apply_beam(excess, self.grid)
            if self.dust:
                continuum = apply_beam(continuum, self.grid)
        if self.output == "rayleigh-jeans":
            return excess
        base = continuum.double().unsqueeze(-1) + j_cmb
        t0 = line.t0
        planck = planck_brightness_temperature(base + excess.double(), t0) - planck_brightness_temperature(base, t0)
        return planck.to(excess.dtype)

    # ------------------------------------------------------------------ one block of rays
    def trapping_column(self, block: dict, b) -> torch.Tensor:
        """Molecule column per line width that traps the line, cm-2 per km/s, of a
        ``(distance, rays)`` block (module text); ``b`` the Doppler parameter (km/s)."""
        fwhm = _FWHM_PER_B * b
        n_mol = h2_density(block["density"], block["x_h2"]) * self._n_scale * block["x_tracer"]
        v = block["velocity_los"]
        if v.shape[0] > 1:
            gradient = torch.gradient(v, spacing=self.grid.distance.step, dim=0)[0].abs()
        else:
            gradient = torch.zeros_like(v)
        length = torch.minimum(fwhm / gradient.clamp_min(1e-30), torch.full_like(fwhm, self.trapping_length))
        return n_mol * length * _PC_CM / fwhm

    def _cell_quantities(self, block: dict) -> list[dict]:
        """Per-cell opacities and source terms of a ``(distance, rays)`` block, one dict per line."""
        temperature = block["temperature"]
        rho_h2 = h2_density(block["density"], block["x_h2"])
        b = doppler_parameter(temperature, block.get("turbulent_b", self.turbulent_b), self.line.molecular_mass)
        populations = None
        if self.excitation == "escape":
            levels = [i for pair in self._levels for i in pair]
            populations = self.table.lookup(levels, rho_h2 * self._n_scale, temperature,
                                            self.trapping_column(block, b))
        out = []
        for k, line in enumerate(self.lines):
            if populations is not None:
                x_u, x_l = populations[2 * k], populations[2 * k + 1]
                absorbing = x_l * (line.g_upper / line.g_lower)
                # a masing cell (x_u g_l > x_l g_u) is taken as non-absorbing: its emission stays exact
                factor = (absorbing - x_u).clamp_min(1e-6 * absorbing + 1e-30)
                j = line.t0 * x_u / factor
            else:
                if self.excitation == "subthermal":
                    t_ex = subthermal_excitation_temperature(temperature, rho_h2 * self._n_scale,
                                                             self.critical_density, line.t0)
                else:
                    t_ex = temperature
                factor = upper_level_factor(t_ex, line)
                j = rj_temperature(t_ex, line.t0)
            cells = {"tau": self._tau_scales[k] * block["x_tracer"] * rho_h2 * factor, "j": j, "b": b,
                     "v": block["velocity_los"]}
            if self.dust:
                cells["tau_dust"] = self._dust_scales[k] * block["density"]
                cells["j_dust"] = rj_temperature(block.get("temperature_dust", temperature), line.t0)
            out.append(cells)
        return out


def _check_number(name: str, value, unit: str, positive: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number of {unit}, "
                         f"got {value!r}")
