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

import torch

from ..grids import Grid
from .fields import h2_density
from .line_observer import LineObserver
from .observer_base import SKY_DIMS, Observer
from .transfer import needs_grad

__all__ = ["SimpleObserver", "LineObserver", "SKY_DIMS"]


# ============================================================================ SimpleObserver
class SimpleObserver(Observer):
    """Velocity-resolved gas mass column: the "vrho" cube of IRIS, without radiative transfer.

    Each distance cell deposits its mass column ``rho * dr`` (solMass / pc2) into the two
    velocity channels whose centres bracket its ``velocity_los``, with linear (tent) weights,
    divided by the channel width.  ``rho`` is the H2 mass density ``2 x_h2 X density``
    (``gas="h2"``, the default, :func:`~iris_nb.sim.fields.h2_density`) or the total gas mass
    density ``density`` (``gas="total"``, what the reference IRIS "vrho" observer bins; it
    does not need ``x_h2``).  The velocity integral of a spectrum, ``sum * dv``, therefore
    equals ``sum(rho dr)`` over the cells exactly (to rounding) for every cell whose velocity
    lies inside the velocity window ``[velocity.start, velocity.stop]``; cells outside it are
    dropped.  In the outer half channels (between the window edge and the first or last channel
    centre) the whole column goes to the edge channel, so no gas inside the window is lost.

    Output of ``forward``: ``(B, lon, lat, velocity)`` in solMass s / (km pc2) (``units``).
    Without gradients the sum runs over distance cells in a fixed order with no colliding
    writes, so repeated runs give identical bits (on GPU too); with gradients one scatter per
    block of cells is used instead (same values to rounding).

    Parameters
    ----------
    grid:
        Geometry (distance, lon, lat and velocity axes).
    gas:
        ``"h2"`` (H2 mass column, default) or ``"total"`` (total gas mass column).
    """

    units = "solMass s / (km pc2)"
    input_space = "v_density"
    required = ("density", "x_h2", "velocity_los")
    gases = ("h2", "total")

    def __init__(self, grid: Grid, gas: str = "h2"):
        super().__init__(grid)
        if gas not in self.gases:
            raise ValueError(f"gas must be 'h2' (bin the H2 mass density 2 x_h2 X density) or 'total' (bin the "
                             f"total gas mass density, as the reference IRIS vrho observer does), got {gas!r}")
        self.gas = gas
        if gas == "total":
            self.required = ("density", "velocity_los")

    @property
    def config(self) -> dict:
        # "gas" only when it is not the default, so stores written before it existed still resume
        return {"observer": "SimpleObserver"} if self.gas == "h2" else {"observer": "SimpleObserver", "gas": self.gas}

    def _weights(self, density, x_h2, velocity):
        """Channel indices (long) and column per channel width of a block of cells."""
        axis = self.grid.velocity
        n_chan = axis.steps
        mass = density if x_h2 is None else h2_density(density, x_h2)
        column = mass * (self.grid.distance.step / axis.step)
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
        ``x_h2`` (only for ``gas="h2"``), ``velocity_los`` km/s).  Returns ``(B, lon, lat, velocity)``
        in solMass s / (km pc2).
        """
        fields = self._check_fields(fields)
        density, velocity = fields["density"], fields["velocity_los"]
        x_h2 = fields["x_h2"] if self.gas == "h2" else None
        n_batch, n_dist, n_lon, n_lat = density.shape
        n_ray, n_chan = n_lon * n_lat, self.grid.velocity.steps
        density, velocity = (t.reshape(n_batch, n_dist, n_ray) for t in (density, velocity))
        if x_h2 is not None:
            x_h2 = x_h2.reshape(n_batch, n_dist, n_ray)
        out = density.new_zeros(n_batch, n_ray, n_chan)
        inputs = tuple(t for t in (density, x_h2, velocity) if t is not None)
        if needs_grad(inputs):
            # one differentiable scatter per block of distance cells
            block = max(1, 2**24 // max(1, n_batch * n_ray))
            for d0 in range(0, n_dist, block):
                sl = slice(d0, d0 + block)
                i_low, i_high, w_low, w_high = self._weights(
                    density[:, sl], None if x_h2 is None else x_h2[:, sl], velocity[:, sl])
                index = torch.cat([i_low, i_high], dim=1).transpose(1, 2)
                source = torch.cat([w_low, w_high], dim=1).transpose(1, 2)
                out = out.scatter_add(2, index, source)
        else:
            for d in range(n_dist):
                i_low, i_high, w_low, w_high = self._weights(
                    density[:, d], None if x_h2 is None else x_h2[:, d], velocity[:, d])
                index = torch.stack([i_low, i_high], dim=-1)
                out.scatter_add_(2, index, torch.stack([w_low, w_high], dim=-1))
        return out.reshape(n_batch, n_lon, n_lat, n_chan)
