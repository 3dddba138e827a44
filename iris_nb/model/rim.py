"""``RIM``: refine a reversion with the gradient of the data misfit (a Recurrent Inference Machine).

A Reverter maps a PV image to top-down maps in one pass and never checks that its maps
explain the image.  A Recurrent Inference Machine (Putzky & Welling 2017) does: starting
from an estimate ``x_0`` it runs ``T`` steps

    g_t = grad_x 1/2 |F(x_t) - y|^2,     h_t = GRU(h_{t-1}, [x_t, g_t]),     x_{t+1} = x_t + D(h_t)

where ``F`` is a differentiable forward model and ``y`` the observation (here the update also
has a learned plain descent step ``- a_t g_t``, which starts at zero).  Here ``x`` is the
pair of top-down maps of a two-output :class:`~iris_nb.model.Reverter` (``asinh(rho / n)``
and ``v / 100 km/s``), ``x_0`` is the Reverter's own prediction and ``F`` the
:class:`~iris_nb.sim.topdown.TopDownObserver` (exact for ``v_density`` models; for brightness models
the optically thin surrogate, whose brightness per unit column is learned with the RIM).  The
gradient is normalised per sample (its rms), so only its pattern is read; ``D`` starts at zero,
so an untrained RIM returns the Reverter's maps.

``RIM(reverter, steps=T)`` behaves like a Reverter wherever one is taken: ``train_reverter``
trains it (loss averaged over the steps with weights ``t``, so later steps count more; the
Reverter stays frozen unless ``train_reverter=True``), ``save``/``load`` keep it, and
``cube.iris.revert(rim)`` reverts with it.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import torch
from torch import nn

from .. import units as _units
from .reverter import Reverter

__all__ = ["RIM", "RIM_FORMAT"]

RIM_FORMAT = "iris_nb.rim"
_VELOCITY_UNIT = 100.0  # km/s per unit of the RIM's velocity state


class _ConvGRU(nn.Module):
    """A convolutional GRU cell on ``(B, C, distance, lon)`` maps."""

    def __init__(self, channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.gates = nn.Conv2d(channels + hidden, 2 * hidden, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(channels + hidden, hidden, kernel, padding=kernel // 2)

    def forward(self, x, h):
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate


class RIM(nn.Module):
    """Recurrent Inference Machine around a two-output Reverter (see the module).

    Parameters
    ----------
    reverter:
        A :class:`~iris_nb.model.Reverter` with ``outputs=("density", "velocity")`` and input
        space ``"v_density"`` or ``"temperature"``.
    steps:
        Refinement steps ``T`` (>= 1).
    hidden:
        Channels of the recurrent state.
    train_reverter:
        Also train the Reverter's weights with the RIM (default False: it stays frozen, in
        eval mode).
    forward_model:
        A :class:`~iris_nb.sim.topdown.TopDownObserver` on the Reverter's grid (default: one
        for its input space, with a learned scale for brightness).

    Calling it: ``rim(inputs, reduce=True)`` like a Reverter, returning ``(B, 2, distance,
    lon)`` maps (density in the model's unit, velocity in km/s).  :meth:`refine` returns
    every step's maps.
    """

    def __init__(self, reverter, steps: int = 4, hidden: int = 32, train_reverter: bool = False,
                 forward_model=None):
        super().__init__()
        from ..sim.topdown import TopDownObserver

        if not isinstance(reverter, Reverter):
            raise TypeError(f"RIM refines a Reverter, got {type(reverter).__name__}")
        if tuple(reverter.outputs) != ("density", "velocity"):
            raise ValueError("a RIM needs a Reverter that predicts velocity too: build it with "
                             "Reverter(grid, outputs=('density', 'velocity'))")
        if reverter.input_space not in ("v_density", "temperature"):
            raise ValueError("a RIM's forward model covers 'v_density' (exact) and 'temperature' (optically thin "
                             f"surrogate) inputs; this Reverter takes {reverter.input_space!r}")
        for name, value, low in (("steps", steps, 1), ("hidden", hidden, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"RIM {name} must be an integer >= {low}, got {value!r}")
        if forward_model is None:
            forward_model = TopDownObserver(reverter.grid, input_space=reverter.input_space)
        if not isinstance(forward_model, TopDownObserver):
            raise TypeError(f"forward_model must be a TopDownObserver, got {type(forward_model).__name__}")
        if forward_model.grid != reverter.grid:
            raise ValueError(f"the forward model is on grid {forward_model.grid.name!r} but the Reverter on "
                             f"{reverter.grid.name!r}; a RIM needs both on one grid")
        if forward_model.input_space != reverter.input_space:
            raise ValueError(f"the forward model gives {forward_model.input_space!r} but the Reverter takes "
                             f"{reverter.input_space!r}")
        self.reverter, self.forward_model = reverter, forward_model
        self.steps, self.hidden, self.train_reverter = int(steps), int(hidden), bool(train_reverter)
        self.encode = nn.Sequential(nn.Conv2d(4, hidden, 3, padding=1), nn.LeakyReLU(0.01))
        self.cell = _ConvGRU(hidden, hidden)
        self.decode = nn.Conv2d(hidden, 2, 1)
        nn.init.zeros_(self.decode.weight)  # an untrained RIM returns the Reverter's maps
        nn.init.zeros_(self.decode.bias)
        # a learned descent step along the normalised gradient per step (u, w), starting at 0
        self.step_sizes = nn.Parameter(torch.zeros(self.steps, 2))
        self.n = self.normalization()
        self._steps: list | None = None
        if not self.train_reverter:
            self.reverter.requires_grad_(False)

    # ------------------------------------------------------------------ a Reverter's face
    grid = property(lambda self: self.reverter.grid)
    reduction = property(lambda self: self.reverter.reduction)
    input_space = property(lambda self: self.reverter.input_space)
    units = property(lambda self: self.reverter.units)
    input_unit = property(lambda self: self.reverter.input_unit)
    density_unit = property(lambda self: self.reverter.density_unit)
    outputs = property(lambda self: self.reverter.outputs)
    width = property(lambda self: self.reverter.width)
    density = property(lambda self: self.reverter.density)  # the "model units per kg/m3" buffer
    inference_only = False

    @property
    def provenance(self) -> dict:
        return self.reverter.provenance

    @provenance.setter
    def provenance(self, value) -> None:
        self.reverter.provenance = value

    @property
    def input_statistics(self):
        return self.reverter.input_statistics

    @input_statistics.setter
    def input_statistics(self, value) -> None:
        self.reverter.input_statistics = value

    @property
    def channels_last(self) -> bool:
        """Channels-last memory layout of the weights and PV images (see :attr:`Reverter.channels_last`)."""
        return self.reverter.channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        self.to(memory_format=torch.channels_last if value else torch.contiguous_format)
        self.reverter.channels_last = value

    def input_scale(self, in_units, in_space: str = "temperature") -> float:
        return self.reverter.input_scale(in_units, in_space)

    def output_scale(self, out_units) -> float:
        return self.reverter.output_scale(out_units)

    def reduce(self, cube: torch.Tensor) -> torch.Tensor:
        return self.reverter.reduce(cube)

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def normalization(self) -> float:
        """The paper's normalisation density (1e-19 kg/m3) in the Reverter's density unit."""
        from ..train.losses import normalization_in_units

        return normalization_in_units(1e-19, self.reverter)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_reverter:
            self.reverter.eval()  # a frozen Reverter keeps its batch-norm statistics
        return self

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, hidden={self.hidden}, train_reverter={self.train_reverter}, "
                f"grid={self.grid.name!r}, input_space={self.input_space!r}")

    # ------------------------------------------------------------------ physics
    def observe(self, maps: torch.Tensor) -> torch.Tensor:
        """PV image ``(B, 1, lon, velocity)`` in the model's input unit of maps ``(B, 2, distance, lon)``."""
        to_msun = _units.density_scale(self.density_unit, "solMass / pc3")
        pv = self.forward_model(maps[:, :1] * to_msun, maps[:, 1:])
        return pv * self.reverter.input_scale(self.forward_model.units, self.input_space)

    def _maps(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.n * torch.relu(torch.sinh(u)), w * _VELOCITY_UNIT], dim=1)

    def misfit_gradient(self, u: torch.Tensor, w: torch.Tensor, pv: torch.Tensor):
        """``(d/du, d/dw)`` of ``1/2 |F(maps(u, w)) - pv|^2`` (no graph kept), and the misfit per sample."""
        with torch.inference_mode(False), torch.enable_grad():
            u_, w_ = u.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
            target = pv.detach().clone()
            residual = self.observe(self._maps(u_, w_)).float() - target.float()
            misfit = 0.5 * residual.square().flatten(1).sum(dim=1)
            grad_u, grad_w = torch.autograd.grad(misfit.sum(), (u_, w_))
        return grad_u, grad_w, misfit.detach()

    @staticmethod
    def _normalise(g: torch.Tensor) -> torch.Tensor:
        rms = g.square().flatten(1).mean(dim=1).sqrt().reshape(-1, 1, 1, 1)
        return g / (rms + 1e-12)

    # ------------------------------------------------------------------ forward
    def refine(self, inputs: torch.Tensor, reduce: bool = True) -> list[torch.Tensor]:
        """The Reverter's maps and those after each of the ``steps`` refinements (``steps + 1`` tensors)."""
        pv = self.reduce(inputs) if reduce else inputs
        self.reverter._check_input(pv, reduce=False)
        if self.train_reverter:
            first = self.reverter(pv, reduce=False)
        else:
            with torch.no_grad():
                first = self.reverter(pv, reduce=False)
        first = first.float()
        u = torch.asinh(first[:, :1] / self.n)
        w = first[:, 1:] / _VELOCITY_UNIT
        h = u.new_zeros(u.shape[0], self.hidden, *u.shape[2:])
        out = [first]
        for t in range(self.steps):
            grad_u, grad_w, _ = self.misfit_gradient(u, w, pv)
            grad_u, grad_w = self._normalise(grad_u), self._normalise(grad_w)
            h = self.cell(self.encode(torch.cat([u, w, grad_u, grad_w], dim=1)), h)
            delta = self.decode(h)
            u = u + delta[:, :1] - self.step_sizes[t, 0] * grad_u
            w = w + delta[:, 1:] - self.step_sizes[t, 1] * grad_w
            out.append(self._maps(u, w))
        return out

    def forward(self, inputs: torch.Tensor, reduce: bool = True) -> torch.Tensor:
        steps = self.refine(inputs, reduce)
        self._steps = steps[1:] if self.training else None  # for the per-step training loss
        return steps[-1]

    def call_in_units(self, inputs: torch.Tensor, in_units, out_units, in_space: str = "temperature",
                      reduce: bool = True) -> torch.Tensor:
        """As :meth:`Reverter.call_in_units`: inputs in any unit, densities in ``out_units``."""
        scale_in = self.input_scale(in_units, in_space)
        scale_out = self.output_scale(out_units)
        self.reverter._check_input(inputs, reduce)
        maps = self(inputs * scale_in, reduce=reduce)
        return torch.cat([maps[:, :1] * scale_out, maps[:, 1:]], dim=1)

    multi_unit_call = call_in_units  # the former name

    # ------------------------------------------------------------------ files
    def save(self, path, provenance: dict | None = None) -> None:
        """Write the RIM (its Reverter's metadata, the RIM settings, every weight) atomically."""
        from .model_file import ModelFileError, atomic_torch_save, save_reverter

        path = Path(path).expanduser()
        if not path.parent.is_dir():
            raise ModelFileError(f"cannot save the RIM to {path}: folder {path.parent} does not exist")
        save_reverter(self.reverter, path, provenance)  # validates and merges the provenance ...
        reverter_file = torch.load(path, map_location="cpu", weights_only=True)
        reverter_file["format"] = RIM_FORMAT  # ... then the same file becomes a RIM file
        reverter_file["rim"] = {"steps": self.steps, "hidden": self.hidden, "train_reverter": self.train_reverter,
                                "forward_model_scale_learned": self._scale_learned()}
        reverter_file["rim_state_dict"] = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()
                                           if not k.startswith("reverter.")}  # the Reverter's are stored above
        atomic_torch_save(reverter_file, path)

    def _scale_learned(self) -> bool:
        scale = getattr(self.forward_model, "log_scale", None)
        return bool(scale is not None and scale.requires_grad)

    @classmethod
    def load(cls, path, map_location="cpu") -> "RIM":
        """Read a file written by :meth:`save`."""
        from ..sim.topdown import TopDownObserver
        from .model_file import ModelFileError, build_reverter

        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"RIM file {path} does not exist; check the path")
        content = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(content, dict) or content.get("format") != RIM_FORMAT:
            raise ModelFileError(f"{path} is not a RIM file (written by RIM.save); load a Reverter file with "
                                 "Reverter.load")
        settings = content["rim"]
        reverter = build_reverter(content["state_dict"], content["metadata"], path)
        scale = None if settings.get("forward_model_scale_learned", True) else 1.0
        forward_model = (TopDownObserver(reverter.grid, input_space="temperature", scale=scale)
                         if reverter.input_space == "temperature" else None)
        rim = cls(reverter, steps=settings["steps"], hidden=settings["hidden"],
                  train_reverter=settings.get("train_reverter", False), forward_model=forward_model)
        own = content["rim_state_dict"]
        rim.load_state_dict({**{f"reverter.{k}": v for k, v in rim.reverter.state_dict().items()}, **own})
        if isinstance(map_location, (str, torch.device)):
            rim.to(torch.device(map_location))
        return rim
