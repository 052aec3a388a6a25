"""Image corruptions at five severities, batched with torch on [0, 1] pixels.

Each corruption is one function of a batch (B, C, H, W), a severity level 1..5 and an
optional generator, so a seeded generator gives the same corrupted images every time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError, choices_msg

# Five severity levels per corruption, in the units of the function (pixel scale or a
# fraction of the image side, so they mean the same on 28- and 224-pixel inputs).
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.05, 0.1, 0.2, 0.3, 0.4),  # noise std
    "salt_pepper": (0.01, 0.03, 0.06, 0.1, 0.2),  # fraction of pixels set to 0 or 1
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),  # Gaussian σ in pixels of a 28-pixel image
    "brightness": (0.1, 0.2, 0.3, 0.45, 0.6),  # added to every pixel
    "contrast": (0.7, 0.5, 0.35, 0.2, 0.1),  # factor around the image mean
    "rotation": (10, 20, 30, 45, 60),  # degrees, random sign per image
    "shift": (0.05, 0.1, 0.15, 0.2, 0.3),  # fraction of the side, random direction
    "occlusion": (0.1, 0.2, 0.3, 0.4, 0.5),  # side of one random black square / image side
    "missing_pixels": (0.1, 0.2, 0.35, 0.5, 0.7),  # fraction of input features zeroed
}
CORRUPTIONS = tuple(SEVERITIES)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def corrupt(x: torch.Tensor, name: str, level: int, generator=None) -> torch.Tensor:
    """Apply corruption ``name`` at severity ``level`` (1..5) to x (B, C, H, W) in [0, 1]."""
    if name not in SEVERITIES:
        raise CnnlabError(choices_msg("corruption", name, CORRUPTIONS))
    if not 1 <= level <= 5:
        raise CnnlabError(f"severity {level} out of range; choose 1 to 5")
    s = SEVERITIES[name][level - 1]
    b, c, h, w = x.shape
    dev, g = x.device, generator

    def rand(*shape):
        return torch.rand(shape, device=dev, generator=g)

    if name == "gaussian_noise":
        n = torch.randn(x.shape, device=dev, generator=g)
        return (x + s * n).clamp(0, 1)
    if name == "salt_pepper":
        u = rand(b, 1, h, w)
        salt = (rand(b, 1, h, w) < 0.5).to(x.dtype)
        return torch.where(u < s, salt.expand_as(x), x)
    if name == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        sigma = s * h / 28
        k = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur(x, [k, k], [sigma, sigma])
    if name == "brightness":
        return (x + s).clamp(0, 1)
    if name == "contrast":
        m = x.mean((1, 2, 3), keepdim=True)
        return ((x - m) * s + m).clamp(0, 1)
    if name == "rotation":
        a = math.radians(s) * torch.where(rand(b) < 0.5, -1.0, 1.0)
        cos, sin, z = a.cos(), a.sin(), torch.zeros(b, device=dev)
        theta = torch.stack([torch.stack([cos, -sin, z], 1), torch.stack([sin, cos, z], 1)], 1)
        return _affine(x, theta)  # theta (B, 2, 3)
    if name == "shift":
        phi = rand(b) * 2 * math.pi
        one, z = torch.ones(b, device=dev), torch.zeros(b, device=dev)
        tx, ty = 2 * s * phi.cos(), 2 * s * phi.sin()  # normalised coords span 2
        theta = torch.stack([torch.stack([one, z, tx], 1), torch.stack([z, one, ty], 1)], 1)
        return _affine(x, theta)
    if name == "occlusion":
        ph, pw = max(1, round(s * h)), max(1, round(s * w))
        y0 = (rand(b) * (h - ph + 1)).long()
        x0 = (rand(b) * (w - pw + 1)).long()
        ys = torch.arange(h, device=dev)[None]
        xs = torch.arange(w, device=dev)[None]
        my = (ys >= y0[:, None]) & (ys < (y0 + ph)[:, None])  # (B, H)
        mx = (xs >= x0[:, None]) & (xs < (x0 + pw)[:, None])  # (B, W)
        return x.masked_fill((my[:, :, None] & mx[:, None, :])[:, None], 0.0)
    # missing_pixels: each input feature (pixel, channel) dropped independently
    return x.masked_fill(rand(*x.shape) < s, 0.0)
