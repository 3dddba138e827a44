"""``TopDownObserver``: the PV image of a pair of top-down maps, a differentiable 2-D forward model.

A reversion gives, for each heliocentric distance and longitude pixel, the latitude-mean H2
density ``rho(d, l)`` and (for two-output models) the H2-weighted line-of-sight velocity
``v(d, l)``.  Put each pixel's column ``rho dr`` into the velocity channels bracketing
``v`` with the tent weights of :class:`~iris_nb.sim.observers.SimpleObserver` and you get a
PV image ``(lon, velocity)`` in solMass s / (km pc2), the ``v_density`` quantity ("vrho").

For ``v_density`` data this is exact wherever the gas of a ``(d, l)`` pixel moves at one velocity
at every latitude: ``SimpleObserver``'s latitude-mean PV of such a field equals the PV of its
two top-down maps to float rounding (the mean over latitude of tent-weighted columns is the
tent-weighted mean column).  Real fields have a spread of velocities across latitude, so the
forward model blurs less than the sky; what it measures is whether a reverted pair of maps
puts the right mass at the right velocity.

For brightness data (``input_space="temperature"``) it is a documented *surrogate*: an optically thin,
constant-excitation line is proportional to the column, so the model returns
``scale * v_density`` with a brightness per unit column ``scale`` (K per solMass s / (km pc2)),
given or learned (:attr:`log_scale` is then a parameter).  Saturation and excitation are
not modelled; the residual of a brightness reversion is therefore a consistency check up
to that approximation, not a likelihood.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..grids import Grid, get_grid
from ..units import input_space_name
from .observers import SimpleObserver

__all__ = ["TopDownObserver"]


class TopDownObserver(nn.Module):
    """PV image ``(B, 1, lon, velocity)`` of top-down maps ``(B, 1, distance, lon)``.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` of the maps and of the PV image.
    input_space:
        ``"v_density"`` (exact, solMass s / (km pc2)) or ``"temperature"`` (the optically thin
        surrogate in K); the old codes ``"vrho"`` and ``"T"`` are accepted.
    scale:
        For ``"temperature"``: K per solMass s / (km pc2); ``None`` makes it a learned parameter
        (starting at 1).  Ignored for ``"v_density"``.

    ``forward(density, velocity)``: H2 mass density in solMass / pc3 and velocity in km/s,
    ``(B, 1, distance, lon)`` each; returns the PV image in :attr:`units`.  Differentiable in
    both maps (the velocity through the tent weights).
    """

    def __init__(self, grid: Grid | str, input_space: str = "v_density", scale: float | None = None):
        super().__init__()
        grid = get_grid(grid)
        input_space = input_space_name(input_space)
        if input_space not in ("v_density", "temperature"):
            raise ValueError("TopDownObserver models 'v_density' (exact) or 'temperature' (optically thin "
                             f"surrogate) inputs, got {input_space!r}")
        self.grid = grid
        self.input_space = input_space
        self._binner = SimpleObserver(grid.replace(lat=grid.lat.with_steps(1)), gas="total")
        if input_space == "temperature":
            if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a positive number of K per solMass s / (km pc2), got {scale!r}")
            start = torch.tensor(math.log(scale) if scale is not None else 0.0)
            self.log_scale = nn.Parameter(start, requires_grad=scale is None)
        self.units = SimpleObserver.units if input_space == "v_density" else "K"

    def extra_repr(self) -> str:
        extra = ("" if self.input_space == "v_density"
                 else f", scale={float(self.log_scale.exp()):.4g} K per v_density unit")
        return f"grid={self.grid.name!r}, input_space={self.input_space!r}{extra}"

    def forward(self, density: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        g = self.grid
        expected = (1, g.distance.steps, g.lon.steps)
        for name, value in (("density", density), ("velocity", velocity)):
            if not isinstance(value, torch.Tensor) or value.dim() != 4 or tuple(value.shape[1:]) != expected:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"TopDownObserver {name} must be a (B, 1, distance, lon) = (B, {expected[0]}, "
                                 f"{expected[1]}, {expected[2]}) tensor for grid {g.name}, got {shape}")
        fields = {"density": density[:, 0, :, :, None], "velocity_los": velocity[:, 0, :, :, None]}
        pv = self._binner(fields)[:, :, 0, :].unsqueeze(1)  # (B, 1, lon, velocity)
        if self.input_space == "temperature":
            pv = pv * self.log_scale.exp()
        return pv
