"""The figures of ``cnnlab explain``: attribution overlays, first-layer filters, and a look
inside the network for one image (the feature maps of every conv layer, the attention
maps of attention blocks), each returned as PNG bytes.

The activations the last two draw are read here: :func:`feature_maps` by forward hooks,
:func:`attention_maps` from the ``last_attention`` each attention block keeps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.attribution import SHORT, attention_modules, conv_layers
from cnnlab.figures import png_bytes, pyplot


def show_image(ax, x01: torch.Tensor) -> None:
    """Draw one image (C, H, W) in [0, 1] on ``ax``: grey for one channel, else RGB."""
    img = x01.detach().cpu().float()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img[:3].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attributions(x01, labels, preds, probs, maps: dict, classes) -> bytes:
    """One row per image: the image with its label and prediction, then one overlay per
    method of ``maps`` ({method: [heat map (H, W)] per image})."""
    plt = pyplot()
    methods = list(maps)
    n, cols = len(x01), 1 + len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.75 * n), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        show_image(ax, x01[i])
        ok = preds[i] == labels[i]
        ax.set_title(
            f"{classes[labels[i]]}\n→ {classes[preds[i]]} {probs[i]:.2f}",
            fontsize=7,
            color="black" if ok else "red",
        )
        for j, m in enumerate(methods, 1):
            ax = axes[i, j]
            show_image(ax, x01[i])
            ax.imshow(maps[m][i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(SHORT[m], fontsize=8)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def plot_filters(conv: nn.Conv2d) -> bytes:
    plt = pyplot()
    w = conv.weight.detach().float().cpu()  # (out, in, k, k)
    out = w.shape[0]
    cols = min(8, out)
    rows = math.ceil(out / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.25 * rows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= out:
            continue
        f = w[i]
        if f.shape[0] == 3:
            f = (f - f.min()) / (f.max() - f.min() + 1e-12)
            ax.imshow(f.permute(1, 2, 0).numpy())
        else:
            v = f.abs().max().item() or 1.0
            ax.imshow(f.mean(0).numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"first-layer filters {tuple(w.shape)}", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def feature_maps(model01: nn.Module, x01: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Outputs (C, H, W) of every conv layer for one image x01 (1, C, H, W)."""
    out, hooks = [], []
    for name, m in conv_layers(model01):
        hooks.append(
            m.register_forward_hook(lambda _m, _i, o, name=name: out.append((name, o[0].detach())))
        )
    try:
        with torch.no_grad():
            model01(x01)
    finally:
        for h in hooks:
            h.remove()
    return out


def plot_feature_maps(maps, x01: torch.Tensor, max_channels: int = 16) -> bytes:
    plt = pyplot()
    cols = 1 + min(max_channels, max(m.shape[0] for _, m in maps))
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.1 * cols, 1.25 * len(maps)), squeeze=False)
    for r, (name, m) in enumerate(maps):
        ax = axes[r, 0]
        show_image(ax, x01[0])
        ax.set_ylabel(name.replace("model.", ""), fontsize=7)
        for c in range(1, cols):
            ax = axes[r, c]
            ax.axis("off")
            if c - 1 < m.shape[0]:
                ax.imshow(m[c - 1].float().cpu().numpy(), cmap="viridis")
                if r == 0 or c - 1 < 1:
                    ax.set_title(f"{tuple(m.shape[1:])}" if c == 1 else str(c - 1), fontsize=6)
    fig.suptitle("feature maps (first channels of every conv layer)", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def attention_maps(model01: nn.Module, x01: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Per attention block with a square map: how much each position is attended, mean
    over queries, (heads, side, side), for one image x01 (1, C, H, W). Empty when the
    model has no attention block (it is then not run)."""
    mods = attention_modules(model01)
    if not mods:
        return []
    with torch.no_grad():
        model01(x01)
    rows = []
    for name, m in mods:
        a = getattr(m, "last_attention", None)
        if a is None or a.dim() != 4:
            continue
        hw = a.shape[-1]
        side = int(round(math.sqrt(hw)))
        if side * side != hw:
            continue  # non-square maps: nothing sensible to draw on the image
        rows.append((name, a[0].float().mean(1).reshape(-1, side, side).cpu()))  # (heads, s, s)
    return rows


def plot_attention(model01: nn.Module, x01: torch.Tensor) -> bytes | None:
    """Per attention block and head: how much each position is attended (mean over queries)."""
    rows = attention_maps(model01, x01)
    if not rows:
        return None
    plt = pyplot()
    cols = 1 + max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.7 * len(rows)), squeeze=False)
    size = tuple(x01.shape[-2:])
    for r, (name, att) in enumerate(rows):
        show_image(axes[r, 0], x01[0])
        axes[r, 0].set_ylabel(name.replace("model.", ""), fontsize=7)
        up = F.interpolate(att[:, None], size=size, mode="nearest")[:, 0]  # (heads, H, W)
        for hd in range(1, cols):
            ax = axes[r, hd]
            ax.axis("off")
            if hd - 1 < len(up):
                show_image(ax, x01[0])
                ax.imshow(up[hd - 1].numpy(), cmap="jet", alpha=0.5)
                ax.set_title(f"head {hd - 1}", fontsize=7)
    fig.suptitle("attention received per position (mean over queries)", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)
