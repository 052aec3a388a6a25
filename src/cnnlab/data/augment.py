"""Batched on-device augmentation: whole batches at once, no per-sample Python."""

from __future__ import annotations

import torch

from cnnlab.errors import ConfigError

AUGMENTATIONS = ("none", "crop", "flip", "noise", "erase")
GEOMETRIC = ("crop", "flip")  # move pixels only: valid on uint8 images too


def parse_augment(spec: str | None, default: str = "none") -> tuple[str, ...]:
    """``"crop,flip"`` → ("crop", "flip"); ``"auto"``/None → the dataset's default."""
    if spec in (None, "", "auto", "default"):
        spec = default
    parts = tuple(p.strip() for p in str(spec).split(",") if p.strip())
    for p in parts:
        if p not in AUGMENTATIONS:
            raise ConfigError(
                f"unknown augmentation {p!r}; choose from: {', '.join(AUGMENTATIONS)} "
                "(comma-separated, or 'auto' for the dataset's default)"
            )
    return tuple(p for p in parts if p != "none")


def random_crop(
    x: torch.Tensor, pad: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad by ``pad`` (zeros) and crop back at a random offset per image. x: (B, C, H, W).

    One ``gather`` over each padded image's flattened pixels: the same result as advanced
    indexing with (B, H, W) index tensors, in far less time on the CPU."""
    b, c, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    wp = w + 2 * pad
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    base = (torch.arange(h, device=dev)[:, None] * wp + torch.arange(w, device=dev)).view(1, 1, -1)
    idx = (base + (oy * wp + ox).view(b, 1, 1)).expand(b, c, h * w)
    return torch.gather(xp.reshape(b, c, -1), 2, idx).view(b, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def gaussian_noise(x: torch.Tensor, std: float = 0.1, generator=None) -> torch.Tensor:
    """x in [0, 1] pixel scale."""
    n = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return (x + std * n).clamp_(0, 1)


def random_erase(
    x: torch.Tensor, p: float = 0.5, scale=(0.02, 0.2), generator=None
) -> torch.Tensor:
    """Zero one random rectangle per selected image (Zhong et al. 2017), batched."""
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(scale[0], scale[1], generator=generator) * h * w
    ratio = torch.exp(torch.empty(b, device=dev).uniform_(-1.2, 1.2, generator=generator))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    y0 = (torch.rand(b, device=dev, generator=generator) * (h - eh + 1)).long()
    x0 = (torch.rand(b, device=dev, generator=generator) * (w - ew + 1)).long()
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])  # (B, H)
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # (B, W)
    sel = torch.rand(b, device=dev, generator=generator) < p
    mask = (my[:, :, None] & mx[:, None, :]) & sel[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)


def apply(x: torch.Tensor, ops: tuple[str, ...], pad: int = 2, generator=None) -> torch.Tensor:
    """Apply ``ops`` to a float batch in [0, 1] pixel scale (before normalisation)."""
    for op in ops:
        if op == "crop":
            x = random_crop(x, pad, generator)
        elif op == "flip":
            x = random_flip(x, generator)
        elif op == "noise":
            x = gaussian_noise(x, 0.1, generator)
        elif op == "erase":
            x = random_erase(x, generator=generator)
    return x
