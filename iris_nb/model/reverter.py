"""The Reverter: a CNN from a PV image (lon x velocity) to a top-down density map.

``Reverter(grid=SEDIGISM)`` is layer for layer the IRIS network (DESIGN.md section 5), so
IRIS ``torch.save(model.state_dict())`` files load unchanged with :meth:`Reverter.load`.
The model carries what is needed to use it safely: its :class:`~iris_nb.grids.Grid`, the
latitude reduction it was trained with, the quantity it was trained on (``input_space``),
its units (four scalar buffers in the IRIS convention, "model units per SI unit"), its
channel ``width`` multiplier (1 = IRIS; 0.25 gives a model ~16 times smaller), a free-form
provenance record and the summary statistics of its training inputs
(:class:`~iris_nb.model.input_statistics.InputStatistics`, ``None`` for models trained before
they were recorded), against which :func:`iris_nb.diagnose.diagnose` places a cube.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from .. import units as _units
from ..cube import REDUCTIONS
from ..grids import SEDIGISM, Grid, get_grid
from ..units import INPUT_SPACES, input_space_name
from .architecture import VelocityHead, build_decoder, build_encoder, check_width, init_weights, stage_range

__all__ = ["Reverter", "INPUT_SPACES", "REDUCTIONS", "OUTPUTS"]

OUTPUTS = (("density",), ("density", "velocity"))
"""The output maps a Reverter can predict: density alone (IRIS), or density and velocity."""
UNIT_SPACES = ("temperature", "intensity", "v_density", "density")


class Reverter(nn.Module):
    """Reversion network: PPV cube or PV image -> top-down density map.

    Parameters
    ----------
    grid:
        The :class:`~iris_nb.grids.Grid` (or preset name) the model works on; lon,
        velocity and distance must all have the same number of pixels ``N``, a power of
        two from 64 to 512.  At 512 the network is exactly IRIS.
    reduction:
        How a PPV cube is collapsed over latitude before the network: ``"mean"`` or ``"max"``.
    units:
        Dict ``space -> unit`` (astropy unit or string) for the spaces ``temperature``,
        ``intensity``, ``v_density`` and ``density``; missing spaces take
        :data:`iris_nb.units.DEFAULT_MODEL_UNITS` (K, MJy/sr, Msun/(pc2 km/s), Msun/pc3).
    input_space:
        What the model was trained on: ``"temperature"`` (brightness temperature),
        ``"intensity"`` (specific intensity) or ``"v_density"`` (velocity-resolved column
        density); the old codes ``"T"``, ``"I"``, ``"vrho"`` are accepted.
    provenance:
        Free-form JSON-serialisable dict (training data, config, git hash...), saved with
        the model.
    width:
        Multiplier of every hidden channel count (encoder, decoder, attention embed dims);
        ``1.0`` (default) is exactly IRIS, ``0.5`` / ``0.25`` give about 4 / 16 times fewer
        parameters.  Counts are rounded to multiples of the attention heads and of the 4
        groups of the bottleneck convolutions (rule in :mod:`iris_nb.model.architecture`);
        ``width`` must be at least 1/32 (one channel per attention head).
    input_statistics:
        :class:`~iris_nb.model.input_statistics.InputStatistics` of the training inputs (or its
        ``to_dict()``); ``train_reverter`` records them, :meth:`save` stores them.  ``None``
        (an untrained model, or a file written before they existed) turns the
        out-of-distribution check of ``revert`` off.
    outputs:
        ``("density",)`` (default, IRIS) or ``("density", "velocity")``: also predict the
        H2-weighted line-of-sight velocity map (km/s, v_LSR;
        :func:`~iris_nb.sim.columnize.columnize_velocity`), which lets a reversion be
        re-observed (:class:`~iris_nb.sim.topdown.TopDownObserver`) and refined
        (:class:`~iris_nb.model.rim.RIM`).  The IRIS layers stay as they are; a
        :class:`~iris_nb.model.architecture.VelocityHead` (a second decoder) reads the same
        latent vector and passes a tenth of its gradient into the shared encoder (sharing more
        made the density maps collapse in the measured runs).
    head:
        Optional list of Cool-chic layer strings (``["16-3-residual-relu", "1-1-linear-none"]``,
        :class:`~iris_nb.model.head.SynthesisHead`) refining the maps after the decoder;
        the last layer gives as many channels as ``outputs``.

    Calling the model: ``model(inputs)`` with ``inputs`` of shape ``(B, 1, lon, lat, v)``
    in the model's input unit returns ``(B, len(outputs), distance, lon)``: densities in the
    model's density unit (then velocities in km/s); ``model(pv, reduce=False)`` takes
    ``(B, 1, lon, v)`` PV images.
    """

    def __init__(self, grid: Grid | str = SEDIGISM, reduction: str = "mean", units: dict | None = None,
                 input_space: str = "temperature", provenance: dict | None = None, width: float = 1.0,
                 input_statistics=None, outputs=("density",), head=None) -> None:
        super().__init__()
        grid = get_grid(grid)
        size = grid_size(grid)
        width = check_width(width)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        outputs = _check_outputs(outputs)
        factors = _unit_factors(units)
        self.grid = grid
        self.reduction = reduction
        self.input_space = input_space
        self.width = width
        self.provenance = check_provenance(provenance)
        self.input_statistics = input_statistics
        self.inference_only = False
        self.__dict__["_channels_last"] = False
        self.outputs = outputs
        self.encoder = build_encoder(size, width)
        self.decoder = build_decoder(size, width)
        init_weights(self.encoder, self.decoder)
        self.velocity_head = None
        if outputs == ("density", "velocity"):
            self.velocity_head = VelocityHead(size, width)
        self.head = None
        if head is not None:
            from .head import SynthesisHead

            self.head = SynthesisHead(len(outputs), head)
        for space in UNIT_SPACES:
            self.register_buffer(space, torch.tensor(factors[space], dtype=torch.float32))

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Pixels ``N`` per side of the PV image and of the top-down map."""
        return self.grid.lon.steps

    @property
    def units(self) -> dict:
        """Astropy unit of each space, read from the ``temperature``, ``intensity``,
        ``v_density`` and ``density`` scalars ("model units per SI unit")."""
        return {space: _units.unit_from_per_si(float(getattr(self, space)), space) for space in UNIT_SPACES}

    @property
    def input_space(self) -> str:
        """What the model takes: ``"temperature"``, ``"intensity"`` or ``"v_density"`` (an old
        code assigned here, ``"T"``, ``"I"`` or ``"vrho"``, is stored under its new name)."""
        return self.__dict__["_input_space"]

    @input_space.setter
    def input_space(self, value: str) -> None:
        self.__dict__["_input_space"] = input_space_name(value)

    @property
    def input_unit(self):
        """Astropy unit of the network's input (the unit of ``input_space``)."""
        return self.units[self.input_space]

    @property
    def density_unit(self):
        """Astropy unit of the network's output densities."""
        return self.units["density"]

    @property
    def input_statistics(self):
        """:class:`~iris_nb.model.input_statistics.InputStatistics` of the training inputs, or
        ``None`` (no out-of-distribution check).  Assign an ``InputStatistics``, its dict, or ``None``."""
        return self.__dict__.get("_input_statistics")

    @input_statistics.setter
    def input_statistics(self, value) -> None:
        from .input_statistics import InputStatistics

        if isinstance(value, dict):
            value = InputStatistics.from_dict(value)
        if value is not None and not isinstance(value, InputStatistics):
            raise TypeError(f"input_statistics must be an InputStatistics, its to_dict() or None, got "
                            f"{type(value).__name__}")
        self.__dict__["_input_statistics"] = value

    @property
    def channels_last(self) -> bool:
        """Whether weights and PV images use the channels-last memory layout (``False`` at first).

        Channels-last helps oneDNN on CPU and tensor cores on GPU; the results are the same.
        Setting it converts the weights to that layout (``True``) or back to the contiguous one
        (``False``); ``TrainingConfig(channels_last=True)`` and ``optimize_for_inference`` set it.
        """
        return self.__dict__.get("_channels_last", False)

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        value = bool(value)
        self.to(memory_format=torch.channels_last if value else torch.contiguous_format)
        self.__dict__["_channels_last"] = value

    def num_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters; 14,339,641 at 512 and width 1."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        extra = "" if self.outputs == ("density",) else f"outputs={self.outputs}, "
        return (f"grid={self.grid.name!r} (N={self.size}), width={self.width:g}, {extra}"
                f"reduction={self.reduction!r}, input_space={self.input_space!r}, "
                f"inference_only={self.inference_only}, {self._statistics_note()}")

    def _statistics_note(self) -> str:
        stats = self.input_statistics
        if stats is None:
            return "input_statistics=None (no out-of-distribution check)"
        return f"input_statistics={stats.n_samples} training samples"

    # ------------------------------------------------------------------ forward
    def reduce(self, cube: torch.Tensor) -> torch.Tensor:
        """Collapse latitude: ``(B, 1, lon, lat, v) -> (B, 1, lon, v)``, same unit as ``cube``."""
        self._check_input(cube, reduce=True)
        if self.reduction == "mean":
            return cube.mean(dim=3)
        return cube.max(dim=3)[0]

    def forward(self, inputs: torch.Tensor, reduce: bool = True) -> torch.Tensor:
        """Revert a batch.

        ``inputs``: ``(B, 1, lon, lat, v)`` PPV cubes (``reduce=True``) or ``(B, 1, lon, v)``
        PV images (``reduce=False``), in the model's input unit (:attr:`input_unit`).
        Returns ``(B, len(outputs), distance, lon)``: densities in :attr:`density_unit`
        (>= 0), then (two outputs) velocities in km/s.
        """
        self._check_input(inputs, reduce)
        pv = self.reduce(inputs) if reduce else inputs
        if self.channels_last:
            pv = pv.contiguous(memory_format=torch.channels_last)
        maps = self._decode(self.encoder(pv))
        if self.head is not None:
            maps = self.head(maps)
            maps = torch.cat([torch.relu(maps[:, :1]), maps[:, 1:]], dim=1)  # densities stay >= 0
        return maps

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Decoder (and velocity head): ``(B, C, 1, 1)`` -> ``(B, len(outputs), distance, lon)``."""
        if self.velocity_head is None:
            return self.decoder(latent)
        return torch.cat([self.decoder(latent), self.velocity_head(latent)], dim=1)

    def _check_input(self, inputs, reduce: bool) -> None:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(
                f"Reverter inputs must be a torch.Tensor, got {type(inputs).__name__}; "
                "wrap arrays with torch.as_tensor(array, dtype=torch.float32)"
            )
        if not torch.is_floating_point(inputs):
            raise TypeError(f"Reverter inputs must be floating point, got {inputs.dtype}; use .float()")
        g = self.grid
        if reduce:
            expected, names = (1, g.lon.steps, g.lat.steps, g.velocity.steps), "(B,1,lon,lat,v)"
        else:
            expected, names = (1, g.lon.steps, g.velocity.steps), "(B,1,lon,v)"
        if inputs.dim() != len(expected) + 1 or tuple(inputs.shape[1:]) != expected:
            shape = "(B," + ",".join(str(n) for n in expected) + ")"
            hint = ("; pass reduce=False for latitude-reduced PV images" if reduce and inputs.dim() == 4
                    else "; pass reduce=True for PPV cubes" if not reduce and inputs.dim() == 5 else "")
            raise ValueError(
                f"expected {shape} = {names} for grid {g.name}, got {tuple(inputs.shape)}{hint}; "
                "regrid the cube to the model's grid first"
            )

    # ------------------------------------------------------------------ units
    def input_scale(self, in_units, in_space: str = "temperature") -> float:
        """Factor taking inputs in ``in_units`` of ``in_space`` to the model's input unit.

        ``in_space`` is ``"temperature"``, ``"intensity"`` or ``"v_density"``.  Brightness
        temperature and specific intensity are converted into each other with the Rayleigh-Jeans
        law at ``grid.rest_frequency``; ``v_density`` converts only to ``v_density``.
        """
        source, target = input_space_name(in_space, "in_space"), self.input_space
        unit = _units.parse_unit(in_units, f"inputs ({source})")
        si_unit = _units.SI_UNITS[source]
        if not unit.is_equivalent(si_unit):
            hint = (" (for Jy/beam use iris_nb.units.brightness_scale with the beam first)"
                    if source == "temperature" else "")
            raise ValueError(f"in_units {unit} are not a unit of {source} (like {si_unit}), "
                             f"as in_space={source!r} needs{hint}")
        value_si = float((1.0 * unit).to_value(si_unit))
        if source != target:
            if {source, target} != {"temperature", "intensity"}:
                raise ValueError(
                    f"the model was trained on {target!r} and inputs of {source!r} cannot be "
                    "converted to it; give inputs of the kind the "
                    "model was trained on, or use a model trained on this quantity"
                )
            kelvin_per_si = _units.rayleigh_jeans_factor(self.grid.rest_frequency)
            value_si = value_si * kelvin_per_si if source == "intensity" else value_si / kelvin_per_si
        return value_si * float(getattr(self, target))

    def output_scale(self, out_units) -> float:
        """Factor taking the model's densities to ``out_units`` (mass, or H2 number, density)."""
        return _units.density_scale("kg / m3", out_units) / float(self.density)

    def call_in_units(self, inputs: torch.Tensor, in_units, out_units, in_space: str = "temperature",
                      reduce: bool = True) -> torch.Tensor:
        """Revert inputs given in any unit, returning densities in ``out_units``.

        ``inputs``: ``(B, 1, lon, lat, v)`` (or ``(B, 1, lon, v)`` with ``reduce=False``) in
        ``in_units`` of ``in_space`` (``"temperature"``, ``"intensity"`` or ``"v_density"``).  Returns
        ``(B, 1, distance, lon)`` in ``out_units`` (e.g. ``"Msun/pc3"``, ``"g/cm3"``, ``"cm-3"``
        for H2 number density).  Unit errors are raised before the network runs.
        """
        scale_in = self.input_scale(in_units, in_space)
        scale_out = self.output_scale(out_units)
        self._check_input(inputs, reduce)
        maps = self(inputs * scale_in, reduce=reduce)
        return torch.cat([maps[:, :1] * scale_out, maps[:, 1:]], dim=1)  # velocities stay in km/s

    multi_unit_call = call_in_units  # the former name

    # ------------------------------------------------------------------ files
    def save(self, path, provenance: dict | None = None) -> None:
        """Write the model (weights, grid, width, units, reduction, provenance, input statistics)
        to ``path`` atomically.

        ``provenance`` entries are merged into :attr:`provenance` first.  Read it back with
        :meth:`Reverter.load`.
        """
        from .model_file import save_reverter

        save_reverter(self, path, provenance)

    @classmethod
    def load(cls, path, map_location="cpu", *, grid: Grid | str | None = None,
             width: float | None = None, outputs=None) -> "Reverter":
        """Read a model written by :meth:`save`, or a bare IRIS state dict.

        Bare state dicts (``torch.save(model.state_dict())``) get ``grid`` (default
        :data:`~iris_nb.grids.SEDIGISM`), reduction ``"mean"``, input space ``"temperature"``, the
        units stored in their four scalars and ``width`` (default: read from the tensor
        shapes, 1 for IRIS files).  Files written by :meth:`save` carry their own grid and
        width; ``grid`` and ``width`` are ignored for them.  Files written before training
        recorded :attr:`input_statistics` (and bare state dicts) load as before, with
        ``input_statistics=None``, noted in one line of the model's repr: ``revert`` cannot
        check cubes against their training inputs.  The file is read with
        ``weights_only=True`` (no code runs); errors are
        :class:`~iris_nb.model.model_file.ModelFileError`.  ``outputs`` (e.g. ``("density",)``)
        states what the caller expects: a file with other output maps is refused with a
        clear error instead of loading.
        """
        from .model_file import load_reverter

        model = load_reverter(path, map_location=map_location, grid=grid, width=width, cls=cls)
        if outputs is not None and _check_outputs(outputs) != model.outputs:
            from .model_file import ModelFileError

            raise ModelFileError(f"model file {path} holds a Reverter with outputs {model.outputs}, but outputs="
                                 f"{_check_outputs(outputs)} was expected; load it without outputs= or use a "
                                 "model of that kind")
        return model


def grid_size(grid: Grid) -> int:
    sizes = {"lon": grid.lon.steps, "velocity": grid.velocity.steps, "distance": grid.distance.steps}
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"the Reverter needs as many lon, velocity and distance pixels, got {sizes} for grid "
            f"{grid.name}; use grid.replace(...) to give all three the same power-of-two steps"
        )
    size = sizes["lon"]
    stage_range(size)  # validates the power of two in range
    return size


def _unit_factors(units: dict | None) -> dict:
    given = dict(units or {})
    unknown = sorted(set(given) - set(UNIT_SPACES))
    if unknown:
        raise ValueError(f"unknown unit spaces {unknown} in units=; expected keys among {list(UNIT_SPACES)}")
    chosen = {**_units.DEFAULT_MODEL_UNITS, **given}
    return {space: _units.per_si(chosen[space], space) for space in UNIT_SPACES}


def check_provenance(provenance) -> dict:
    if provenance is None:
        return {}
    if not isinstance(provenance, dict):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    try:
        return json.loads(json.dumps(provenance))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"provenance must be JSON-serialisable (str, numbers, lists, dicts): {err}; "
            "convert paths and arrays to str / lists first"
        ) from None


def _check_outputs(outputs) -> tuple:
    if isinstance(outputs, str):
        outputs = (outputs,)
    try:
        outputs = tuple(outputs)
    except TypeError:
        raise TypeError(f"outputs must be a tuple of map names, one of {OUTPUTS}, got {outputs!r}") from None
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS} (density alone, as IRIS, or density and velocity), "
                         f"got {outputs!r}")
    return outputs
