"""Does a reversion explain its data?  Re-observation and column consistency.

* :func:`reobserve`: the PV image a pair of reverted maps (density, velocity) would give,
  through the 2-D forward model :class:`~iris_nb.sim.topdown.TopDownObserver`;
* :func:`column_consistent`: rescale each longitude's predicted column to the column the
  PV image holds.  For velocity-resolved column data ("vrho") the velocity integral of a PV
  column is exactly the latitude-mean H2 column of that longitude (``SimpleObserver`` keeps
  every cell inside the velocity window), so a reversion can be made to conserve it.  The
  robust training loss under-predicts dense gas; this puts the mass back where the data say
  it is, longitude by longitude, without moving it in distance.
"""

from __future__ import annotations

import torch

from ..units import density_scale

__all__ = ["reobserve", "column_consistent"]

VRHO_UNIT = "solMass s / (km pc2)"


def reobserve(model, maps: torch.Tensor, pv: torch.Tensor | None = None) -> torch.Tensor:
    """PV images ``(N, 1, lon, v)`` in the model's input unit of two-output maps ``(N, 2, distance, lon)``
    in the model's units (density, then velocity in km/s).

    A :class:`~iris_nb.model.rim.RIM` uses its own forward model.  For a brightness Reverter the
    optically thin surrogate's scale (K per unit column) is fitted by least squares to the
    observed PV images ``pv`` (one scale for all of them).
    """
    observe = getattr(model, "observe", None)
    if callable(observe):
        return observe(maps)
    from ..sim.topdown import TopDownObserver

    forward = TopDownObserver(model.grid).to(maps.device)
    column = forward(maps[:, :1] * density_scale(model.density_unit, "solMass / pc3"), maps[:, 1:])
    if model.input_space == "v_density":
        return column * model.input_scale(forward.units, "v_density")
    if pv is None:
        raise ValueError("a brightness model's re-observation needs the observed PV images to fit its scale")
    fitted = float((pv.double() * column.double()).sum() / column.double().square().sum().clamp_min(1e-300))
    return column * fitted


def column_consistent(model, density: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
    """``density`` ``(N, 1, distance, lon)`` (model units) rescaled, longitude by longitude, so that
    its column ``sum_d rho dr`` equals the PV image's velocity integral ``sum_v pv dv``.

    Only for models of velocity-resolved columns (``input_space="v_density"``); ``pv`` is ``(N, 1,
    lon, v)`` in the model's input unit.  Longitudes where the prediction is empty stay empty.
    """
    if getattr(model, "input_space", None) != "v_density":
        raise ValueError("column consistency needs velocity-resolved column data (input_space='v_density'): only "
                         "there is the PV's velocity integral the H2 column; brightness depends on excitation")
    grid = model.grid
    to_vrho = 1.0 / model.input_scale(VRHO_UNIT, "v_density")  # model input unit -> solMass s / (km pc2)
    to_msun = density_scale(model.density_unit, "solMass / pc3")
    observed = pv.double().sum(dim=-1) * (grid.velocity.step * to_vrho)  # (N, 1, lon) solMass / pc2
    predicted = density.double().sum(dim=-2) * (grid.distance.step * to_msun)  # (N, 1, lon)
    factor = torch.where(predicted > 0, observed / predicted.clamp_min(1e-300), torch.ones_like(predicted))
    return (density.double() * factor.unsqueeze(-2)).to(density.dtype)
