"""Self-attention between the pixels of a feature map.

:class:`PixelSelfAttention2d` turns every pixel of a ``(B, C, H, W)`` feature map into a
token of ``C`` features, lets all tokens attend to each other (no positional encoding) and
turns the tokens back into a feature map.  Its submodules keep the layout of the reference
IRIS network (``pre_norm``, ``attention`` as a :class:`torch.nn.MultiheadAttention`,
``post_norm``) so that IRIS checkpoints load unchanged, while the forward pass can use
:func:`torch.nn.functional.scaled_dot_product_attention` on the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PixelSelfAttention2d"]


class PixelSelfAttention2d(nn.Module):
    """Post-norm residual self-attention over the pixels of a feature map.

    With tokens ``x`` of shape ``(B, H*W, C)``::

        y = pre_norm(x); a = attention(y, y, y); out = post_norm(x + a)

    Parameters
    ----------
    channels:
        Number of feature channels ``C`` (the token width); must be divisible by ``heads``.
    heads:
        Number of attention heads.
    fast_attention:
        ``True`` (default): compute the attention with
        :func:`~torch.nn.functional.scaled_dot_product_attention` from the weights of
        ``self.attention``.  ``False``: call the :class:`~torch.nn.MultiheadAttention`
        module itself, as the reference does.  Both give the same numbers (to float
        rounding); the switch may be flipped at any time.

    Shapes: input and output ``(B, C, H, W)``, dimensionless features.
    """

    def __init__(self, channels: int, heads: int, fast_attention: bool = True) -> None:
        super().__init__()
        if channels < 1 or heads < 1 or channels % heads:
            raise ValueError(
                f"attention needs channels divisible by heads, got channels={channels}, heads={heads}"
            )
        self.channels = int(channels)
        self.heads = int(heads)
        self.fast_attention = bool(fast_attention)
        self.pre_norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.post_norm = nn.LayerNorm(channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, fast_attention={self.fast_attention}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend across pixels: ``(B, C, H, W) -> (B, C, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"PixelSelfAttention2d expected a (B, {self.channels}, H, W) feature map, "
                f"got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        # (B, H, W, C) is a free view for channels_last inputs, a copy otherwise.
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        y = self.pre_norm(tokens)
        if self.fast_attention and self._fast_path_supported():
            a = self._scaled_dot_product(y)
        else:
            a = self.attention(y, y, y)[0]
        out = self.post_norm(tokens + a)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def _fast_path_supported(self) -> bool:
        mha = self.attention
        return (
            mha._qkv_same_embed_dim
            and mha.in_proj_weight is not None
            and mha.bias_k is None
            and mha.bias_v is None
            and not mha.add_zero_attn
        )

    def _scaled_dot_product(self, y: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention of tokens ``(B, L, C) -> (B, L, C)`` via SDPA."""
        mha = self.attention
        b, length, c = y.shape
        head_dim = c // self.heads
        qkv = F.linear(y, mha.in_proj_weight, mha.in_proj_bias)  # (B, L, 3C)
        qkv = qkv.view(b, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, L, head_dim)
        dropout = mha.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        a = a.transpose(1, 2).reshape(b, length, c)
        return F.linear(a, mha.out_proj.weight, mha.out_proj.bias)
