"""Physical losses between predicted and true top-down density maps.

Densities only mean something with a unit, so every loss here first divides the residual
by a normalisation density ``n`` expressed in the *model's* density unit.  The paper's
choice, ``n = 1e-19 kg/m3`` (about 1.478 Msun/pc3), is the default.  Because ``n`` follows
the model's unit, the same maps written in other units (with a model whose units differ
accordingly) give the same loss value.

* :class:`ScaledDensityLoss`: ``mean(asinh(((pred - true) / n)^2))`` (DESIGN.md section 6),
  quadratic for residuals well below ``n`` and logarithmic for large ones, so that a few
  dense clouds do not dominate the fit.
* :class:`MassConsistentLoss` (``"scaled_density_mass"``): the paper's loss plus the squared log
  ratio of predicted to true total mass, against the robust loss's mass bias.
* :class:`MSELoss`: ``mean(((pred - true) / n)^2)``, for comparison.

Both are computed in float32 even when the maps come from a float16/bfloat16 autocast
region, and both are dimensionless.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import units as _units

__all__ = ["PhysicalLoss", "ScaledDensityLoss", "MassConsistentLoss", "MSELoss", "DensityVelocityLoss", "StepWeightedLoss", "LOSSES", "make_loss", "normalization_in_units"]

DEFAULT_DENSITY_NORMALIZATION = 1e-19
"""The paper's normalisation density, kg/m3 (about 1.478 Msun/pc3)."""


def normalization_in_units(density_normalization: float, model_or_unit) -> float:
    """The normalisation density ``density_normalization`` (kg/m3) in another density unit.

    ``model_or_unit`` is a model with a ``density`` scalar buffer ("model units per kg/m3",
    as on :class:`~iris_nb.model.Reverter`), an astropy unit or unit string (``"Msun/pc3"``,
    ``"g/cm3"``; H2 number densities such as ``"cm-3"`` work too), or a plain number read as
    "units per kg/m3".  Returns a positive float in that unit.
    """
    value = float(density_normalization)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"density_normalization must be a positive density in kg/m3 (paper: 1e-19), got {density_normalization!r}"
        )
    density_buffer = getattr(model_or_unit, "density", None)
    if isinstance(density_buffer, torch.Tensor):
        factor = float(density_buffer)
    elif isinstance(model_or_unit, (int, float)) and not isinstance(model_or_unit, bool):
        factor = float(model_or_unit)
    elif model_or_unit is None:
        raise ValueError("give the model (or its density unit) so the loss knows the unit of the maps")
    else:
        factor = _units.density_scale("kg / m3", model_or_unit)
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the density unit factor must be a positive number (units per kg/m3), got {factor}")
    return value * factor


_LARGE = 1e15  # |r| above which asinh(r^2) is evaluated as ln 2 + 2 ln|r| (relative error < 1e-30)
_LN2 = math.log(2.0)


class PhysicalLoss(nn.Module):
    """Base class of losses on density maps with a physical normalisation.

    Parameters
    ----------
    model_or_unit:
        Where the unit of the maps comes from: a :class:`~iris_nb.model.Reverter` (its
        ``density`` buffer), a density unit (``"Msun/pc3"``), or a number of units per kg/m3.
        Default: Msun/pc3, the package's default model unit.
    density_normalization:
        Normalisation density ``n`` in kg/m3 (default 1e-19, the paper's).

    Attributes
    ----------
    n:
        The normalisation density in the maps' unit (float).

    Subclasses implement :meth:`pointwise` (elementwise loss of the normed residual);
    calling the loss returns its mean over every pixel of every sample.
    """

    name = "physical"

    def __init__(self, model_or_unit="solMass / pc3", density_normalization: float = DEFAULT_DENSITY_NORMALIZATION):
        super().__init__()
        self.density_normalization = float(density_normalization)
        self.n = normalization_in_units(density_normalization, model_or_unit)

    def extra_repr(self) -> str:
        return f"n={self.n:.6g} (= {self.density_normalization:g} kg/m3 in the maps' unit)"

    def normed_residual(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """``(pred - true) / n`` in float32, dimensionless, shape of the broadcast inputs.

        ``pred`` and ``true`` are density maps, e.g. ``(B, 1, distance, lon)``, in the unit the
        loss was built for.
        """
        if not isinstance(pred, torch.Tensor) or not isinstance(true, torch.Tensor):
            raise TypeError(
                f"loss inputs must be torch tensors, got {type(pred).__name__} and {type(true).__name__}"
            )
        if pred.shape != true.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and target {tuple(true.shape)} differ in shape; both "
                "should be (B, 1, distance, lon) density maps on the model's grid"
            )
        return (pred.float() - true.float()) / self.n

    def pointwise(self, residual: torch.Tensor) -> torch.Tensor:
        """Elementwise loss of a normed residual (same shape, dimensionless)."""
        raise NotImplementedError

    def per_sample(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Loss of each sample: ``(B, ...) -> (B,)`` (mean over all but the first dim)."""
        values = self.pointwise(self.normed_residual(pred, true))
        return values.reshape(values.shape[0], -1).mean(dim=1)

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Mean loss over every pixel: ``(B, 1, distance, lon)`` maps -> scalar (dimensionless)."""
        return self.pointwise(self.normed_residual(pred, true)).mean()


class ScaledDensityLoss(PhysicalLoss):
    """``mean(asinh(((pred - true) / n)^2))``, the paper's loss (DESIGN.md section 6)."""

    name = "scaled_density"

    def pointwise(self, residual: torch.Tensor) -> torch.Tensor:
        """``asinh(residual^2)``, elementwise, dimensionless.

        Finite for every finite residual: above ``|r| = 1e15`` (where ``r^2`` would overflow
        float32 soon after) the identity ``asinh(r^2) = ln 2 + 2 ln|r|`` is used.
        """
        size = residual.abs()
        small = torch.asinh(size.clamp_max(_LARGE).square())
        large = _LN2 + 2.0 * torch.log(size.clamp_min(_LARGE))
        return torch.where(size < _LARGE, small, large)


class MSELoss(PhysicalLoss):
    """``mean(((pred - true) / n)^2)``: mean squared error in units of ``n^2``."""

    name = "mse"

    def pointwise(self, residual: torch.Tensor) -> torch.Tensor:
        """``residual^2``, elementwise, dimensionless."""
        return residual.square()


class MassConsistentLoss(ScaledDensityLoss):
    """:class:`ScaledDensityLoss` plus a total-mass term:
    ``mean(asinh(r^2)) + mass_weight * mean_b(ln((M_pred + n) / (M_true + n))^2)``, with ``M``
    the sum of a sample's map (its mass up to the pixel volume, which varies by only +-3% over
    the CMZ window) and ``n`` the normalisation density (one pixel of slack, so empty maps do
    not dominate).

    The robust asinh loss forgives large residuals, so a network trained with it alone
    under-predicts dense gas and the total mass (by ~40% on the first shipped model); the log
    mass ratio is symmetric in over- and under-prediction and scale-free.
    """

    name = "scaled_density_mass"

    def __init__(self, model_or_unit="solMass / pc3", density_normalization: float = DEFAULT_DENSITY_NORMALIZATION,
                 mass_weight: float = 1.0):
        super().__init__(model_or_unit, density_normalization)
        if not (isinstance(mass_weight, (int, float)) and math.isfinite(mass_weight) and mass_weight >= 0):
            raise ValueError(f"mass_weight must be a number >= 0, got {mass_weight!r}")
        self.mass_weight = float(mass_weight)

    def mass_term(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """``ln((M_pred + n) / (M_true + n))^2`` per sample, ``(B,)``."""
        b = pred.shape[0]
        m_pred = pred.float().reshape(b, -1).sum(dim=1) / self.n
        m_true = true.float().reshape(b, -1).sum(dim=1) / self.n
        return torch.log((m_pred.clamp_min(0.0) + 1.0) / (m_true.clamp_min(0.0) + 1.0)).square()

    def per_sample(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return super().per_sample(pred, true) + self.mass_weight * self.mass_term(pred, true)

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return super().forward(pred, true) + self.mass_weight * self.mass_term(pred, true).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mass_weight={self.mass_weight:g}"


class DensityVelocityLoss(nn.Module):
    """The loss of a two-output model: a density loss on channel 0 plus a velocity term.

    ``density_loss(pred[:, :1], true[:, :1]) + velocity_weight * velocity_term``, where the
    velocity term is ``sum(w ((v_pred - v_true) / velocity_scale)^2) / sum(w)`` per sample with
    the weights ``w = rho_true / (rho_true + n)``: a velocity counts where there is gas (about 1
    in dense pixels, 0 where the map is empty and the velocity means nothing).  Maps are
    ``(B, 2, distance, lon)``: density in the model's unit, velocity in km/s.
    """

    name = "density_velocity"

    def __init__(self, density_loss: PhysicalLoss, velocity_weight: float = 1.0, velocity_scale: float = 50.0):
        super().__init__()
        for label, value in (("velocity_weight", velocity_weight), ("velocity_scale", velocity_scale)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a number >= 0, got {value!r}")
        if velocity_scale <= 0:
            raise ValueError(f"velocity_scale must be > 0 km/s, got {velocity_scale!r}")
        self.density_loss = density_loss
        self.velocity_weight, self.velocity_scale = float(velocity_weight), float(velocity_scale)
        # the density loss's normalisation (model units, kg/m3), as a PhysicalLoss has them
        self.n, self.density_normalization = density_loss.n, density_loss.density_normalization

    def _check(self, pred, true):
        if pred.shape != true.shape or pred.dim() != 4 or pred.shape[1] != 2:
            raise ValueError(f"a two-output loss needs (B, 2, distance, lon) maps (density, velocity), got "
                             f"{tuple(pred.shape)} and {tuple(true.shape)}")

    def velocity_term(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Gas-weighted mean squared velocity error in units of ``velocity_scale``, per sample ``(B,)``."""
        self._check(pred, true)
        rho = true[:, :1].float().clamp_min(0.0)
        weight = rho / (rho + self.n)
        error = ((pred[:, 1:].float() - true[:, 1:].float()) / self.velocity_scale).square()
        b = pred.shape[0]
        return (weight * error).reshape(b, -1).sum(dim=1) / weight.reshape(b, -1).sum(dim=1).clamp_min(1e-12)

    def per_sample(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        self._check(pred, true)
        return (self.density_loss.per_sample(pred[:, :1], true[:, :1])
                + self.velocity_weight * self.velocity_term(pred, true))

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return self.per_sample(pred, true).mean()

    def extra_repr(self) -> str:
        return f"velocity_weight={self.velocity_weight:g}, velocity_scale={self.velocity_scale:g} km/s"


class StepWeightedLoss(nn.Module):
    """The training loss of a :class:`~iris_nb.model.rim.RIM`: ``loss`` averaged over its refinement
    steps with weights ``t = 1 .. T`` (later steps count more).  Outside training (no steps
    recorded) it is ``loss`` of the final maps."""

    def __init__(self, loss: nn.Module, model):
        super().__init__()
        self.loss = loss
        self._model = [model]  # a list: the model is not a submodule of the loss

    @property
    def n(self) -> float:
        return self.loss.n

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.loss, name)  # density_loss, velocity_term, ...

    def _weighted(self, fn, pred, true):
        steps = getattr(self._model[0], "_steps", None)
        if not steps:
            return fn(pred, true)
        weights = [t + 1.0 for t in range(len(steps))]
        return sum(w * fn(step, true) for w, step in zip(weights, steps)) / sum(weights)

    def per_sample(self, pred, true):
        return self._weighted(self.loss.per_sample, pred, true)

    def forward(self, pred, true):
        return self._weighted(self.loss, pred, true)


LOSSES = {"scaled_density": ScaledDensityLoss, "mse": MSELoss, "scaled_density_mass": MassConsistentLoss}
"""Loss names accepted by :class:`~iris_nb.train.config.TrainingConfig` ``loss=``."""


def make_loss(name: str, model_or_unit="solMass / pc3",
              density_normalization: float = DEFAULT_DENSITY_NORMALIZATION) -> PhysicalLoss:
    """The loss called ``name`` (``"scaled_density"``, ``"scaled_density_mass"`` or ``"mse"``) for a
    model or unit; for a two-output model (density and velocity) wrapped in a
    :class:`DensityVelocityLoss`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    loss = LOSSES[name](model_or_unit, density_normalization)
    if len(getattr(model_or_unit, "outputs", ("density",))) == 2:  # a density and velocity model
        loss = DensityVelocityLoss(loss)
    if callable(getattr(model_or_unit, "refine", None)):  # a RIM: every refinement step is trained
        loss = StepWeightedLoss(loss, model_or_unit)
    return loss
