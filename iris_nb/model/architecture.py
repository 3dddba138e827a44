"""Layer tables of the Reverter encoder and decoder (DESIGN.md section 5).

The 512-pixel network has nine encoder and nine decoder stages and matches the reference
IRIS network layer for layer.  A network for ``N = 2**n`` pixels (``64 <= N <= 512``) keeps
encoder stages ``10 - n .. 9`` (original stage numbers, the first one taking the single
input channel) and decoder stages ``1 .. n`` (the last one giving one output channel,
followed by a ReLU).  Child names are ``_{stage}_{position}_{layer}``, the names that IRIS
state dicts use.

Width
-----
``width`` scales every hidden channel count of both tables (and so the attention embed
dims) to make smaller (``width < 1``) or larger networks with the same layout.  A table
count ``c`` becomes the multiple of its *quantum* ``q`` nearest to ``c * width`` (halves
round up), and at least ``q``.  ``q`` is what the layers using that count must divide it
by: the number of heads of the attention stage after it (2, 4 and 8 for the 64, 128 and
256 channels of stages 4-6) and the 4 groups of the grouped bottleneck convolutions (the
1024 and 2048 channels); 1 for the other counts.  Every table count is a multiple of its
quantum, so ``width=1`` is exactly the IRIS network.  The single input and output channels
never change.  ``width`` must be at least :data:`MIN_WIDTH` (1/32), where each attention
head keeps a single channel (``c * width >= heads`` for every attention stage).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .attention import PixelSelfAttention2d

__all__ = ["VELOCITY_SCALE", "VELOCITY_TRUNK_GRADIENT", "VelocityHead", "Stage", "ENCODER_STAGES", "DECODER_STAGES", "ATTENTION_HEADS", "MIN_WIDTH", "stage_range",
           "check_width", "channel_quantum", "scaled_channels", "build_encoder", "build_decoder",
           "init_weights"]

LEAKY_SLOPE = 0.01
MIN_SIZE, MAX_SIZE = 64, 512


@dataclass(frozen=True)
class Stage:
    """One convolution of the table: channels, kernel, stride, padding, groups."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int = 1


ENCODER_STAGES = {
    1: Stage(1, 4, 4, 2, 1),
    2: Stage(4, 16, 4, 2, 1),
    3: Stage(16, 32, 4, 2, 1),
    4: Stage(32, 64, 4, 2, 1),
    5: Stage(64, 128, 4, 2, 1),
    6: Stage(128, 256, 4, 2, 1),
    7: Stage(256, 512, 4, 2, 1),
    8: Stage(512, 1024, 2, 2, 0),
    9: Stage(1024, 2048, 2, 1, 0, groups=4),
}
"""Encoder Conv2d stages of the 512 network; BN + LeakyReLU after 1-8, LeakyReLU after 9."""

DECODER_STAGES = {
    1: Stage(2048, 1024, 2, 1, 0, groups=4),
    2: Stage(1024, 512, 2, 2, 0),
    3: Stage(512, 256, 4, 2, 1),
    4: Stage(256, 128, 4, 2, 1),
    5: Stage(128, 64, 4, 2, 1),
    6: Stage(64, 32, 4, 2, 1),
    7: Stage(32, 16, 4, 2, 1),
    8: Stage(16, 4, 4, 2, 1),
    9: Stage(4, 1, 4, 2, 1),
}
"""Decoder ConvTranspose2d stages of the 512 network; BN + LeakyReLU after all but the last."""

ATTENTION_HEADS = {4: 2, 5: 4, 6: 8}
"""Encoder stages followed by pixel self-attention, and their number of heads."""


def _channel_quanta() -> dict[int, int]:
    quanta: dict[int, int] = {}

    def need(channels: int, divisor: int) -> None:
        quanta[channels] = math.lcm(quanta.get(channels, 1), divisor)

    for table in (ENCODER_STAGES, DECODER_STAGES):
        for spec in table.values():
            need(spec.in_channels, spec.groups)
            need(spec.out_channels, spec.groups)
    for k, heads in ATTENTION_HEADS.items():
        need(ENCODER_STAGES[k].out_channels, heads)
    return quanta


_QUANTA = _channel_quanta()

MIN_WIDTH = max(heads / ENCODER_STAGES[k].out_channels for k, heads in ATTENTION_HEADS.items())
"""Smallest allowed ``width`` (1/32): every attention head keeps one channel."""


def check_width(width) -> float:
    """Validate a channel ``width`` multiplier (a real number >= :data:`MIN_WIDTH`); returns
    it as a float.  Raises TypeError for non-numbers and ValueError for bad values."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a real number like 1.0 or 0.25, got {type(width).__name__} {width!r}")
    value = float(width)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"width must be a positive finite number (1.0 is the IRIS network, 0.25 a network "
            f"~16 times smaller), got {width!r}"
        )
    for k, heads in ATTENTION_HEADS.items():
        channels = ENCODER_STAGES[k].out_channels
        if channels * value < heads:
            raise ValueError(
                f"width={value:g} is too small: attention stage {k} would get {channels} x {value:g} = "
                f"{channels * value:g} channels for its {heads} heads; use width >= {MIN_WIDTH:g} "
                "(one channel per head)"
            )
    return value


def channel_quantum(channels: int) -> int:
    """The number a table channel count must stay divisible by when scaled (heads, groups)."""
    return _QUANTA.get(channels, 1)


def scaled_channels(channels: int, width: float = 1.0) -> int:
    """Hidden channel count of a table entry ``channels`` at ``width`` (rule in the module
    docstring); ``scaled_channels(c, 1.0) == c`` for every table count."""
    quantum = channel_quantum(channels)
    multiple = math.floor(channels * check_width(width) / quantum + 0.5)
    return quantum * max(1, multiple)


def stage_range(size: int) -> tuple[range, range]:
    """Encoder and decoder stage numbers kept for ``size`` pixels (a power of two, 64..512)."""
    if not isinstance(size, int) or size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise ValueError(
            f"the Reverter needs N x N images with N a power of two between {MIN_SIZE} and "
            f"{MAX_SIZE}, got N={size!r}; regrid to 64, 128, 256 or 512 pixels"
        )
    n = int(math.log2(size))
    return range(10 - n, 10), range(1, n + 1)


def build_encoder(size: int, width: float = 1.0) -> nn.Sequential:
    """Encoder for ``(B, 1, size, size)`` PV images -> ``(B, C, 1, 1)`` latent vectors with
    ``C = scaled_channels(2048, width)`` (2048 at width 1)."""
    stages, _ = stage_range(size)
    width = check_width(width)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for k in stages:
        spec = ENCODER_STAGES[k]
        in_channels = 1 if k == stages.start else scaled_channels(spec.in_channels, width)
        out_channels = scaled_channels(spec.out_channels, width)
        layers[f"_{k}_1_convolution"] = nn.Conv2d(
            in_channels, out_channels, spec.kernel, spec.stride, spec.padding, groups=spec.groups
        )
        if k == 9:
            layers[f"_{k}_2_leaky_relu"] = nn.LeakyReLU(LEAKY_SLOPE)
            continue
        layers[f"_{k}_2_batch_norm"] = nn.BatchNorm2d(out_channels)
        layers[f"_{k}_3_leaky_relu"] = nn.LeakyReLU(LEAKY_SLOPE)
        if k in ATTENTION_HEADS:
            layers[f"_{k}_4_attention"] = PixelSelfAttention2d(out_channels, ATTENTION_HEADS[k])
    return nn.Sequential(layers)


VELOCITY_SCALE = 100.0
"""km/s per unit of the velocity head's raw output (two-output models)."""

VELOCITY_TRUNK_GRADIENT = 0.1
"""Factor on the velocity loss's gradient where it enters the shared encoder: the velocity
decoder learns at full rate but pulls the encoder only gently (measured on 64-pixel fields:
density correlation 0.61 and velocity rms 14.7 km/s, against 0.63 for a density-only model;
one shared decoder gave 0.36 and 18 km/s, or 0.04 with the full gradient)."""


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class VelocityHead(nn.Module):
    """The velocity output of a two-output Reverter: a decoder of its own (the density decoder's
    layers, without the final ReLU) from the shared latent vector, whose gradient into the
    encoder is scaled by ``trunk_gradient``; returns the H2-weighted line-of-sight velocity in
    km/s (raw output times :data:`VELOCITY_SCALE`)."""

    def __init__(self, size: int, width: float = 1.0, trunk_gradient: float = VELOCITY_TRUNK_GRADIENT):
        super().__init__()
        decoder = build_decoder(size, width)
        last = list(decoder._modules)[-1]
        decoder._modules[last] = nn.Identity()  # velocities have either sign
        init_weights(nn.Sequential(), decoder)
        self.decoder = decoder
        self.trunk_gradient = float(trunk_gradient)

    def forward(self, latent):
        if self.trunk_gradient != 1.0 and torch.is_grad_enabled():
            latent = _ScaleGradient.apply(latent, self.trunk_gradient)
        return self.decoder(latent) * VELOCITY_SCALE


def build_decoder(size: int, width: float = 1.0) -> nn.Sequential:
    """Decoder for ``(B, C, 1, 1)`` latent vectors (``C = scaled_channels(2048, width)``)
    -> ``(B, 1, size, size)`` maps (>= 0)."""
    _, stages = stage_range(size)
    width = check_width(width)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for k in stages:
        spec = DECODER_STAGES[k]
        last = k == stages[-1]
        in_channels = scaled_channels(spec.in_channels, width)
        out_channels = 1 if last else scaled_channels(spec.out_channels, width)
        layers[f"_{k}_1_transpose_convolution"] = nn.ConvTranspose2d(
            in_channels, out_channels, spec.kernel, spec.stride, spec.padding, groups=spec.groups
        )
        if last:
            layers[f"_{k}_2_relu"] = nn.ReLU()
        else:
            layers[f"_{k}_2_batch_norm"] = nn.BatchNorm2d(out_channels)
            layers[f"_{k}_3_leaky_relu"] = nn.LeakyReLU(LEAKY_SLOPE)
    return nn.Sequential(layers)


def init_weights(encoder: nn.Sequential, decoder: nn.Sequential) -> None:
    """Kaiming-uniform init of every (transpose) convolution weight, as in IRIS.

    LeakyReLU gain (slope 0.01) everywhere except the last transpose convolution, which
    feeds a ReLU.  Biases, norms and attention keep the torch defaults.
    """
    convolutions = [m for m in (*encoder, *decoder) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for module in convolutions[:-1]:
        nn.init.kaiming_uniform_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
    nn.init.kaiming_uniform_(convolutions[-1].weight, a=LEAKY_SLOPE, nonlinearity="relu")
