"""The :class:`Litter` module: adds litter PV images (gas in front of or behind the CMZ) to
training inputs, with per-dataset probabilities, and lets foreground gas absorb what lies
behind it.  The litter gas itself is drawn by :func:`iris_nb.sim.litter.make_litter`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ..grids import Grid
from .radiative import T_CMB, THIRTEEN_CO_21, line_temperature, rj_temperature

__all__ = ["Litter"]


def _as_images(value, where: str) -> torch.Tensor:
    """An observation as a ``(lon, v)`` tensor (from ``(1, lon, v)`` or ``(lon, v)``)."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    value = torch.as_tensor(value)
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 2:
        raise ValueError(f"{where} is not a PV image: shape {tuple(value.shape)}, expected (1, lon, v) or (lon, v)")
    return value


class Litter(nn.Module):
    """Add a random litter PV image to some samples of a batch of inputs.

    Parameters
    ----------
    dataset:
        Where litter images come from: a torch Dataset whose items are ``(observation,
        target)`` (e.g. a :class:`~iris_nb.data.datasets.PreObservedDataset` of a store written
        with ``model=near_side_litter``; only the observation is used) or observations
        ``(1, lon, v)``; or a tensor ``(N, 1, lon, v)`` / ``(N, lon, v)``; or a list of these
        (e.g. ``[near, far]``), each drawn independently.  Images must be in the units of the
        inputs (same observer and reduction).
    p:
        Probability that a sample receives an image from a dataset; one number for all or one
        per dataset.
    scale:
        Factor (>= 0) multiplying every litter image.
    generator:
        Default ``torch.Generator`` of the draws (``forward(generator=...)`` overrides it).
    foreground:
        Which datasets hold gas *in front of* the CMZ, whose line absorbs the CMZ's emission:
        ``None`` (default) takes the datasets whose grid lies on the near side of the Galactic
        Centre (stores written on ``litter_grid(grid, "near")``); or a bool, or one per dataset.
    excitation_temperature:
        Excitation temperature (K) of the foreground gas's line; default 8 K (sub-thermal
        13CO(2-1) in cold disc clouds).
    rest_frequency:
        Line frequency, GHz, for the Planck function; default the datasets' grid's (13CO(2-1)).

    ``forward(x)`` with ``x`` of shape ``(B, 1, lon, v)`` or ``(B, lon, v)`` returns, for every
    dataset and sample independently with probability ``p``, the input with one image drawn
    uniformly from the dataset: behind the CMZ the image adds, ``x + scale * litter``; in front
    of it (``foreground``) the foreground gas is an absorbing layer at ``T_ex``: a layer that
    emits ``T_fg = [J(T_ex) - J(T_CMB)] (1 - e^-tau)`` transmits ``e^-tau = 1 - T_fg / [J(T_ex)
    - J(T_CMB)]`` of what lies behind, so ``x * (1 - T_fg / dJ) + T_fg`` (the transmission
    kept >= 0.05).  The PV images are latitude means, so this takes the foreground as uniform
    over latitude within a pixel (clumpy foregrounds absorb somewhat less).  Absorption needs
    brightness temperatures (K); litter in column units (``SimpleObserver``) only adds.
    A new tensor on ``x``'s device and dtype; targets are never touched.  Add litter before
    noise: litter is noise-free gas.
    """

    def __init__(self, dataset, p=0.5, scale: float = 1.0, generator: torch.Generator | None = None,
                 foreground=None, excitation_temperature: float = 8.0,
                 rest_frequency: float | None = None) -> None:
        super().__init__()
        datasets = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
        if not datasets:
            raise ValueError("Litter needs at least one dataset of litter PV images")
        probs = list(p) if isinstance(p, (list, tuple)) else [p] * len(datasets)
        if len(probs) != len(datasets):
            raise ValueError(f"Litter got {len(datasets)} datasets but {len(probs)} probabilities p; give one p "
                             "per dataset or a single number")
        for value in probs + [scale]:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"Litter p and scale must be finite numbers, got {value!r}")
        if any(not 0.0 <= v <= 1.0 for v in probs):
            raise ValueError(f"Litter probabilities p must lie in [0, 1], got {probs}")
        if scale < 0:
            raise ValueError(f"Litter scale must be >= 0, got {scale}")
        shapes = []
        for k, data in enumerate(datasets):
            if not isinstance(data, torch.Tensor) and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
                raise TypeError(f"litter dataset {k} is a {type(data).__name__}; give a torch Dataset of "
                                "(observation, target) items or a tensor (N, 1, lon, v)")
            if isinstance(data, torch.Tensor) and data.ndim == 4:
                if data.shape[1] != 1:
                    raise ValueError(f"litter tensor {k} has shape {tuple(data.shape)}; expected (N, 1, lon, v)")
                data = datasets[k] = data[:, 0]
            if len(data) == 0:
                raise ValueError(f"litter dataset {k} is empty")
            shapes.append(tuple(_as_images(data[0], f"item 0 of litter dataset {k}").shape))
        if len(set(shapes)) > 1:
            raise ValueError(f"litter datasets have different PV shapes (lon, v) {shapes}; make them on one grid")
        self.datasets = datasets
        self.p = [float(v) for v in probs]
        self.scale = float(scale)
        self.generator = generator
        self.pv_shape = shapes[0]
        units = {d.units.get("observation") for d in datasets if isinstance(getattr(d, "units", None), dict)}
        if len(units) > 1:
            raise ValueError(f"litter datasets have different observation units {sorted(units)}; "
                             "open them with PreObservedDataset(..., units={'observation': ...})")
        self.units = units.pop() if units else None
        self.foreground = self._foreground(foreground)
        if not (isinstance(excitation_temperature, numbers.Real) and math.isfinite(excitation_temperature)
                and excitation_temperature > T_CMB):
            raise ValueError(f"excitation_temperature is the foreground line's T_ex in K and must exceed the "
                             f"CMB's {T_CMB} K, got {excitation_temperature!r}")
        grids = [g for g in (getattr(d, "grid", None) for d in self.datasets) if isinstance(g, Grid)]
        if rest_frequency is None:
            rest_frequency = grids[0].rest_frequency if grids else THIRTEEN_CO_21.rest_frequency
        t0 = line_temperature(rest_frequency)
        self.excitation_temperature = float(excitation_temperature)
        self.rest_frequency = float(rest_frequency)
        temperatures = torch.tensor([self.excitation_temperature, T_CMB], dtype=torch.float64)
        j_layer, j_cmb = rj_temperature(temperatures, t0).tolist()
        self._layer_contrast = j_layer - j_cmb  # J(T_ex) - J(T_CMB), K

    def _foreground(self, foreground) -> list[bool]:
        if foreground is None:
            out = []
            for data in self.datasets:
                grid = getattr(data, "grid", None)
                out.append(isinstance(grid, Grid) and grid.distance.stop <= grid.observer_distance)
            return out
        flags = list(foreground) if isinstance(foreground, (list, tuple)) else [foreground] * len(self.datasets)
        if len(flags) != len(self.datasets) or not all(isinstance(f, (bool, np.bool_)) for f in flags):
            raise ValueError(f"foreground must be None, True/False or one bool per litter dataset "
                             f"({len(self.datasets)}), got {foreground!r}")
        return [bool(f) for f in flags]

    @property
    def absorbs(self) -> bool:
        """Whether foreground litter absorbs: some dataset is in front and the images are in K."""
        return any(self.foreground) and self.units in (None, "K")

    def extra_repr(self) -> str:
        sizes = [len(d) for d in self.datasets]
        front = f", foreground={self.foreground} at T_ex={self.excitation_temperature:g} K" if self.absorbs else ""
        return f"datasets of {sizes} images {self.pv_shape}, p={self.p}, scale={self.scale:g}{front}"

    def draw(self, batch: int, generator: torch.Generator | None = None, device=None,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Litter for a batch: ``(litter (batch, 1, lon, v), hits (n_datasets, batch) bool)``.

        ``litter`` is the sum of the images drawn for each sample (zeros where none), already
        multiplied by ``scale``, in the datasets' units; ``hits[k, b]`` tells whether sample
        ``b`` received an image from dataset ``k``.
        """
        litter, front, hits = self._draw(batch, generator, device, dtype)
        return litter, hits

    def _draw(self, batch, generator, device, dtype):
        """``(litter, foreground part of it, hits)``: like :meth:`draw`, plus the summed images of
        the foreground datasets (``(batch, 1, lon, v)``, scaled)."""
        generator = self.generator if generator is None else generator
        gen_device = generator.device if generator is not None else torch.device("cpu")
        litter = torch.zeros((batch, 1) + self.pv_shape, device=device, dtype=dtype)
        front = torch.zeros_like(litter)
        hits = torch.zeros(len(self.datasets), batch, dtype=torch.bool)
        for k, (data, p) in enumerate(zip(self.datasets, self.p)):
            hit = torch.rand(batch, generator=generator, device=gen_device).cpu() < p
            index = torch.randint(len(data), (batch,), generator=generator, device=gen_device).cpu()
            hits[k] = hit
            rows = torch.nonzero(hit).flatten()
            if rows.numel() == 0:
                continue
            if isinstance(data, torch.Tensor):
                images = data[index[rows].to(data.device)]
            else:
                images = torch.stack([_as_images(data[int(i)], f"item {int(i)} of litter dataset {k}")
                                      for i in index[rows]])
            images = images.to(device=litter.device, dtype=dtype)
            litter[rows.to(litter.device), 0] += images
            if self.foreground[k]:
                front[rows.to(litter.device), 0] += images
        if self.scale != 1.0:
            litter *= self.scale
            front *= self.scale
        return litter, front, hits

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` ``(B, 1, lon, v)`` or ``(B, lon, v)`` plus litter; same shape, device, dtype."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"Litter expects a floating-point torch.Tensor of PV images, got "
                            f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' ' + str(x.dtype)}")
        channel = x.ndim == 4 and x.shape[1] == 1
        if not (channel or x.ndim == 3) or tuple(x.shape[-2:]) != self.pv_shape:
            raise ValueError(f"Litter inputs must be PV images (B, 1, lon, v) = (B, 1, {self.pv_shape[0]}, "
                             f"{self.pv_shape[1]}) like its litter images, got {tuple(x.shape)}; "
                             "make the litter store on the inputs' grid (litter_grid(grid, side))")
        litter, front, _ = self._draw(x.shape[0], generator, x.device, x.dtype)
        if not channel:
            litter, front = litter[:, 0], front[:, 0]
        if self.absorbs:
            transmission = (1.0 - front.clamp_min(0.0) / self._layer_contrast).clamp_min(0.05)
            return x * transmission + litter
        return x + litter
