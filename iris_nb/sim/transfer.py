"""Line transfer along a block of rays, cell by cell from the far side towards the observer.

:func:`transfer_rays` is the inner loop of :class:`~iris_nb.sim.observers.LineObserver`: given
per-cell optical depths, source functions, Doppler parameters and velocities on a
``(distance, rays)`` block, it integrates

    I <- I exp(-tau) + S (1 - exp(-tau))

over every velocity channel, starting from the CMB behind the last (farthest) distance cell.
The state is the continuum-subtracted intensity (see
:func:`iris_nb.sim.radiative.transfer_step`), stored as ``(channels, rays)`` so that every
per-cell operation is vectorised over the rays.

Channel windows: a cell's line only reaches channels within a few Doppler parameters of its
velocity, so each cell updates just a window of ``2 h + 1`` channels centred on the channel of
its velocity (gather, update, scatter back), with ``h = ceil(channel_window * b_max / dv)`` for
the broadest line of the block.  Channels outside the window see an optical depth below
``erfc(channel_window) * tau_int / dv`` (``erfc(5) = 1.5e-12``), so the result equals the full
evaluation (``channel_window=None``) to float32 precision.  The state carries ``h`` padding
channels beyond each end of the velocity axis, so windows are never clipped (line wings
that fall outside the axis are dropped with the padding).
"""

from __future__ import annotations

import math

import torch

from ..grids import Axis
from .radiative import T_CMB, rj_temperature, scaled_channel_profile, transfer_step

__all__ = ["needs_grad", "transfer_rays"]


def needs_grad(tensors) -> bool:
    """True when autograd is on and one of ``tensors`` requires a gradient (then no in-place ops)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def transfer_rays(cells: dict, velocity: Axis, t0: float, channel_window: float | None = 5.0):
    """Integrate the line along a block of rays, far side first.

    Parameters
    ----------
    cells:
        ``(distance, rays)`` tensors, distance ascending (near to far): ``tau`` velocity-integrated
        line optical depth (km/s), ``j`` line source function J(T_ex) (K), ``b`` Doppler parameter
        (km/s), ``v`` line-of-sight velocity (km/s); with dust also ``tau_dust`` (dimensionless)
        and ``j_dust`` (K).
    velocity:
        The velocity axis (km/s): channel edges ``velocity.edges()``.
    t0:
        ``h nu / k`` of the line, K.
    channel_window:
        Window half-width in Doppler parameters, or ``None`` to update every channel for
        every cell (the slow reference).

    Returns
    -------
    excess : Tensor (rays, velocity)
        Continuum-subtracted intensity as a Rayleigh-Jeans temperature, K.
    continuum : Tensor (rays,)
        Continuum intensity (CMB plus dust) reaching the observer, K (Rayleigh-Jeans).
    """
    dust = "tau_dust" in cells
    tau = cells["tau"]
    n_ray = tau.shape[1]
    axis = velocity
    n_chan, dv = axis.steps, axis.step
    active = tau.detach() > 0
    if dust:
        active = active | (cells["tau_dust"].detach() > 0)
    active = torch.nonzero(active.any(dim=1)).flatten().tolist()
    j_cmb = rj_temperature(tau.new_tensor(T_CMB), t0)
    continuum = j_cmb.expand(n_ray)
    windowed = channel_window is not None
    if windowed:
        b_max = float(cells["b"].detach().max()) if active else 0.0
        half = int(math.ceil(channel_window * b_max / dv))
        offsets = torch.arange(-half, half + 2, device=tau.device)
        # grid channel holding each cell's velocity: the window is centre - half ... centre + half
        centre = torch.floor((cells["v"].detach() - axis.start) / dv).clamp(0, n_chan - 1)
    else:
        half = 0
        offsets = torch.arange(n_chan + 1, device=tau.device)
        centre = torch.zeros_like(tau)
    # edges of window channel k in Doppler units: base + k * step
    inv_b = 1.0 / cells["b"]
    step = dv * inv_b
    base = (axis.start + dv * centre - cells["v"]) * inv_b
    scale = tau / dv  # optical depth of a channel = tau_int / dv * (fraction of the line in it)
    source = None if dust else cells["j"] - j_cmb
    lower = centre.long()
    # state (channels, rays): rays contiguous, so every per-cell operation is vectorised over rays
    excess = tau.new_zeros(n_chan + 2 * half, n_ray)
    in_place = not needs_grad(cells.values())
    offsets_f = offsets.to(tau.dtype)
    for d in reversed(active):
        a = base[d] + offsets_f[:, None] * step[d]
        tau_line = scale[d] * scaled_channel_profile(a, dim=0)
        if windowed:
            index = lower[d] + (offsets[:-1, None] + half)  # in the padded state
            old = excess.gather(0, index)
        else:
            old = excess
        if dust:
            tau_dust = cells["tau_dust"][d]
            new = transfer_step(old, tau_line, cells["j"][d], continuum, tau_dust, cells["j_dust"][d])
        else:  # excess + (S - excess)(1 - e^-tau), S = J(T_ex) - J(T_CMB)
            new = old - (source[d] - old) * torch.expm1(-tau_line)
        if not windowed:
            excess = new
        else:
            if dust:
                attenuation = torch.exp(-tau_dust)
                excess = excess.mul_(attenuation) if in_place else excess * attenuation
            excess = excess.scatter_(0, index, new) if in_place else excess.scatter(0, index, new)
        if dust:
            td = cells["tau_dust"][d]
            continuum = continuum * torch.exp(-td) - cells["j_dust"][d] * torch.expm1(-td)
    return excess[half:half + n_chan].T, continuum
