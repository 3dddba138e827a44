"""Faster inference copies of a Reverter.

:func:`optimize_for_inference` returns a new, evaluation-only :class:`Reverter` that gives
the same numbers as the original in eval mode (to float rounding) but runs faster:

* attention through :func:`torch.nn.functional.scaled_dot_product_attention`;
* every BatchNorm folded into the (transpose) convolution before it (one pass less over
  each activation);
* the bottleneck (transpose) convolutions as matrix products and the last, few-channel
  transpose convolutions in sub-pixel form (:mod:`iris_nb.model.fast_layers`);
* channels-last memory layout, and optionally in-place activations and ``torch.compile``.

``benchmarks/bench_inference.py`` measures what each step buys.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .attention import PixelSelfAttention2d
from .fast_layers import PatchLinear, SubPixelConvTranspose2d, patch_linear_applies, sub_pixel_applies

__all__ = ["optimize_for_inference", "fold_batch_norm", "set_fast_attention"]


def fold_batch_norm(convolution: nn.Conv2d | nn.ConvTranspose2d, norm: nn.BatchNorm2d) -> nn.Module:
    """A new convolution equal to ``norm(convolution(x))`` with ``norm`` in eval mode.

    Works for :class:`~torch.nn.Conv2d` (weight ``(out, in/groups, kh, kw)``) and
    :class:`~torch.nn.ConvTranspose2d` (weight ``(in, out/groups, kh, kw)``), grouped or not.
    The new layer always has a bias.
    """
    if not isinstance(norm, nn.BatchNorm2d) or not norm.track_running_stats or norm.running_var is None:
        raise TypeError(f"can only fold a BatchNorm2d with running statistics, got {type(norm).__name__}")
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        weight = convolution.weight.double()
        if isinstance(convolution, nn.ConvTranspose2d):
            groups = convolution.groups
            in_ch, out_per_group = weight.shape[:2]
            grouped = weight.reshape(groups, in_ch // groups, out_per_group, *weight.shape[2:])
            grouped = grouped * scale.reshape(groups, 1, out_per_group, 1, 1)
            weight = grouped.reshape(weight.shape)
        elif isinstance(convolution, nn.Conv2d):
            weight = weight * scale.reshape(-1, 1, 1, 1)
        else:
            raise TypeError(f"can only fold into Conv2d or ConvTranspose2d, got {type(convolution).__name__}")
        bias = convolution.bias.double() if convolution.bias is not None else torch.zeros_like(scale)
        fused = copy.deepcopy(convolution)
        dtype = convolution.weight.dtype
        fused.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        fused.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=False)
    return fused


def set_fast_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every :class:`PixelSelfAttention2d` in ``model`` to the SDPA kernel (or back
    to calling :class:`~torch.nn.MultiheadAttention`); returns ``model``."""
    for module in model.modules():
        if isinstance(module, PixelSelfAttention2d):
            module.fast_attention = bool(enabled)
    return model


def _fold_sequential(sequence: nn.Sequential) -> None:
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
            sequence._modules[first] = fold_batch_norm(conv, norm)
            sequence._modules[second] = nn.Identity()


def _rewrite_layers(sequence: nn.Sequential) -> None:
    for name, layer in list(sequence._modules.items()):
        if patch_linear_applies(layer):
            sequence._modules[name] = PatchLinear(layer)
        elif sub_pixel_applies(layer) and layer.out_channels <= SUB_PIXEL_MAX_CHANNELS:
            sequence._modules[name] = SubPixelConvTranspose2d(layer)


SUB_PIXEL_MAX_CHANNELS = 4
"""Sub-pixel form only where it was measured faster than oneDNN (few output channels)."""


def optimize_for_inference(model, *, fast_attention: bool = True, fold_batch_norms: bool = True,
                           rewrite_layers: bool = True, inplace_activations: bool = False,
                           channels_last: bool = True, compile: bool = False):
    """A faster, evaluation-only copy of a :class:`~iris_nb.model.Reverter`.

    The original is left untouched.  The copy has the same call signature
    (``copy(inputs, reduce=True)``: ``(B, 1, lon, lat, v) -> (B, 1, distance, lon)``, same
    units) and the same ``grid``, ``units``, ``call_in_units`` and so on, but it is in eval
    mode, its parameters do not require gradients, and it cannot be saved
    (``inference_only`` is ``True``).  Run it under :func:`torch.inference_mode` for the
    best speed.

    Parameters
    ----------
    fast_attention:
        Attention through ``scaled_dot_product_attention``.
    fold_batch_norms:
        Fold each BatchNorm into the convolution before it (the norm becomes Identity).
    rewrite_layers:
        Replace unpadded non-overlapping (transpose) convolutions by
        :class:`~iris_nb.model.fast_layers.PatchLinear` and the last few-channel k4 s2
        transpose convolutions by :class:`~iris_nb.model.fast_layers.SubPixelConvTranspose2d`.
    inplace_activations:
        LeakyReLU / ReLU overwrite their input instead of allocating a new tensor.  Off by
        default: with channels-last layout it was measured ~10% slower on CPU.
    channels_last:
        Channels-last memory layout for weights and activations (helps oneDNN on CPU and
        tensor cores on GPU).
    compile:
        ``torch.compile`` the encoder and decoder in place (first call is slow; needs a
        C++ compiler on CPU).
    """
    if not (isinstance(model, nn.Module) and isinstance(getattr(model, "encoder", None), nn.Sequential)
            and isinstance(getattr(model, "decoder", None), nn.Sequential)):
        raise TypeError(f"optimize_for_inference needs a Reverter, got {type(model).__name__}")
    fast = copy.deepcopy(model)
    fast.eval()
    fast.requires_grad_(False)
    set_fast_attention(fast, fast_attention)
    if fold_batch_norms:
        _fold_sequential(fast.encoder)
        _fold_sequential(fast.decoder)
    if rewrite_layers:
        _rewrite_layers(fast.encoder)
        _rewrite_layers(fast.decoder)
    if inplace_activations:
        for module in fast.modules():
            if isinstance(module, (nn.LeakyReLU, nn.ReLU)):
                module.inplace = True
    if channels_last:
        fast.channels_last = True
    if compile:
        fast.encoder.compile()
        fast.decoder.compile()
    fast.inference_only = True
    return fast
