"""Attribution methods (Captum) and how their maps are read, for one model on [0, 1] pixels.

Methods (all attribute a given class, usually the *predicted* one, on [0, 1] pixels — the
model is wrapped in :class:`~cnnlab.analysis.attacks.Normalized`, so the baseline "black
image" is a real image and the maps are in pixel space):

- ``saliency``: |∂logit/∂x| (Simonyan et al. 2014);
- ``integrated_gradients``: path integral from a black image (Sundararajan et al. 2017),
  ``internal_batch_size`` bounds memory on big inputs;
- ``gradcam``: Grad-CAM on the last conv layer (Selvaraju et al. 2017), upsampled;
- ``occlusion``: score drop when a square patch is blacked out, ``perturbations_per_eval``
  bounds memory;
- ``guided_backprop``: ReLU gradients with negative parts removed (Springenberg et al. 2015).

Captum's hooks do not work with in-place ReLUs, so the explained model is a deep copy with
``inplace=False`` everywhere (:func:`explainable_copy`); the run's model is never touched.

A map is shown as a [0, 1] heat map (:func:`heat`); on images with a plain background
(:func:`plain_background`) the share of a map that falls on the object is measured
(:func:`on_object_fraction`).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError, choices_msg

METHODS = ("saliency", "integrated_gradients", "gradcam", "occlusion", "guided_backprop")
SHORT = {
    "saliency": "saliency",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
    "occlusion": "occlusion",
    "guided_backprop": "guided backprop",
}


def parse_methods(text: str | None) -> tuple[str, ...]:
    if text in (None, "", "all"):
        return METHODS
    out = tuple(p.strip() for p in str(text).split(",") if p.strip())
    for m in out:
        if m not in METHODS:
            raise CnnlabError(choices_msg("attribution method", m, METHODS))
    return out


def explainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every in-place op made out-of-place (Captum hooks)."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks that keep their last attention map (``last_attention``), by name."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "last_attention")]


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The network's Conv2d layers in order, without those inside attention blocks."""
    inside = [n + "." for n, _ in attention_modules(model) if n]
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n.startswith(p) for p in inside)
    ]


def last_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = conv_layers(model)
    return convs[-1][1] if convs else None


def attribute(
    model01: nn.Module,
    x01: torch.Tensor,
    target: torch.Tensor,
    method: str,
    ig_steps: int = 50,
    internal_batch_size: int = 128,
    perturbations_per_eval: int = 64,
    return_delta: bool = False,
):
    """Attributions (B, C, H, W) of ``target`` for pixel inputs x01 (B, C, H, W).

    ``model01`` takes [0, 1] pixels (use :class:`Normalized`) and must be an
    :func:`explainable_copy`. With ``return_delta`` (integrated gradients): (attr, delta).
    """
    from captum import attr as ca

    with warnings.catch_warnings():
        # Captum warns that it sets requires_grad and hooks ReLUs: both intended here
        warnings.filterwarnings("ignore", category=UserWarning, module="captum")
        x01 = x01.detach()
        if method == "saliency":
            return ca.Saliency(model01).attribute(x01, target=target, abs=True)
        if method == "integrated_gradients":
            ig = ca.IntegratedGradients(model01)
            return ig.attribute(
                x01,
                baselines=torch.zeros_like(x01),
                target=target,
                n_steps=ig_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=return_delta,
            )
        if method == "gradcam":
            layer = last_conv(model01)
            if layer is None:
                raise CnnlabError("Grad-CAM needs a conv layer; this model has none")
            cam = ca.LayerGradCam(model01, layer).attribute(
                x01, target=target, relu_attributions=True
            )
            up = ca.LayerAttribution.interpolate(cam, tuple(x01.shape[-2:]), "bilinear")
            return up.expand_as(x01)
        if method == "occlusion":
            c, h, _ = x01.shape[1:]
            k = max(3, h // 7)
            s = max(1, k // 2)
            return ca.Occlusion(model01).attribute(
                x01,
                sliding_window_shapes=(c, k, k),
                strides=(c, s, s),
                baselines=0.0,
                target=target,
                perturbations_per_eval=perturbations_per_eval,
            )
        if method == "guided_backprop":
            return ca.GuidedBackprop(model01).attribute(x01, target=target)
        raise CnnlabError(choices_msg("attribution method", method, METHODS))


def heat(a: torch.Tensor, method: str) -> np.ndarray:
    """One attribution (C, H, W) → a [0, 1] map (H, W) for display.

    Magnitude for gradient methods (sign flips with the input's contrast); the positive
    part for Grad-CAM and occlusion (evidence *for* the class). Scaled by the 99th
    percentile so a few hot pixels do not wash out the rest.
    """
    a = a.detach().float().cpu()
    m = a.clamp(min=0).sum(0) if method in ("gradcam", "occlusion") else a.abs().sum(0)
    q = torch.quantile(m.flatten(), 0.99)
    if q <= 0:
        q = m.max().clamp(min=1e-12)
    return (m / q).clamp(0, 1).numpy()


def object_mask(x01: torch.Tensor, dark_background: bool) -> torch.Tensor:
    """Where the object is, for light-on-dark images: pixels brighter than 0.1."""
    g = x01.mean(0)
    return g > 0.1 if dark_background else g < 0.9


PLAIN_BORDER = 0.9  # share of border pixels that must be background for a plain background


def plain_background(x01: torch.Tensor, dark_background: bool) -> bool:
    """Whether the images (B, C, H, W) lie on a plain background, so that
    :func:`object_mask` finds the object: on average at least 90 % of the pixels of each
    image's border (its outer 1/14 of the side, 2 px at 28 px) are background. True for
    digits and Fashion-MNIST's garments; false for photos, where a "bright" or "not white"
    pixel says nothing about the object."""
    g = x01.detach().float().cpu().mean(1)  # (B, H, W)
    w = max(1, g.shape[-1] // 14)
    ring = torch.ones_like(g[0], dtype=torch.bool)
    ring[w:-w, w:-w] = False
    background = (g <= 0.1) if dark_background else (g >= 0.9)
    return bool(background[:, ring].float().mean() >= PLAIN_BORDER)


def on_object_fraction(a: torch.Tensor, x01: torch.Tensor, method: str, dark: bool) -> float:
    h = torch.from_numpy(heat(a, method))
    mask = object_mask(x01.cpu(), dark)
    return float((h * mask).sum() / h.sum().clamp(min=1e-12))
