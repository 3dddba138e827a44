"""``CMZModel``: the parametric CMZ of :func:`~iris_nb.sim.cmz.make_cmz` as batched torch code.

``CMZModel(grid, **fixed).sample(seeds, device=...)`` draws a batch of gas fields on any
device and returns the dict of ``(B, distance, lon, lat)`` tensors the observers take
(:func:`~iris_nb.sim.fields.field_tensors` layout and units).  It is the data engine of
on-the-fly training (:class:`~iris_nb.data.stream.FieldStream`) and of
``write_dataset(..., device=...)``: on a GPU the gas never visits the CPU.

What is the same as ``make_cmz`` for the same seed, and what is not
----------------------------------------------------------------------
* The parameters (:meth:`CMZModel.parameters`) and the dense clouds are drawn by the very
  same numpy code from the same seed streams, so they are identical: ``make_cmz(grid, seed)``
  and ``CMZModel(grid).sample([seed])`` describe the same CMZ.
* The turbulent density and velocity fields have the same power spectra and normalisation,
  but their random phases come from a torch generator seeded from the sample's seed (on the
  sample's device), not from numpy: the realisations differ, their statistics agree (the
  tests compare mass, velocity moments and spectra).  The same seed gives the same field on
  the same kind of device, whatever the batch it is drawn in.
* The distance to a dust lane is found on its Bezier curve itself (projection on its chord, then
  3 Newton steps), where numpy takes the nearest of points every 0.25 pc along it.

Everything else (ring, open stream, lopsidedness, twist, clouds, diffuse disc, latitude
offset, the density-dependent temperature, H2 fraction and abundance) is the formula of
:mod:`iris_nb.sim.cmz`, evaluated in float32 for a sub-batch of samples at once.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch

from ..grids import Grid, get_grid
from .cmz import VELOCITY_SPECTRUM_SLOPE, draw_cmz_parameters, draw_structure, latitude_groups
from .cmz_planes import plane_maps
from .engine import as_seeds, existing_device, free_memory, torch_seed

__all__ = ["CMZModel", "FIELD_VARIABLES"]

FIELD_VARIABLES = ("density", "velocity_los", "temperature", "x_h2", "x_tracer", "temperature_dust")
"""The ``(B, distance, lon, lat)`` tensors :meth:`CMZModel.sample` returns (plus ``turbulent_b``)."""

_TEMPORARIES = 14  # float32 volumes alive at once per sample while a sub-batch is built (measured bound)
_CELL_BUDGET = {"cpu": 1 << 19, "gpu": 1 << 25}  # cells of one sub-batch (CPU: small enough for its caches)


def _cell_budget(device: torch.device) -> int:
    return _CELL_BUDGET["cpu" if device.type == "cpu" else "gpu"]


_KEYS = ("ring_a", "ring_b", "major_x", "major_y", "minor_x", "minor_y", "omega", "twist", "twist_phase",
         "coverage", "gap_phase", "lopsidedness", "lopsided_phase", "ring_width", "ring_density", "ring_speed",
         "ring_semi_major", "lane_density", "lane_width", "lane_speed", "p0x", "p0y", "ax", "ay", "cx", "cy",
         "diffuse_density", "diffuse_scale_length", "diffuse_height", "scale_height", "z_offset", "velocity_dispersion",
         "turbulence_sigma", "density_scale", "molecular_density", "temperature_dense", "temperature_diffuse",
         "tracer_abundance", "dust_temperature", "turbulence_slope")
_COLUMN = {key: i for i, key in enumerate(_KEYS)}


class _Sample:
    """The numpy part of one sample: parameters, ring, lane curve and cloud boxes, as one row."""

    def __init__(self, grid: Grid, seed: int, fixed: dict):
        drawn = draw_structure(grid, seed, fixed)
        p, ring, z_offset, streams = drawn.parameters, drawn.ring, drawn.z_offset, drawn.streams
        self.p = p
        begin, control, end = drawn.lanes.bezier  # B(t) = P0 + 2 t A + t^2 C
        a_vec, c_vec = control - begin, begin - 2 * control + end
        self.boxes = drawn.boxes
        self.density_seed = torch_seed(streams[2])
        self.velocity_seed = torch_seed(streams[3])
        values = {"ring_a": ring.a, "ring_b": ring.b, "major_x": ring.major[0], "major_y": ring.major[1],
                  "minor_x": ring.minor[0], "minor_y": ring.minor[1], "omega": ring.omega, "twist": ring.twist,
                  "twist_phase": ring.twist_phase, "coverage": ring.coverage, "gap_phase": ring.gap_phase,
                  "lopsidedness": ring.lopsidedness, "lopsided_phase": ring.lopsided_phase,
                  "p0x": begin[0], "p0y": begin[1], "ax": a_vec[0], "ay": a_vec[1], "cx": c_vec[0], "cy": c_vec[1],
                  "z_offset": z_offset}
        self.row = [float(values[key] if key in values else p[key]) for key in _KEYS]


class CMZModel:
    """Batched torch version of :func:`~iris_nb.sim.cmz.make_cmz` on any device.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` (or preset name) of the fields.
    **fixed:
        Parameters of :data:`~iris_nb.sim.cmz.CMZ_PARAMETERS` held fixed for every sample
        (checked now; unknown names raise :class:`TypeError`).

    Examples
    --------
    >>> gas = CMZModel(grids.SMALL)                                  # doctest: +SKIP
    >>> fields = gas.sample(range(8), device="cuda")                 # doctest: +SKIP
    >>> fields["density"].shape   # (8, distance, lon, lat)          # doctest: +SKIP
    """

    def __init__(self, grid: Grid | str, **fixed):
        self.grid = get_grid(grid)
        draw_cmz_parameters(np.random.default_rng(0), **dict(fixed))  # names and values checked before any work
        self.fixed = dict(fixed)
        d, lon, lat = self.grid.distance.centers(), self.grid.lon.centers(), self.grid.lat.centers()
        self._d, self._lon, self._lat = d, lon, lat
        self.shape = (d.size, lon.size, lat.size)
        mid = 0.5 * (self.grid.distance.start + self.grid.distance.stop)
        self._spacing = (self.grid.distance.step, math.radians(self.grid.lon.step) * mid,
                         math.radians(self.grid.lat.step) * mid)
        self._groups = latitude_groups(self.grid)
        self._cache: dict = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # device tensors stay behind (rebuilt on use)
        return state

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in sorted(self.fixed.items()))
        return f"CMZModel(grid={self.grid.name!r}{extra})"

    # ------------------------------------------------------------------ draws
    def parameters(self, seeds) -> list[dict]:
        """The parameter dicts of ``seeds``: identical to ``make_cmz``'s for the same seeds."""
        return [_Sample(self.grid, s, self.fixed).p for s in as_seeds(seeds)]

    def bytes_per_sample(self) -> int:
        """Peak device memory one sample of a sub-batch needs while it is built (bytes)."""
        cells = int(np.prod(self.shape))
        return cells * 4 * (_TEMPORARIES + len(FIELD_VARIABLES))

    def check_memory(self, batch: int, device) -> None:
        """Raise ``MemoryError`` (saying how much is needed and what to lower) when a batch of
        ``batch`` fields and the work space to build them do not fit on ``device``."""
        device = existing_device(device)
        cells = int(np.prod(self.shape))
        sub = max(1, min(batch, _cell_budget(device) // max(cells, 1)))
        need = batch * cells * 4 * (len(FIELD_VARIABLES)) + sub * cells * 4 * _TEMPORARIES
        free = free_memory(device)
        if free is not None and need > free:
            fits = max(0, (free - min(sub, 1) * cells * 4 * _TEMPORARIES) // (cells * 4 * len(FIELD_VARIABLES)))
            raise MemoryError(f"a batch of {batch} {self.grid.name} fields needs about {need / 2**30:.1f} GiB on "
                              f"{device} but only {free / 2**30:.1f} GiB are free; lower the batch to {int(fits)} "
                              "or fewer, or use a smaller grid")

    # ------------------------------------------------------------------ grids
    def _geometry(self, device: torch.device):
        key = ("geometry", str(device))
        if key not in self._cache:
            r0 = self.grid.observer_distance
            lon = np.radians(self._lon)
            groups = []
            for cos_g, runs in self._groups:
                x = (self._d[:, None] * cos_g) * np.sin(lon)[None, :]
                y = (self._d[:, None] * cos_g) * np.cos(lon)[None, :] - r0
                norm = np.hypot(x, y + r0)
                tensors = [torch.as_tensor(a, dtype=torch.float32, device=device)
                           for a in (x, y, x / norm, (y + r0) / norm)]
                groups.append((tensors, runs))
            b = np.radians(self._lat)
            z = torch.as_tensor(self._d[:, None] * np.sin(b)[None, :], dtype=torch.float32, device=device)
            cos_b = torch.as_tensor(np.cos(b), dtype=torch.float32, device=device)
            self._cache[key] = (groups, z, cos_b)
        return self._cache[key]

    def _log_k2(self, device: torch.device) -> torch.Tensor:
        """``log k^2`` on the half spectrum of the grid (k = 0 set to 0; its amplitude is zeroed)."""
        key = ("log_k2", str(device))
        if key not in self._cache:
            k2 = None
            for axis, (n, step) in enumerate(zip(self.shape, self._spacing)):
                real = axis == 2
                freq = np.fft.rfftfreq(n, d=step) if real else np.fft.fftfreq(n, d=step)
                k = torch.as_tensor(2.0 * np.pi * freq, dtype=torch.float32, device=device)
                view = [1, 1, 1]
                view[axis] = -1
                term = k.reshape(view) ** 2
                k2 = term if k2 is None else k2 + term
            k2[0, 0, 0] = 1.0
            self._cache[key] = torch.log(k2)
        return self._cache[key]

    def _amplitude(self, slope, device: torch.device) -> torch.Tensor:
        """``k^(-slope / 2)`` on the half spectrum (zero at k = 0); ``slope`` a float (cached) or
        a ``(b, 1, 1, 1)`` tensor."""
        if isinstance(slope, float):
            key = ("amplitude", slope, str(device))
            if key not in self._cache:
                self._cache[key] = self._amplitude(torch.full((1, 1, 1, 1), slope, device=device), device)
            return self._cache[key]
        amplitude = torch.exp(self._log_k2(device) * (-0.25 * slope))
        amplitude[:, 0, 0, 0] = 0.0
        return amplitude

    def _gaussian_fields(self, seeds: list[int], slope, out: torch.Tensor) -> None:
        """Unit-variance Gaussian random fields with ``P(k) ~ k^-slope`` into ``out`` ``(b, distance, lon, lat)``.

        ``slope`` is a float or a ``(b, 1, 1, 1)`` tensor.  Each sample is made on its own
        (phases from a generator seeded with ``seeds[i]`` on ``out``'s device, its own FFT and
        float64 normalisation), so a field does not depend on the batch it is drawn in.
        """
        device = out.device
        half = tuple(self._log_k2(device).shape)
        amplitude = self._amplitude(slope, device)
        noise = torch.empty(half + (2,), dtype=torch.float32, device=device)
        spectrum = torch.view_as_complex(noise)
        for i, seed in enumerate(seeds):
            noise.normal_(generator=torch.Generator(device=device).manual_seed(seed))
            spectrum.mul_(amplitude[i if amplitude.shape[0] > 1 else 0])
            if device.type == "cpu":  # scipy's pocketfft is about 2x torch's CPU FFT on these shapes
                out[i].copy_(torch.from_numpy(scipy.fft.irfftn(spectrum.numpy(), s=self.shape, workers=1,
                                                               overwrite_x=True)))
            else:
                torch.fft.irfftn(spectrum, s=self.shape, out=out[i])
            rms = math.sqrt(float(out[i].square().sum(dtype=torch.float64)) / out[i].numel())
            out[i].mul_(1.0 / rms if rms > 0 else 0.0)

    # ------------------------------------------------------------------ sampling
    def sample(self, seeds, device=None, dtype=torch.float32) -> dict:
        """Draw the fields of ``seeds`` on ``device``.

        Parameters
        ----------
        seeds:
            Non-negative integers, one per sample (list, tuple, range, array or tensor).
        device:
            Where the fields are built and returned (default CPU); ``"cuda"`` needs a GPU.
        dtype:
            Float dtype of the returned tensors (the work is float32).

        Returns
        -------
        dict[str, Tensor]
            ``density`` (solMass / pc3), ``velocity_los`` (km/s, v_LSR), ``temperature`` (K),
            ``x_h2``, ``x_tracer``, ``temperature_dust`` (K) as ``(B, distance, lon, lat)`` and
            ``turbulent_b`` (km/s) as ``(B, 1, 1, 1)``: what the observers take.
        """
        seeds = as_seeds(seeds)
        device = existing_device(device)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.check_memory(len(seeds), device)
        cells = int(np.prod(self.shape))
        sub = max(1, _cell_budget(device) // cells)
        out = {name: torch.empty((len(seeds),) + self.shape, dtype=torch.float32, device=device)
               for name in FIELD_VARIABLES}
        parts = [(start, seeds[start:start + sub]) for start in range(0, len(seeds), sub)]
        samples: dict[int, _Sample] = {}

        def build(part):
            start, chunk = part
            drawn = [_Sample(self.grid, s, self.fixed) for s in chunk]
            samples[start] = drawn
            self._build(drawn, device, out, start)

        if device.type == "cpu":
            # one intra-op thread per sample, samples in parallel: small tensors scale badly over
            # threads, and a field then never depends on the thread count or its batch
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                if threads > 1 and len(parts) > 1:
                    with ThreadPoolExecutor(min(threads, len(parts))) as pool:
                        list(pool.map(build, parts))
                else:
                    for part in parts:
                        build(part)
            finally:
                torch.set_num_threads(threads)
        else:
            for part in parts:
                build(part)
        samples = [s for start in sorted(samples) for s in samples[start]]
        if dtype != torch.float32:
            out = {name: value.to(dtype) for name, value in out.items()}
        out["turbulent_b"] = torch.tensor([s.p["turbulent_b"] for s in samples], dtype=dtype,
                                          device=device).reshape(-1, 1, 1, 1)
        return out

    def field(self, seed: int, device=None):
        """One sample as an xarray field (like ``make_cmz``), built on ``device``."""
        from .fields import field_from_arrays

        tensors = self.sample([seed], device=device)
        arrays = {name: tensors[name][0].cpu().numpy() for name in FIELD_VARIABLES}
        p = _Sample(self.grid, seed, self.fixed).p
        return field_from_arrays(self.grid, **arrays, turbulent_b=p["turbulent_b"], parameters=p, seed=int(seed),
                                 model="CMZModel")

    def __call__(self, grid: Grid | str, seed: int = 0):
        """``model(grid, seed=...)``: one field as xarray, so a CMZModel is a gas model wherever
        one is taken (``GasModelDataset``, ``write_dataset``)."""
        if get_grid(grid) != self.grid:
            raise ValueError(f"this CMZModel is on grid {self.grid.name!r}, asked for {get_grid(grid).name!r}")
        return self.field(seed)

    # ------------------------------------------------------------------ the physics, batched
    def _build(self, samples, device, out: dict, start: int) -> None:
        """Write the gas of a sub-batch into ``out[name][start:start + b]`` (float32 on ``device``)."""
        groups, z_all, cos_all = self._geometry(device)
        # one (parameter, sample) table per sub-batch: one host -> device copy, contiguous rows
        table = torch.tensor([s.row for s in samples], dtype=torch.float32).t().contiguous().to(device)

        def q(key, dims=3):
            return table[_COLUMN[key]].view((-1,) + (1,) * (dims - 1))

        def q4(key):
            return q(key, 4)

        n = len(samples)
        rows = slice(start, start + n)
        density, velocity = out["density"][rows], out["velocity_los"][rows]
        self._gaussian_fields([s.density_seed for s in samples], q4("turbulence_slope"), density)
        self._gaussian_fields([s.velocity_seed for s in samples], float(VELOCITY_SPECTRUM_SLOPE), velocity)
        h, hd, sigma = q4("scale_height"), q4("diffuse_height"), q4("turbulence_sigma")
        ring_c = math.sqrt(0.5) / h  # exp(-((z - z_ring) ring_c)^2) is the ring's vertical profile
        density_factor = q4("density_scale") * torch.exp(-0.5 * sigma * sigma)
        for (x, y, ux, uy), runs in groups:
            maps = {k: v.unsqueeze(-1) for k, v in plane_maps(q, x, y, ux, uy).items()}
            ring_z = maps["ring_z"] * ring_c
            lane_v, diffuse_v = maps["lane"] * maps["v_lane"], maps["diffuse"] * maps["v_diffuse"]
            for b0, b1 in runs:
                z = z_all[:, None, b0:b1] - q4("z_offset")  # (b, D, 1, nb): height above the CMZ mid-plane
                e_lane, e_diffuse = torch.exp(-0.5 * (z / h) ** 2), torch.exp(-0.5 * (z / hd) ** 2)  # small
                total = torch.sub(z * ring_c, ring_z).square_().neg_().exp_().mul_(maps["ring"])  # the ring ...
                self._add_clouds(total, samples, x, y, z, b0, b1)  # ... and its clouds
                v_sum = torch.mul(total, maps["v_ring"])
                v_sum.addcmul_(lane_v, e_lane).addcmul_(diffuse_v, e_diffuse).mul_(cos_all[b0:b1])
                total.addcmul_(maps["lane"], e_lane).addcmul_(maps["diffuse"], e_diffuse).clamp_min_(1e-30)
                sl = (slice(None), slice(None), slice(None), slice(b0, b1))
                velocity[sl].mul_(q4("velocity_dispersion")).addcdiv_(v_sum, total)  # turbulence + mean
                del v_sum
                density[sl].mul_(sigma).exp_().mul_(total.mul_(density_factor))  # log-normal factor x structure
                del total
        inverse = (density + q4("molecular_density")).reciprocal_()
        molecular = torch.mul(density, inverse, out=out["x_h2"][rows])  # (becomes x_h2 below)
        torch.mul(molecular, q4("tracer_abundance"), out=out["x_tracer"][rows])
        diffuse_fraction = inverse.mul_(q4("molecular_density"))
        molecular.mul_(0.5)
        t_dense = q4("temperature_dense")
        torch.addcmul(t_dense, diffuse_fraction, q4("temperature_diffuse") - t_dense, out=out["temperature"][rows])
        t_dust = q4("dust_temperature")
        torch.addcmul(t_dust, diffuse_fraction, 0.2 * t_dust, out=out["temperature_dust"][rows])

    @staticmethod
    def _add_clouds(w_ring, samples, x, y, z, b0, b1) -> None:
        """Add each sample's clouds to ``w_ring`` (b, D, L, nb) inside their 5-sigma boxes, in place."""
        for i, sample in enumerate(samples):
            for (cd0, cd1, l0, l1, cb0, cb1), (xc, yc, zc, rc, peak) in sample.boxes:
                j0, j1 = max(cb0, b0), min(cb1, b1)
                if cd0 >= cd1 or l0 >= l1 or j0 >= j1:
                    continue
                dx = x[cd0:cd1, l0:l1, None] - xc
                dy = y[cd0:cd1, l0:l1, None] - yc
                dz = z[i, cd0:cd1, :, j0 - b0:j1 - b0] - zc
                r2 = dx * dx + dy * dy + dz * dz
                w_ring[i, cd0:cd1, l0:l1, j0 - b0:j1 - b0] += r2.mul_(-0.5 / (rc * rc)).exp_().mul_(peak)

