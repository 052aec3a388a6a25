"""Q/K/V scaled dot-product self-attention over a conv feature map (the article's 4 steps).

1. encode the input into Query, Key and Value (1×1 convolutions, ``heads`` × ``dim``);
2. score = Q·Kᵀ/√dim between every pair of positions, softmax → attention weights;
3. output = weights · V;
4. join the output to the input: ``concat`` (the article's step 4: [x, out] along channels,
   then a 1×1 conv back to C channels so the block drops into an existing network without
   changing any later layer) or ``residual`` (x + W_o·out, the transformer/SAGAN form).

The last weights are kept in ``last_attention``, shape (B, heads, HW, HW) — row i is where
position i looked — for visualisation (detached, on the module's device).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.errors import ConfigError, choices_msg

JOINS = ("none", "concat", "residual")


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, join: str = "concat", heads: int = 1, dim: int = 0):
        super().__init__()
        if join not in ("concat", "residual"):
            raise ConfigError(choices_msg("attention join", join, JOINS[1:]))
        heads, dim = int(heads), int(dim)
        if heads < 1:
            raise ConfigError(f"attention_heads must be ≥ 1, got {heads}")
        dim = dim or max(1, channels // heads)  # 0 = split the channels across the heads
        if dim < 1:
            raise ConfigError(f"attention_dim must be ≥ 1 (0 = channels/heads), got {dim}")
        self.channels, self.join, self.heads, self.dim = channels, join, heads, dim
        inner = heads * dim
        self.q = nn.Conv2d(channels, inner, 1)
        self.k = nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(channels, inner, 1)
        if join == "concat":
            self.out = nn.Conv2d(channels + inner, channels, 1)
        else:
            self.out = nn.Conv2d(inner, channels, 1)
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, hd, d = h * w, self.heads, self.dim

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, heads·d, H, W) → (B, heads, HW, d)
            return t.reshape(b, hd, d, n).transpose(2, 3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))  # step 1
        scores = q @ k.transpose(2, 3) / math.sqrt(d)  # (B, heads, HW, HW), step 2
        weights = scores.softmax(-1)
        self.last_attention = weights.detach()
        o = weights @ v  # (B, heads, HW, d), step 3
        o = o.transpose(2, 3).reshape(b, hd * d, h, w)  # (B, heads·d, H, W)
        if self.join == "concat":  # step 4
            return self.out(torch.cat([x, o], 1))
        return x + self.out(o)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, join={self.join}, heads={self.heads}, dim={self.dim}"


def maybe_attention(channels: int, attention: str | None, heads: int, dim: int) -> list:
    """[] when attention is off, else [SelfAttention2d] (to append to a Sequential)."""
    key = "none" if attention in (None, False) else str(attention).lower()
    if key not in JOINS:
        raise ConfigError(choices_msg("attention", attention, JOINS))
    if key == "none":
        return []
    return [SelfAttention2d(channels, key, heads, dim)]
