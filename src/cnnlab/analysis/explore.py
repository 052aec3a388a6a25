"""A classifier taken apart into the operations its forward pass runs, in order, for the
explore page: what each one is (conv, pooling, activation, batch norm, linear, ...) with
its settings, its output for an input (the reference the page's arithmetic is checked
against), a fully connected unit's largest contributions, and attribution maps for any
class from :mod:`cnnlab.analysis.explain`.

The walk follows the model contract (``features`` → ``head`` → ``classifier``), so the
operations run one after another give exactly ``model(x)``; an operation the page cannot
compute itself (an attention block) is kept as ``opaque``: its output is shown, the page
then needs precomputed activations or the server.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.attacks import Normalized
from cnnlab.analysis.explain import attribute, explainable_copy, heat, last_conv
from cnnlab.models.layers import LeCunTanh

ACTIVATIONS = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ELU: "elu",
    nn.LeakyReLU: "leaky_relu",
    nn.GELU: "gelu",
    LeCunTanh: "lecun_tanh",
    nn.Identity: "identity",
}
SKIPPED = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Identity)  # identities in eval mode
ATTRIBUTION_METHODS = ("saliency", "gradcam")


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def op_spec(mod: nn.Module) -> dict:
    """What the page needs to know to run (and explain) one module, without its weights."""
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            return {"type": "opaque", "what": "conv (non-zero or 'same' padding)"}
        return {
            "type": "conv2d",
            "in": mod.in_channels,
            "out": mod.out_channels,
            "kernel": _pair(mod.kernel_size),
            "stride": _pair(mod.stride),
            "padding": _pair(mod.padding),
            "dilation": _pair(mod.dilation),
            "groups": mod.groups,
            "bias": mod.bias is not None,
        }
    if isinstance(mod, nn.Linear):
        return {"type": "linear", "in": mod.in_features, "out": mod.out_features,
                "bias": mod.bias is not None}  # fmt: skip
    if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        if getattr(mod, "ceil_mode", False) or _pair(getattr(mod, "dilation", 1)) != [1, 1]:
            return {"type": "opaque", "what": "pooling (ceil mode or dilation)"}
        spec = {
            "type": "maxpool2d" if isinstance(mod, nn.MaxPool2d) else "avgpool2d",
            "kernel": _pair(mod.kernel_size),
            "stride": _pair(mod.stride if mod.stride is not None else mod.kernel_size),
            "padding": _pair(mod.padding),
        }
        if isinstance(mod, nn.AvgPool2d):
            if mod.divisor_override:
                return {"type": "opaque", "what": "avg-pool with a divisor override"}
            spec["count_include_pad"] = bool(mod.count_include_pad)
        return spec
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return {"type": "adaptiveavgpool2d", "output": _pair(mod.output_size)}
    if isinstance(mod, nn.ZeroPad2d):
        return {"type": "zeropad2d", "padding": [int(p) for p in mod.padding]}  # l, r, t, b
    if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return {"type": "batchnorm", "eps": float(mod.eps), "affine": bool(mod.affine)}
    if isinstance(mod, nn.LocalResponseNorm):
        return {"type": "lrn", "size": mod.size, "alpha": mod.alpha, "beta": mod.beta, "k": mod.k}
    if isinstance(mod, nn.Flatten):
        return {"type": "flatten"}
    if isinstance(mod, SKIPPED):
        return {"type": "skip"}
    for cls, name in ACTIVATIONS.items():
        if type(mod) is cls:
            spec = {"type": "act", "fn": name}
            if name == "leaky_relu":
                spec["slope"] = float(mod.negative_slope)
            if name == "elu":
                spec["alpha"] = float(mod.alpha)
            if name == "gelu" and mod.approximate != "none":
                return {"type": "opaque", "what": "tanh-approximated GELU"}
            return spec
    return {"type": "opaque", "what": type(mod).__name__}


def operations(model: nn.Module) -> list[tuple[str, nn.Module, dict]]:
    """The model's forward pass as (state-dict prefix, module, spec), in order; dropout is
    left out (an identity in eval mode)."""
    out = []
    for part in ("features", "head", "classifier"):
        mod = getattr(model, part, None)
        if mod is None:
            raise ValueError(f"the model has no {part!r} (not a cnnlab classifier)")
        children = list(mod.named_children()) if isinstance(mod, nn.Sequential) else [("", mod)]
        for name, child in children:
            spec = op_spec(child)
            if spec["type"] != "skip":
                out.append((f"{part}.{name}" if name else part, child, spec))
    return out


@torch.no_grad()
def trace(model: nn.Module, x: torch.Tensor, ops=None) -> list[torch.Tensor]:
    """Every operation's output for the normalised batch ``x`` (B, C, H, W), in eval mode:
    the last one is the logits, equal to ``model(x)``."""
    ops = operations(model) if ops is None else ops
    outs, h = [], x
    for _, mod, _spec in ops:
        # an in-place activation would overwrite the output kept for the layer before it
        h = mod(h.clone() if getattr(mod, "inplace", False) else h)
        outs.append(h)
    return outs


def fc_contributions(weight: torch.Tensor, x: torch.Tensor, k: int):
    """For every output unit j of a linear layer on one input ``x`` (in_features,): the
    ``k`` inputs with the largest |w_ji · x_i| → (indices (out, k), products (out, k))."""
    prod = weight * x[None, :]  # (out, in)
    k = min(k, prod.shape[1])
    idx = prod.abs().topk(k, dim=1).indices
    return idx, prod.gather(1, idx)


def attribution_maps(
    model: nn.Module,
    mean,
    std,
    x01: torch.Tensor,
    classes: list[int],
    method: str,
    size: int | None = None,
) -> torch.Tensor:
    """[0, 1] maps (len(classes), h, w) of ``method`` (saliency or Grad-CAM, through
    :func:`cnnlab.analysis.explain.attribute`) for one image x01 (1, C, S, S) and each of
    ``classes``; ``size`` shrinks them (area average) to at most size × size."""
    m01 = explainable_copy(Normalized(model, mean, std))
    if method == "gradcam" and last_conv(m01) is None:
        raise ValueError("Grad-CAM needs a conv layer")
    xs = x01.expand(len(classes), *x01.shape[1:]).clone()
    a = attribute(m01, xs, torch.tensor(classes), method)
    maps = torch.stack([torch.from_numpy(heat(a[i], method)) for i in range(len(classes))])
    if size is not None and maps.shape[-1] > size:
        maps = F.adaptive_avg_pool2d(maps[:, None], size)[:, 0]
    return maps.clamp(0, 1)
