"""An independent IRIS reference network, built straight from the DESIGN.md section 5 table
with plain torch layers, to check that iris_nb's Reverter is state-dict and output compatible."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from iris_nb.grids import SEDIGISM

# (stage, in, out, kernel, stride, padding, groups, batch norm, attention heads)
ENCODER_TABLE = [
    (1, 1, 4, 4, 2, 1, 1, True, 0),
    (2, 4, 16, 4, 2, 1, 1, True, 0),
    (3, 16, 32, 4, 2, 1, 1, True, 0),
    (4, 32, 64, 4, 2, 1, 1, True, 2),
    (5, 64, 128, 4, 2, 1, 1, True, 4),
    (6, 128, 256, 4, 2, 1, 1, True, 8),
    (7, 256, 512, 4, 2, 1, 1, True, 0),
    (8, 512, 1024, 2, 2, 0, 1, True, 0),
    (9, 1024, 2048, 2, 1, 0, 4, False, 0),
]
# (stage, in, out, kernel, stride, padding, groups)
DECODER_TABLE = [
    (1, 2048, 1024, 2, 1, 0, 4),
    (2, 1024, 512, 2, 2, 0, 1),
    (3, 512, 256, 4, 2, 1, 1),
    (4, 256, 128, 4, 2, 1, 1),
    (5, 128, 64, 4, 2, 1, 1),
    (6, 64, 32, 4, 2, 1, 1),
    (7, 32, 16, 4, 2, 1, 1),
    (8, 16, 4, 4, 2, 1, 1),
    (9, 4, 1, 4, 2, 1, 1),
]


class ReferenceAttention(nn.Module):
    """The reference pixel attention: nn.MultiheadAttention called directly."""

    def __init__(self, channels, heads):
        super().__init__()
        self.pre_norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.post_norm = nn.LayerNorm(channels)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.view(b, c, h * w).permute(0, 2, 1)
        y = self.pre_norm(tokens)
        a, _ = self.attention(y, y, y)
        return self.post_norm(tokens + a).permute(0, 2, 1).reshape(b, c, h, w)


class ReferenceReverter(nn.Module):
    """IRIS at 512, written independently of iris_nb.model."""

    def __init__(self, reduction="mean"):
        super().__init__()
        enc = OrderedDict()
        for k, cin, cout, ks, st, pad, groups, bn, heads in ENCODER_TABLE:
            enc[f"_{k}_1_convolution"] = nn.Conv2d(cin, cout, ks, st, pad, groups=groups)
            if bn:
                enc[f"_{k}_2_batch_norm"] = nn.BatchNorm2d(cout)
                enc[f"_{k}_3_leaky_relu"] = nn.LeakyReLU(0.01)
            else:
                enc[f"_{k}_2_leaky_relu"] = nn.LeakyReLU(0.01)
            if heads:
                enc[f"_{k}_4_attention"] = ReferenceAttention(cout, heads)
        dec = OrderedDict()
        for k, cin, cout, ks, st, pad, groups in DECODER_TABLE:
            dec[f"_{k}_1_transpose_convolution"] = nn.ConvTranspose2d(cin, cout, ks, st, pad, groups=groups)
            if k < 9:
                dec[f"_{k}_2_batch_norm"] = nn.BatchNorm2d(cout)
                dec[f"_{k}_3_leaky_relu"] = nn.LeakyReLU(0.01)
            else:
                dec[f"_{k}_2_relu"] = nn.ReLU()
        self.encoder = nn.Sequential(enc)
        self.decoder = nn.Sequential(dec)
        self.reduction = reduction
        for name, value in (("temperature", 1e3), ("intensity", 1e-20), ("v_density", 2.0), ("density", 1e-3)):
            setattr(self, name, nn.Parameter(torch.tensor(value, dtype=torch.float32), requires_grad=False))

    def forward(self, cube):
        x = cube.mean(dim=3) if self.reduction == "mean" else cube.max(dim=3)[0]
        return self.decoder(self.encoder(x))


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give norms non-trivial weights and running statistics, so that loading them matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(7)
            if isinstance(m, nn.MultiheadAttention):
                m.in_proj_bias.copy_(0.1 * torch.randn(m.in_proj_bias.shape, generator=gen))
                m.out_proj.bias.copy_(0.1 * torch.randn(m.out_proj.bias.shape, generator=gen))
    return module


@pytest.fixture(scope="session")
def reference_512():
    """A randomised reference IRIS network in eval mode, with IRIS's kaiming init so that its
    output is not degenerate (torch's default init leaves it almost all zeros)."""
    torch.manual_seed(1234)
    reference = ReferenceReverter()
    for m in reference.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, a=0.01, nonlinearity="leaky_relu")
    with torch.no_grad():
        reference.decoder._9_1_transpose_convolution.bias.fill_(0.5)
    return randomise(reference).eval()


def grid_of(size):
    """The SEDIGISM window on a ``size`` x ``size`` (distance, lon, velocity) grid with 8 latitudes."""
    return SEDIGISM.replace(
        distance=SEDIGISM.distance.with_steps(size), lon=SEDIGISM.lon.with_steps(size),
        lat=SEDIGISM.lat.with_steps(8), velocity=SEDIGISM.velocity.with_steps(size), name=f"N{size}",
    )
