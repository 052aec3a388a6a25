"""Adversarial training: the config checks and the per-step attack that replaces a batch
(the attacks themselves are in :mod:`cnnlab.analysis.attacks`)."""

from __future__ import annotations

import torch

from cnnlab.analysis.attacks import pgd
from cnnlab.errors import ConfigError, choices_msg

ADVERSARIAL = ("none", "fgsm", "pgd")


def check_config(t) -> None:
    """Validate the ``train.adversarial*`` fields of a TrainConfig."""
    if t.adversarial not in ADVERSARIAL:
        raise ConfigError(choices_msg("train.adversarial", t.adversarial, ADVERSARIAL))
    if t.adversarial != "none":
        if not 0 < t.eps <= 1:
            raise ConfigError(f"train.eps must be in (0, 1] (pixel scale), got {t.eps}")
        if t.adv_steps < 1:
            raise ConfigError(f"train.adv_steps must be ≥ 1, got {t.adv_steps}")
        if t.adv_step_size < 0:
            raise ConfigError(f"train.adv_step_size must be ≥ 0, got {t.adv_step_size}")


def make_adversary(t, mean: torch.Tensor, std: torch.Tensor, generator=None, autocast=None):
    """The training hook: normalised batch → adversarial normalised batch, or None.

    ``mean``/``std`` are the loader's (1, C, 1, 1) tensors, so x01 = x·std + mean.
    """
    if t.adversarial == "none":
        return None
    if t.adversarial == "fgsm":
        # FGSM training with a random start ("fast is better than free", Wong et al. 2020)
        steps, size, rand = 1, (t.adv_step_size or 1.25 * t.eps), t.adv_random_start
    else:
        steps, size = t.adv_steps, (t.adv_step_size or 2.5 * t.eps / t.adv_steps)
        rand = t.adv_random_start

    def perturb(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            x01 = (x.float() * std + mean).clamp(0, 1)
            xa = pgd(
                lambda z: model((z - mean) / std),
                x01,
                y,
                t.eps,
                steps,
                size,
                rand,
                generator if generator is not None and generator.device == x.device else None,
                autocast,
            )
        finally:
            model.train(was)
        return ((xa - mean) / std).to(x.dtype)  # element-wise: keeps x's memory format

    return perturb
