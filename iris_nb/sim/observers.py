"""Synthetic observers: turn a 3D physical field into a PPV cube.

Two torch modules, batched, differentiable, on whatever device the input tensors live on:

* :class:`SimpleObserver` gives the velocity-resolved H2 mass column ("vrho"), in
  solMass s / (km pc2), i.e. solMass / pc2 per km/s;
* :class:`LineObserver` gives the 13CO(2-1) brightness temperature in K from LTE (or
  sub-thermal) radiative transfer, integrated from the far side of the grid towards the
  observer, continuum-subtracted, convolved with the grid's beam.  Its physics is in
  :mod:`iris_nb.sim.radiative`, the ray loop in :mod:`iris_nb.sim.transfer` and the beam in
  :mod:`iris_nb.sim.beam`.

``forward(fields)`` takes the dict of ``(B, distance, lon, lat)`` tensors made by
:func:`iris_nb.sim.fields.field_tensors` and returns a ``(B, lon, lat, velocity)`` tensor;
``observe(field)`` does the same for xarray fields and returns a labelled DataArray.
"""

from __future__ import annotations

import json
import math
import numbers

import numpy as np
import torch
import xarray as xr

from ..grids import Grid
from .beam import apply_beam, beam_fwhm_pixels, MIN_BEAM_PIXELS
from .fields import REQUIRED_VARIABLES, field_tensors, h2_density, validate_field
from .radiative import (
    DEFAULT_CRITICAL_DENSITY, T_CMB, THIRTEEN_CO_21, LineConstants, doppler_parameter,
    dust_opacity_scale, h2_number_density_scale, line_opacity_scale, planck_brightness_temperature,
    rj_temperature, subthermal_excitation_temperature, upper_level_factor,
)
from .transfer import needs_grad, transfer_rays

__all__ = ["SimpleObserver", "LineObserver"]

_SKY_DIMS = ("lon", "lat", "velocity")


class _Observer(torch.nn.Module):
    """Shared input checks and the xarray front end of the observers."""

    units = ""
    input_space = ""
    required: tuple = ()

    def __init__(self, grid: Grid):
        super().__init__()
        if not isinstance(grid, Grid):
            raise TypeError(f"an observer needs an iris_nb.grids.Grid, got {type(grid).__name__}; "
                            "use e.g. iris_nb.grids.SMALL")
        self.grid = grid

    @property
    def config(self) -> dict:
        """JSON-ready description of the observer (class name and settings, not the grid)."""
        return {"observer": type(self).__name__}

    def _beam_applied(self) -> float:
        return 0.0

    def _check_fields(self, fields) -> dict:
        """Validate the dict of ``(B, distance, lon, lat)`` tensors; return it (floating, same device)."""
        if not isinstance(fields, dict):
            raise TypeError(f"{type(self).__name__} takes a dict of (B, distance, lon, lat) tensors "
                            f"(iris_nb.sim.fields.field_tensors), got {type(fields).__name__}; "
                            "for an xarray field use .observe(field)")
        missing = [k for k in self.required if k not in fields]
        if missing:
            raise ValueError(f"{type(self).__name__} needs the field variables {list(self.required)}; "
                             f"missing {missing} (make the dict with field_tensors)")
        g = self.grid
        expected = (g.distance.steps, g.lon.steps, g.lat.steps)
        first = fields[self.required[0]]
        for name in self.required + tuple(k for k in ("temperature_dust",) if k in fields):
            t = fields[name]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"field variable {name!r} must be a torch.Tensor, got {type(t).__name__}")
            if t.ndim != 4 or tuple(t.shape[1:]) != expected:
                raise ValueError(f"field variable {name!r} has shape {tuple(t.shape)}; the grid expects "
                                 f"(B, distance, lon, lat) = (B, {expected[0]}, {expected[1]}, {expected[2]}); "
                                 "make the field on this observer's grid or build the observer on the field's grid")
            if t.shape[0] != first.shape[0] or t.device != first.device or t.dtype != first.dtype:
                raise ValueError(f"field variable {name!r} ({tuple(t.shape)}, {t.dtype}, {t.device}) does not "
                                 f"match {self.required[0]!r} ({tuple(first.shape)}, {first.dtype}, {first.device}); "
                                 "give every variable the same batch size, dtype and device")
            if not t.is_floating_point():
                raise TypeError(f"field variable {name!r} must be a floating-point tensor, got {t.dtype}")
        return fields

    def observe(self, field_or_fields, device=None, dtype=torch.float32) -> xr.DataArray:
        """Observe one field (or a list of fields) given as xarray Datasets.

        Parameters
        ----------
        field_or_fields:
            A physical field (:mod:`iris_nb.sim.fields`) on this observer's grid, or a list of them.
        device, dtype:
            Where and in what precision to compute (default CPU, float32).

        Returns
        -------
        xarray.DataArray
            ``(lon, lat, velocity)``, or ``(sample, lon, lat, velocity)`` for a list, float32, in
            :attr:`units`, with coords in deg, deg, km/s and attrs ``units``, ``rest_frequency``
            (GHz), ``line``, ``beam_fwhm`` (arcsec, 0 when no beam was applied), ``source`` and
            ``observer`` (JSON settings).
        """
        single = isinstance(field_or_fields, xr.Dataset)
        fields = [field_or_fields] if single else list(field_or_fields)
        if not fields:
            raise ValueError("observe() got an empty list of fields; pass at least one field")
        for i, field in enumerate(fields):
            if not isinstance(field, xr.Dataset):
                raise TypeError(f"item {i} is a {type(field).__name__}; observe() takes xarray field Datasets")
            validate_field(field, self.grid)
        tensors = field_tensors(fields, device=device, dtype=dtype, validate=False)
        with torch.no_grad():
            cube = self(tensors).detach().to("cpu", torch.float32).numpy()
        models = sorted({str(f.attrs.get("model", "unknown")) for f in fields})
        seeds = [int(f.attrs.get("seed", -1)) for f in fields]
        attrs = {
            "units": self.units,
            "rest_frequency": self.grid.rest_frequency,
            "line": self.grid.line,
            "beam_fwhm": self._beam_applied(),
            "source": f"iris_nb.sim.{type(self).__name__} of {', '.join(models)} "
                      f"(seed {seeds[0] if single else seeds})",
            "observer": json.dumps(self.config, sort_keys=True),
        }
        coords = {name: self.grid.coord(name) for name in _SKY_DIMS}
        if single:
            return xr.DataArray(cube[0], dims=_SKY_DIMS, coords=coords, attrs=attrs)
        coords["sample"] = ("sample", np.arange(len(fields)))
        coords["seed"] = ("sample", np.asarray(seeds, dtype=np.int64))
        return xr.DataArray(cube, dims=("sample",) + _SKY_DIMS, coords=coords, attrs=attrs)


# ============================================================================ SimpleObserver
class SimpleObserver(_Observer):
    """Velocity-resolved H2 mass column: the "vrho" cube of IRIS, without radiative transfer.

    Each distance cell deposits its H2 mass column ``rho_H2 * dr`` (solMass / pc2) into the two
    velocity channels whose centres bracket its ``velocity_los``, with linear (tent) weights,
    divided by the channel width.  The velocity integral of a spectrum, ``sum * dv``, therefore
    equals ``sum(rho_H2 dr)`` over the cells exactly (to rounding) for every cell whose velocity
    lies inside the velocity window ``[velocity.start, velocity.stop]``; cells outside it are
    dropped.  In the outer half channels (between the window edge and the first or last channel
    centre) the whole column goes to the edge channel, so no gas inside the window is lost.

    Output of ``forward``: ``(B, lon, lat, velocity)`` in solMass s / (km pc2) (``units``).
    Without gradients the sum runs over distance cells in a fixed order with no colliding
    writes, so repeated runs give identical bits (on GPU too); with gradients one scatter per
    block of cells is used instead (same values to rounding).
    """

    units = "solMass s / (km pc2)"
    input_space = "vrho"
    required = ("density", "x_h2", "velocity_los")

    def _weights(self, density, x_h2, velocity):
        """Channel indices (long) and column per channel width of a block of cells."""
        axis = self.grid.velocity
        n_chan = axis.steps
        column = h2_density(density, x_h2) * (self.grid.distance.step / axis.step)
        inside = (velocity >= axis.start) & (velocity <= axis.stop)
        column = torch.where(inside, column, torch.zeros_like(column))
        position = ((velocity - axis.start) / axis.step - 0.5).clamp(0.0, n_chan - 1.0)
        low = position.detach().floor().clamp(0, max(n_chan - 2, 0))
        w_high = position - low
        i_low = low.long()
        i_high = (i_low + 1).clamp_max(n_chan - 1)
        return i_low, i_high, column * (1.0 - w_high), column * w_high

    def forward(self, fields: dict) -> torch.Tensor:
        """Observe ``fields`` (dict of ``(B, distance, lon, lat)`` tensors: ``density`` solMass/pc3,
        ``x_h2``, ``velocity_los`` km/s).  Returns ``(B, lon, lat, velocity)`` in solMass s / (km pc2).
        """
        fields = self._check_fields(fields)
        density, x_h2, velocity = (fields[k] for k in self.required)
        n_batch, n_dist, n_lon, n_lat = density.shape
        n_ray, n_chan = n_lon * n_lat, self.grid.velocity.steps
        density, x_h2, velocity = (t.reshape(n_batch, n_dist, n_ray) for t in (density, x_h2, velocity))
        out = density.new_zeros(n_batch, n_ray, n_chan)
        if needs_grad((density, x_h2, velocity)):
            # one differentiable scatter per block of distance cells
            block = max(1, 2**24 // max(1, n_batch * n_ray))
            for d0 in range(0, n_dist, block):
                sl = slice(d0, d0 + block)
                i_low, i_high, w_low, w_high = self._weights(density[:, sl], x_h2[:, sl], velocity[:, sl])
                index = torch.cat([i_low, i_high], dim=1).transpose(1, 2)
                source = torch.cat([w_low, w_high], dim=1).transpose(1, 2)
                out = out.scatter_add(2, index, source)
        else:
            for d in range(n_dist):
                i_low, i_high, w_low, w_high = self._weights(density[:, d], x_h2[:, d], velocity[:, d])
                index = torch.stack([i_low, i_high], dim=-1)
                out.scatter_add_(2, index, torch.stack([w_low, w_high], dim=-1))
        return out.reshape(n_batch, n_lon, n_lat, n_chan)


# ============================================================================ LineObserver
_OUTPUTS = ("rayleigh-jeans", "planck")


class LineObserver(_Observer):
    """13CO(2-1) brightness temperature from radiative transfer along each line of sight.

    Per cell: excitation temperature ``T_ex`` = kinetic temperature (LTE) or, with
    ``subthermal=True``, the two-level value of
    :func:`~iris_nb.sim.radiative.subthermal_excitation_temperature` from the H2 number density
    and ``critical_density``; upper-level column from the partition function; line profile with
    ``b^2 = 2kT/m + turbulent_b^2`` averaged over each channel (erf formula, flux-conserving);
    optical depth with ``c^3 / nu^3``.  With ``dust=True`` a dust continuum (gas-to-dust 100,
    0.899 cm2/g at 230 GHz, beta = 1.8; dust temperature ``temperature_dust`` or the gas
    temperature) absorbs and emits too.  The transfer starts at the far edge of the grid with
    the CMB (2.725 K) and runs cell by cell towards the observer.  The output is the
    continuum-subtracted intensity as a Rayleigh-Jeans temperature ``J(I) - J(I_cont)``
    (``output="rayleigh-jeans"``) or the difference of Planck brightness temperatures
    (``output="planck"``), convolved with the grid's Gaussian beam (``beam=True``,
    :mod:`iris_nb.sim.beam`), in K.

    Parameters
    ----------
    grid:
        Geometry, rest frequency (must match ``line``) and beam.
    turbulent_b:
        Microturbulent Doppler parameter, km/s (``b = sqrt(2) sigma``); default 2 km/s.
    subthermal, critical_density:
        Sub-thermal excitation switch and the critical density in cm-3.
    dust:
        Include the dust continuum (then subtracted from the output).
    output:
        ``"rayleigh-jeans"`` or ``"planck"``.
    beam:
        Convolve with the grid's beam (skipped when it is below 0.1 pixel).
    ray_batch:
        Lines of sight transferred together (working set about
        ``ray_batch * (10 distance + 4 velocity)`` values, plus the autograd graph when
        differentiating); ``None`` keeps it near 256 MiB on CPU and an eighth of the free
        memory (at most 4 GiB) on GPU.  Several whole samples share a batch when they fit.
    channel_window:
        Only channels within ``channel_window`` Doppler parameters of a cell's velocity are
        updated for that cell (the profile there is below ``erfc(channel_window)``, 1.5e-12
        for 5); ``None`` evaluates every channel for every cell (slow reference).
    line:
        Molecular constants (:data:`~iris_nb.sim.radiative.THIRTEEN_CO_21`).
    """

    units = "K"
    input_space = "T"
    required = REQUIRED_VARIABLES

    def __init__(self, grid: Grid, *, turbulent_b: float = 2.0, subthermal: bool = False,
                 critical_density: float = DEFAULT_CRITICAL_DENSITY, dust: bool = False,
                 output: str = "rayleigh-jeans", beam: bool = True, ray_batch: int | None = None,
                 channel_window: float | None = 5.0, line: LineConstants = THIRTEEN_CO_21):
        super().__init__(grid)
        if not (isinstance(turbulent_b, numbers.Real) and math.isfinite(turbulent_b) and turbulent_b >= 0):
            raise ValueError(f"turbulent_b is the microturbulent Doppler parameter in km/s (>= 0), got {turbulent_b!r}")
        if not (isinstance(critical_density, numbers.Real) and math.isfinite(critical_density) and critical_density > 0):
            raise ValueError(f"critical_density must be a positive number of cm-3, got {critical_density!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if ray_batch is not None and (int(ray_batch) != ray_batch or ray_batch < 1):
            raise ValueError(f"ray_batch must be a positive integer or None (automatic), got {ray_batch!r}")
        if channel_window is not None and not (isinstance(channel_window, numbers.Real)
                                               and math.isfinite(channel_window) and channel_window >= 3):
            raise ValueError(f"channel_window is in Doppler parameters and must be >= 3 (or None for "
                             f"every channel), got {channel_window!r}")
        if not isinstance(line, LineConstants):
            raise TypeError(f"line must be a LineConstants, got {type(line).__name__}")
        if not math.isclose(line.rest_frequency, grid.rest_frequency, rel_tol=1e-6):
            raise ValueError(f"the grid is for {grid.line} at {grid.rest_frequency} GHz but the line constants "
                             f"are for {line.name} at {line.rest_frequency} GHz; pass matching line= constants "
                             "or a grid with that rest_frequency")
        self.turbulent_b = float(turbulent_b)
        self.subthermal = bool(subthermal)
        self.critical_density = float(critical_density)
        self.dust = bool(dust)
        self.output = output
        self.beam = bool(beam)
        self.ray_batch = None if ray_batch is None else int(ray_batch)
        self.channel_window = None if channel_window is None else float(channel_window)
        self.line = line
        self._tau_scale = line_opacity_scale(line) * grid.distance.step
        self._dust_scale = dust_opacity_scale(line.rest_frequency) * grid.distance.step
        self._n_scale = h2_number_density_scale()

    @property
    def config(self) -> dict:
        return {"observer": "LineObserver", "line": self.line.name, "turbulent_b": self.turbulent_b,
                "subthermal": self.subthermal, "critical_density": self.critical_density,
                "dust": self.dust, "output": self.output, "beam": self.beam,
                "channel_window": self.channel_window}

    def _beam_applied(self) -> float:
        used = self.beam and max(beam_fwhm_pixels(self.grid)) >= MIN_BEAM_PIXELS
        return self.grid.beam_fwhm if used else 0.0

    # ------------------------------------------------------------------ batching of rays
    def _rays_per_batch(self, device, itemsize: int) -> int:
        """Rays per block: ``ray_batch``, or what fits the working-set budget (see class text)."""
        if self.ray_batch is not None:
            return self.ray_batch
        budget = 2**28  # bytes: 256 MiB on CPU
        device = torch.device(device)
        if device.type == "cuda":  # an eighth of the free memory, between 256 MiB and 4 GiB
            free, _ = torch.cuda.mem_get_info(device)
            budget = min(2**32, max(budget, free // 8))
        per_ray = (10 * self.grid.distance.steps + 4 * self.grid.velocity.steps) * itemsize
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
        optional ``temperature_dust`` K).  Returns ``(B, lon, lat, velocity)`` brightness in K.
        """
        fields = self._check_fields(fields)
        if float(fields["temperature"].detach().min()) <= 0:
            raise ValueError("field temperature must be > 0 K everywhere; fix the field (validate_field "
                             "checks xarray fields)")
        names = list(self.required) + (["temperature_dust"] if self.dust and "temperature_dust" in fields else [])
        n_batch, n_dist, n_lon, n_lat = fields["density"].shape
        n_ray, n_chan = n_lon * n_lat, self.grid.velocity.steps
        flat = {k: fields[k].reshape(n_batch, n_dist, n_ray) for k in names}
        per = self._rays_per_batch(fields["density"].device, fields["density"].element_size())
        excess, continuum = [], []
        for block in self._ray_blocks(flat, n_batch, n_ray, per):
            e, c = transfer_rays(self._cell_quantities(block), self.grid.velocity, self.line.t0,
                                 self.channel_window)
            excess.append(e)
            continuum.append(c)
        excess = torch.cat(excess).reshape(n_batch, n_lon, n_lat, n_chan)
        j_cmb = float(rj_temperature(torch.tensor(T_CMB, dtype=torch.float64), self.line.t0))
        continuum = torch.cat(continuum).reshape(n_batch, n_lon, n_lat) - j_cmb
        if self.beam:
            excess = apply_beam(excess, self.grid)
            if self.dust:
                continuum = apply_beam(continuum, self.grid)
        if self.output == "rayleigh-jeans":
            return excess
        base = continuum.double().unsqueeze(-1) + j_cmb
        t0 = self.line.t0
        planck = planck_brightness_temperature(base + excess.double(), t0) - planck_brightness_temperature(base, t0)
        return planck.to(excess.dtype)

    # ------------------------------------------------------------------ one block of rays
    def _cell_quantities(self, block: dict) -> dict:
        """Per-cell opacities and source terms of a ``(distance, rays)`` block."""
        temperature = block["temperature"]
        rho_h2 = h2_density(block["density"], block["x_h2"])
        if self.subthermal:
            t_ex = subthermal_excitation_temperature(temperature, rho_h2 * self._n_scale,
                                                     self.critical_density, self.line.t0)
        else:
            t_ex = temperature
        out = {
            "tau": self._tau_scale * block["x_tracer"] * rho_h2 * upper_level_factor(t_ex, self.line),
            "j": rj_temperature(t_ex, self.line.t0),
            "b": doppler_parameter(temperature, self.turbulent_b, self.line.molecular_mass),
            "v": block["velocity_los"],
        }
        if self.dust:
            out["tau_dust"] = self._dust_scale * block["density"]
            out["j_dust"] = rj_temperature(block.get("temperature_dust", temperature), self.line.t0)
        return out
