"""An optional synthesis head after the Reverter's decoder, in the style of Cool-chic.

Cool-chic (Ladune et al. 2023, Leguay et al. 2023) ends its decoder with a small "synthesis"
network whose layers are written as strings ``"<out>-<kernel>-<linear|residual>-<relu|none>"``:
output channels, an odd kernel size, whether the layer adds its input back (residual, which
needs as many output as input channels) and its activation.  Here the head refines the
decoder's top-down maps at full resolution::

    Reverter(grid, head=["16-3-residual-relu", "1-1-linear-none"])

The head also has a linear *stabiliser* branch: a 1x1 convolution from its input straight to
its output, added to the layers' result.  It starts as the identity and the last layer
starts at zero, so a new head passes the decoder's maps through unchanged and training only
moves it away from that where it helps.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["SynthesisHead", "parse_layer"]

_LAYER = re.compile(r"^(\d+)-(\d+)-(linear|residual)-(relu|none)$")


def parse_layer(text) -> tuple[int, int, str, str]:
    """``"<out>-<kernel>-<linear|residual>-<relu|none>"`` -> ``(out, kernel, kind, activation)``."""
    if not isinstance(text, str):
        raise TypeError(f"a head layer is a string like '16-3-residual-relu', got {type(text).__name__} {text!r}")
    match = _LAYER.match(text.strip())
    if match is None:
        raise ValueError(f"head layer {text!r} does not parse: write '<out>-<kernel>-<linear|residual>-<relu|none>', "
                         "e.g. '16-3-residual-relu' or '1-1-linear-none'")
    out, kernel, kind, activation = int(match[1]), int(match[2]), match[3], match[4]
    if out < 1:
        raise ValueError(f"head layer {text!r}: the output channels must be >= 1")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"head layer {text!r}: the kernel size must be odd (1, 3, 5 ...) to keep the map's size")
    return out, kernel, kind, activation


class SynthesisHead(nn.Module):
    """Layers given as strings (see the module) plus a linear stabiliser, ``(B, C, H, W) -> (B, C, H, W)``.

    ``channels`` is the number of maps the head refines (1 for density, 2 for density and
    velocity); the last layer must give that many.
    """

    def __init__(self, channels: int, layers):
        super().__init__()
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
            raise TypeError(f"head must be a non-empty list of layer strings like ['16-3-residual-relu', "
                            f"'{channels}-1-linear-none'], got {layers!r}")
        self.specs = [parse_layer(text) for text in layers]
        self.layers = [str(text).strip() for text in layers]
        convolutions = []
        previous = channels
        for text, (out, kernel, kind, _) in zip(self.layers, self.specs):
            if kind == "residual" and out != previous:
                raise ValueError(f"head layer {text!r} is residual, so it needs as many output as input channels "
                                 f"({previous}); use '{previous}-{kernel}-residual-...' or a linear layer")
            convolutions.append(nn.Conv2d(previous, out, kernel, padding=kernel // 2))
            previous = out
        if previous != channels:
            raise ValueError(f"the head's last layer gives {previous} channels but the model has {channels} output "
                             f"map(s); end with e.g. '{channels}-1-linear-none'")
        self.convolutions = nn.ModuleList(convolutions)
        self.stabiliser = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():  # start as the identity: stabiliser = I, last layer = 0
            self.stabiliser.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
            self.stabiliser.bias.zero_()
            self.convolutions[-1].weight.zero_()
            self.convolutions[-1].bias.zero_()

    def extra_repr(self) -> str:
        return f"layers={self.layers}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for convolution, (_, _, kind, activation) in zip(self.convolutions, self.specs):
            z = convolution(y)
            if kind == "residual":
                z = z + y
            y = torch.relu(z) if activation == "relu" else z
        return y + self.stabiliser(x)
