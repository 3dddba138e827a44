"""Inference-only rewrites of convolutions whose oneDNN kernels are slow on CPU.

Both layer kinds compute exactly the convolution they replace (to float rounding), from
weights rearranged once at construction:

* :class:`PatchLinear` for (transpose) convolutions whose patches do not overlap
  (kernel == stride, no padding), e.g. the 2 x 2 bottleneck stages of the Reverter.  They
  become one (batched) matrix product per call, which avoids oneDNN re-ordering the large
  weight tensors on every call.
* :class:`SubPixelConvTranspose2d` for kernel-4, stride-2, padding-1 transpose convolutions
  with few channels (the last decoder stages): a 3 x 3 convolution to ``4 * out`` channels
  followed by a pixel shuffle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchLinear", "SubPixelConvTranspose2d", "patch_linear_applies", "sub_pixel_applies",
           "depth_to_space", "space_to_depth"]


def patch_linear_applies(layer: nn.Module) -> bool:
    """Whether ``layer`` is a (transpose) convolution that :class:`PatchLinear` can replace."""
    if type(layer) not in (nn.Conv2d, nn.ConvTranspose2d):
        return False
    return (layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.kernel_size[0] == layer.kernel_size[1]
            and layer.padding_mode == "zeros" and getattr(layer, "output_padding", (0, 0)) == (0, 0))


def sub_pixel_applies(layer: nn.Module) -> bool:
    """Whether ``layer`` is a k4 s2 p1 ungrouped transpose convolution (sub-pixel form exists)."""
    return (type(layer) is nn.ConvTranspose2d and layer.kernel_size == (4, 4) and layer.stride == (2, 2)
            and layer.padding == (1, 1) and layer.groups == 1 and layer.dilation == (1, 1)
            and layer.output_padding == (0, 0))


def depth_to_space(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.pixel_shuffle(x, k)`` as one permuted copy (2-4x faster on CPU):
    ``(B, C k k, H, W) -> (B, C, k H, k W)``."""
    b, c, h, w = x.shape
    c_out = c // (k * k)
    return x.reshape(b, c_out, k, k, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c_out, h * k, w * k)


def space_to_depth(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.pixel_unshuffle(x, k)``: ``(B, C, k H, k W) -> (B, C k k, H, W)``, channel order
    ``(c, i, j)``."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // k, k, w // k, k).permute(0, 1, 3, 5, 2, 4).reshape(b, c * k * k, h // k, w // k)


class PatchLinear(nn.Module):
    """A convolution (or transpose convolution) over non-overlapping ``k x k`` patches as a
    matrix product.

    Built from a :class:`~torch.nn.Conv2d` / :class:`~torch.nn.ConvTranspose2d` without
    padding.  Exact when the patches do not overlap: ``stride == kernel``, or (stride 1) a
    convolution whose input is one ``k x k`` patch / a transpose convolution of a 1 x 1
    input.  Other inputs fall back to the original convolution.

    Shapes: Conv2d ``(B, C_in, H, W) -> (B, C_out, H/k, W/k)``; ConvTranspose2d
    ``(B, C_in, H, W) -> (B, C_out, k H, k W)``; features dimensionless.
    """

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        if not patch_linear_applies(layer):
            raise TypeError(f"PatchLinear needs an unpadded square (transpose) convolution, got {layer}")
        self.transpose = isinstance(layer, nn.ConvTranspose2d)
        self.kernel = layer.kernel_size[0]
        self.stride = layer.stride
        self.groups = layer.groups
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        k2, g = self.kernel**2, self.groups
        weight = layer.weight.detach()
        bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(self.out_channels)
        if self.transpose:  # (C_in, C_out/g, k, k) -> (g, C_in/g, C_out/g * k * k)
            matrix = weight.reshape(g, self.in_channels // g, -1)
            bias = bias.repeat_interleave(k2)
        else:  # (C_out, C_in/g, k, k) -> (g, C_in/g * k * k, C_out/g)
            matrix = weight.reshape(g, self.out_channels // g, -1).transpose(1, 2)
        self.register_buffer("matrix", matrix.contiguous())
        self.register_buffer("bias", bias.contiguous())
        self.fallback = layer

    def _exact(self, x: torch.Tensor) -> bool:
        h, w = x.shape[-2:]
        if self.stride == (self.kernel, self.kernel):
            return self.transpose or (h % self.kernel == 0 and w % self.kernel == 0)
        return (h, w) == ((1, 1) if self.transpose else (self.kernel, self.kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolution: ``(B, C_in, H, W)`` -> see the class docstring."""
        if not self._exact(x):
            return self.fallback(x)
        k, g = self.kernel, self.groups
        if not self.transpose:
            x = space_to_depth(x, k) if k > 1 else x  # channel order (c, i, j) as in the weight
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b * h * w, g, c // g).transpose(0, 1)  # (g, T, c/g)
        out = torch.bmm(tokens, self.matrix)  # (g, T, out/g [* k * k])
        out = out.transpose(0, 1).reshape(b, h, w, -1) + self.bias
        out = out.permute(0, 3, 1, 2)
        return depth_to_space(out, k) if self.transpose and k > 1 else out


class SubPixelConvTranspose2d(nn.Module):
    """A kernel-4, stride-2, padding-1 transpose convolution as conv3x3 + pixel shuffle.

    Output pixel ``(2i + a, 2j + b)`` only sees input pixels ``i-1..i+1, j-1..j+1``, so the
    four output phases ``(a, b)`` are four 3 x 3 convolutions (with some zero taps) stacked
    as ``4 * C_out`` channels.  Shapes: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``.
    """

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not sub_pixel_applies(layer):
            raise TypeError(f"SubPixelConvTranspose2d needs a k4 s2 p1 ungrouped ConvTranspose2d, got {layer}")
        weight = layer.weight.detach()  # (C_in, C_out, 4, 4)
        c_in, c_out = weight.shape[:2]
        phases = weight.new_zeros(c_out, 2, 2, c_in, 3, 3)
        # y[2i + a] gets x[i + d - 1] through kernel tap 2 (1 - d) + a + 1 (when inside 0..3)
        for a in range(2):
            for d in range(3):
                tap_row = 2 * (1 - d) + a + 1
                if not 0 <= tap_row < 4:
                    continue
                for b in range(2):
                    for e in range(3):
                        tap_col = 2 * (1 - e) + b + 1
                        if 0 <= tap_col < 4:
                            phases[:, a, b, :, d, e] = weight[:, :, tap_row, tap_col].t()
        bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(c_out)
        self.register_buffer("weight", phases.reshape(4 * c_out, c_in, 3, 3).contiguous())
        self.register_buffer("bias", bias.repeat_interleave(4).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample by 2: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""
        return depth_to_space(F.conv2d(x, self.weight, self.bias, padding=1), 2)
