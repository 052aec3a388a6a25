"""L∞ adversarial examples (FGSM, PGD) in [0, 1] pixel space, and the training hook.

Attacks see the model through its pixel-space input: ``forward01(x01)`` normalises inside,
so ε is in pixel units (ε = 0.1 ≈ 25 grey levels) whatever the dataset's mean/std.
The same ``pgd`` serves adversarial training (``train.adversarial=pgd``) and the
robustness report, so the trained-for and the measured attack are one implementation
(checked against Captum's ``captum.robust.PGD`` in the tests).

Training: the attack is generated with the model in **eval mode** (no dropout noise,
batch-norm uses its running statistics and they are not updated by the 7–10 extra
forward passes), then the weight update runs in train mode on the adversarial batch
(Madry et al. 2018). Parameter gradients are never touched by the attack
(``torch.autograd.grad`` w.r.t. the input only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def pgd(
    forward01: Callable[[torch.Tensor], torch.Tensor],
    x01: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    autocast=None,
) -> torch.Tensor:
    """Untargeted L∞ PGD on a pixel batch x01 (B, C, H, W) in [0, 1]; returns x_adv in [0, 1].

    ``steps=1, step_size=eps, random_start=False`` is FGSM.
    """
    if eps <= 0 or steps < 1:
        return x01.detach()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x01 = x01.detach()
    lo, hi = (x01 - eps).clamp(0, 1), (x01 + eps).clamp(0, 1)
    if random_start:
        u = torch.rand(x01.shape, device=x01.device, dtype=x01.dtype, generator=generator)
        x = (x01 + (2 * u - 1) * eps).clamp(0, 1)
    else:
        x = x01.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        if autocast is not None:
            with autocast():
                out = forward01(x)
        else:
            out = forward01(x)
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        x = torch.minimum(torch.maximum(x.detach() + step_size * g.sign(), lo), hi)
    return x.detach()


def fgsm(forward01, x01, y, eps: float, **kw) -> torch.Tensor:
    return pgd(forward01, x01, y, eps, steps=1, step_size=eps, random_start=False, **kw)


class Normalized(torch.nn.Module):
    """model ∘ normalise: takes [0, 1] pixels (what attacks and corruptions act on)."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        c = torch.as_tensor(mean).numel()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, c, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, c, 1, 1))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.model((x01 - self.mean) / self.std)
