"""DCGAN generators and discriminators (Radford et al. 2016) for 28×28 and 32×32 images.

Kept in their own registry (``GANS``), not in the classifier registry: a GAN is a pair of
networks and does not follow the classifier contract.

Generator: z (B, z_dim) → transposed conv to (2w, s/4, s/4) → (w, s/2, s/2) → (C, s, s),
batch norm + ReLU between, tanh output in [-1, 1]. Discriminator: strided convs with
LeakyReLU(0.2) (batch norm on the second), a last conv over the whole s/4 map gives one
logit. The conditional variant (a cGAN, Mirza & Osindero 2014) appends a one-hot class
vector to z and one constant plane per class to the discriminator's input; the AC-GAN
variant (Odena et al. 2017) gives D an auxiliary class head instead of the label planes. All conv
weights N(0, 0.02), batch-norm scales N(1, 0.02), as in the DCGAN paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.registry import Registry

SIZES = (28, 32)


def dcgan_init(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    def __init__(self, channels: int, size: int, z_dim: int, width: int, num_classes: int = 0):
        super().__init__()
        self.channels, self.size, self.z_dim = channels, size, z_dim
        self.num_classes = num_classes  # 0 = unconditional
        s0 = size // 4  # 7 for 28 px, 8 for 32 px
        self.net = nn.Sequential(
            # (B, z+K, 1, 1) → (B, 2w, s0, s0)
            nn.ConvTranspose2d(z_dim + num_classes, 2 * width, s0, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),  # → 2·s0
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),  # → 4·s0 = size
            nn.Tanh(),
        )
        dcgan_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise ValueError("a conditional generator needs class labels y")
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1)
        return self.net(z[:, :, None, None])  # (B, z+K, 1, 1) → (B, C, size, size)


class Discriminator(nn.Module):
    """``num_classes`` > 0: the label enters as input planes (cGAN). ``aux_classes`` > 0:
    instead an auxiliary head predicts the class (AC-GAN); the label is not an input."""

    def __init__(self, channels: int, size: int, width: int, num_classes: int = 0, aux_classes=0):
        super().__init__()
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.aux_classes = aux_classes
        s0 = size // 4
        self.features = nn.Sequential(
            nn.Conv2d(channels + num_classes, width, 4, 2, 1),  # → size/2; no BN on input
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),  # → s0
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, True),
        )
        self.out = nn.Conv2d(2 * width, 1, s0, 1, 0)  # whole map → one logit
        self.aux = nn.Linear(2 * width * s0 * s0, aux_classes) if aux_classes else None
        dcgan_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, with_class: bool = False):
        """(B,) real/fake logits; with ``with_class`` also (B, K) class logits (AC-GAN)."""
        if self.num_classes:
            if y is None:
                raise ValueError("a conditional discriminator needs class labels y")
            b, _, h, w = x.shape
            planes = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(b, self.num_classes, h, w)], 1)
        f = self.features(x)
        logits = self.out(f).flatten()  # (B, 1, 1, 1) → (B,)
        if with_class:
            if self.aux is None:
                raise ValueError("this discriminator has no auxiliary classifier")
            return logits, self.aux(f.flatten(1))  # (B, 2w, s0, s0) → (B, 2w·s0²) → (B, K)
        return logits


@dataclass
class GanEntry:
    name: str
    conditional: bool
    description: str
    builder: Callable[..., tuple[Generator, Discriminator]]
    auxiliary: bool = False  # AC-GAN: D classifies, G is trained to be classified right


GANS: Registry[GanEntry] = Registry("gan")


def _build(conditional: bool, auxiliary: bool = False):
    def build(channels, size, num_classes, z_dim, width):
        k = num_classes if conditional else 0
        G = Generator(channels, size, z_dim, width, k)
        if auxiliary:
            return G, Discriminator(channels, size, width, 0, aux_classes=num_classes)
        return G, Discriminator(channels, size, width, k)

    return build


GANS.register(
    "dcgan",
    GanEntry("dcgan", False, "DCGAN (Radford et al. 2016), 28/32 px", _build(False)),
)
GANS.register(
    "dcgan-conditional",
    GanEntry(
        "dcgan-conditional",
        True,
        "class-conditional DCGAN (one-hot label into G and D)",
        _build(True),
    ),
)

GANS.register(
    "dcgan-ac",
    GanEntry(
        "dcgan-ac",
        True,
        "auxiliary-classifier DCGAN (AC-GAN, Odena et al. 2017): one-hot label into G, "
        "D predicts real/fake and the class",
        _build(True, auxiliary=True),
        auxiliary=True,
    ),
)


def list_gans(pattern: str | None = None) -> list[str]:
    return GANS.names(pattern)


def create_gan(
    name: str,
    channels: int = 1,
    size: int = 28,
    num_classes: int = 10,
    z_dim: int = 100,
    width: int = 64,
) -> tuple[Generator, Discriminator]:
    """Build (generator, discriminator); each stores ``cnnlab_args`` to rebuild it."""
    entry = GANS.get(name)
    checks = [
        (int(size) in SIZES, f"a DCGAN needs {' or '.join(map(str, SIZES))} px images, got {size}"),
        (int(channels) >= 1, f"channels must be ≥ 1, got {channels}"),
        (int(z_dim) >= 1, f"z_dim must be ≥ 1, got {z_dim}"),
        (int(width) >= 1, f"width must be ≥ 1, got {width}"),
        (
            not entry.conditional or int(num_classes) >= 2,
            f"a conditional GAN needs ≥ 2 classes, got {num_classes}",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    g, d = entry.builder(int(channels), int(size), int(num_classes), int(z_dim), int(width))
    args = dict(
        name=entry.name,
        channels=int(channels),
        size=int(size),
        num_classes=int(num_classes),
        z_dim=int(z_dim),
        width=int(width),
    )
    g.cnnlab_args = d.cnnlab_args = args
    return g, d
