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
import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch

from ..grids import Grid, get_grid
from .cmz import VELOCITY_SPECTRUM_SLOPE, _latitude_groups, draw_cmz_parameters, draw_structure
from .kinematics import SUN_CIRCULAR_VELOCITY

__all__ = ["CMZModel", "FIELD_VARIABLES"]

FIELD_VARIABLES = ("density", "velocity_los", "temperature", "x_h2", "x_tracer", "temperature_dust")
"""The ``(B, distance, lon, lat)`` tensors :meth:`CMZModel.sample` returns (plus ``turbulent_b``)."""

_TEMPORARIES = 14  # float32 volumes alive at once per sample while a sub-batch is built (measured bound)
_CELL_BUDGET = {"cpu": 1 << 19, "gpu": 1 << 25}  # cells of one sub-batch (CPU: small enough for its caches)


def _cell_budget(device: torch.device) -> int:
    return _CELL_BUDGET["cpu" if device.type == "cpu" else "gpu"]
_NEWTON_STEPS = 3  # on the distance to a lane's Bezier curve (worst error 0.05 pc within 6 widths)


def _torch_seed(sequence: np.random.SeedSequence) -> int:
    words = sequence.generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) % 2**63)


def _as_seeds(seeds) -> list[int]:
    if isinstance(seeds, (numbers.Integral, np.integer)) and not isinstance(seeds, bool):
        raise TypeError(f"seeds must be a list of non-negative integers (one per sample), got the single integer "
                        f"{seeds!r}; write [{seeds}]")
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.detach().cpu().reshape(-1).tolist()
    elif isinstance(seeds, np.ndarray):
        seeds = seeds.reshape(-1).tolist()
    if not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a list, tuple, range, numpy array or tensor of non-negative integers, got "
                        f"{type(seeds).__name__}")
    out = []
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
            raise TypeError(f"seed {i} of the list is {seed!r}; every seed must be a non-negative integer")
        out.append(int(seed))
    if not out:
        raise ValueError("seeds is empty; give at least one seed")
    return out


def resolve_device(device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists here, or a clear error."""
    try:
        device = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has no CUDA GPU visible to torch; "
                             "use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' asked for, but MPS is not available here; use device='cpu'")
    elif device.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported by the gas model; use 'cpu' or 'cuda'")
    return device


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still give (CUDA: free memory; CPU: available RAM), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


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
        self.density_seed = _torch_seed(streams[2])
        self.velocity_seed = _torch_seed(streams[3])
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
        self._groups = _latitude_groups(self.grid)
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
        return [_Sample(self.grid, s, self.fixed).p for s in _as_seeds(seeds)]

    def bytes_per_sample(self) -> int:
        """Peak device memory one sample of a sub-batch needs while it is built (bytes)."""
        cells = int(np.prod(self.shape))
        return cells * 4 * (_TEMPORARIES + len(FIELD_VARIABLES))

    def check_memory(self, batch: int, device) -> None:
        """Raise ``MemoryError`` (saying how much is needed and what to lower) when a batch of
        ``batch`` fields and the work space to build them do not fit on ``device``."""
        device = resolve_device(device)
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
        seeds = _as_seeds(seeds)
        device = resolve_device(device)
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
    @staticmethod
    def _plane_maps(q, x, y, ux, uy) -> dict:
        """In-plane structure densities and LOS velocities, ``(b, distance, lon)`` each.

        ``q(key)`` is the sub-batch's column ``key`` as ``(b, 1, 1)``; ``x, y`` the in-plane
        positions (pc) and ``ux, uy`` the in-plane line-of-sight unit vector, ``(distance, lon)``.
        """
        # the ring (cmz_geometry.Ring.evaluate)
        a, b = q("ring_a"), q("ring_b")
        m0, m1, n0, n1 = q("major_x"), q("major_y"), q("minor_x"), q("minor_y")
        xp, yp = x * m0 + y * m1, x * n0 + y * n1
        u, v = xp / a, yp / b
        s_ = torch.sqrt(u * u + v * v)
        grad = torch.sqrt((u / a) ** 2 + (v / b) ** 2) / s_.clamp_min(1e-12)
        gap = (s_ - 1.0) / grad.clamp_min(1e-12)
        anomaly = torch.atan2(v, u)
        modulation = 1.0 + q("lopsidedness") * torch.cos(anomaly - q("lopsided_phase"))
        coverage = q("coverage")
        wrapped = anomaly - q("gap_phase")
        from_gap = torch.atan2(torch.sin(wrapped), torch.cos(wrapped)).abs()
        taper = ((from_gap - (1.0 - coverage) * math.pi) / 0.3 + 0.5).clamp(0.0, 1.0)
        modulation = modulation * torch.where(coverage < 1.0, taper, torch.ones_like(taper))
        ring = q("ring_density") * torch.exp(-0.5 * (gap / q("ring_width")) ** 2) * modulation
        ring_z = q("twist") * torch.sin(2.0 * anomaly + q("twist_phase"))
        omega = q("omega")
        vxp, vyp = -omega * (a / b) * yp, omega * (b / a) * xp
        rvx, rvy = vxp * m0 + vyp * n0, vxp * m1 + vyp * n1

        # the two lanes: lane 2 is lane 1 turned by 180 deg, so its distance at p is lane 1's at -p
        width = q("lane_width")
        one, two = _lane(q, torch.stack([x, -x]).unsqueeze(1), torch.stack([y, -y]).unsqueeze(1))
        first = one[0] <= two[0]
        dist2 = torch.where(first, one[0], two[0])
        near = dist2 < (6.0 * width) ** 2
        fade = torch.where(first, one[1], two[1])
        lane = torch.where(near, q("lane_density") * q("ring_density") * fade * torch.exp(-0.5 * dist2 / width ** 2),
                           0.0)
        lvx = torch.where(near, torch.where(first, one[2], -two[2]), 0.0)
        lvy = torch.where(near, torch.where(first, one[3], -two[3]), 0.0)

        radius = torch.sqrt(x * x + y * y)
        speed = q("ring_speed") * torch.clamp(radius / q("ring_semi_major"), max=1.0)
        inv_r = 1.0 / radius.clamp_min(1e-9)
        diffuse = q("diffuse_density") * torch.exp(-radius / q("diffuse_scale_length"))

        def vlos(vx, vy):
            return (vx - SUN_CIRCULAR_VELOCITY) * ux + vy * uy

        return {"ring": ring, "ring_z": ring_z, "lane": lane, "diffuse": diffuse,
                "v_ring": vlos(rvx, rvy), "v_lane": vlos(lvx, lvy),
                "v_diffuse": vlos(-speed * y * inv_r, speed * x * inv_r)}

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
            maps = {k: v.unsqueeze(-1) for k, v in self._plane_maps(q, x, y, ux, uy).items()}
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


def _lane(q, x, y):
    """Squared distance to lane 1's Bezier curve, fade and flow velocity at in-plane points.

    ``B(t) = P0 + 2 t A + t^2 C``, ``t`` in [0, 1] from the lane's start to the ring: the
    projection on the chord, then :data:`_NEWTON_STEPS` Newton steps on ``(B - p) . B' = 0``.  ``x, y``
    are ``(n, 1, distance, lon)`` (lane 2 is lane 1 at ``-p``: pass both stacked); returns the
    tuples ``(dist2, fade, vx, vy)`` of each of the ``n``, ``(b, distance, lon)`` tensors; the fade
    is ``min(1, t / 0.15)`` and the velocity ``speed B'/|B'|`` (as
    :class:`~iris_nb.sim.cmz_geometry.DustLanes`).
    """
    p0x, p0y, ax, ay, cx, cy = (q(k) for k in ("p0x", "p0y", "ax", "ay", "cx", "cy"))
    rx, ry = p0x - x, p0y - y  # P0 - p, (n, b, D, L)
    # start from the projection on the chord P0 -> P2 = P0 + 2 A + C: the control point sits near
    # the chord's middle, so t is close to uniform along the lane
    chord_x, chord_y = 2 * ax + cx, 2 * ay + cy
    t = (rx * chord_x + ry * chord_y).mul_(-1.0 / (chord_x * chord_x + chord_y * chord_y)).clamp_(0.0, 1.0)
    for _ in range(_NEWTON_STEPS):
        ex, ey = rx + (2 * ax + t * cx) * t, ry + (2 * ay + t * cy) * t  # B - p
        dx, dy = ax + t * cx, ay + t * cy  # B' / 2
        slope = ex * dx + ey * dy
        curvature = (2 * (dx * dx + dy * dy) + ex * cx + ey * cy).clamp_min_(1e-9)
        t = t.sub_(slope.div_(curvature)).clamp_(0.0, 1.0)
    ex, ey = rx + (2 * ax + t * cx) * t, ry + (2 * ay + t * cy) * t
    dx, dy = ax + t * cx, ay + t * cy
    norm = q("lane_speed") / torch.sqrt(dx * dx + dy * dy).clamp_min(1e-12)
    dist2, fade = ex * ex + ey * ey, (t / 0.15).clamp_(max=1.0)
    vx, vy = dx * norm, dy * norm
    return [(dist2[i], fade[i], vx[i], vy[i]) for i in range(x.shape[0])]
