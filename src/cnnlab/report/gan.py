"""A GAN run's pictures: sample grids as PNG and the per-epoch curves (losses.png, fid.png)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from cnnlab.figures import png_bytes, pyplot
from cnnlab.runs.files import atomic_write_bytes


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """Images (N, C, H, W) in [-1, 1] (a generator's tanh range) → one PNG grid, ``nrow``
    images per row (default √N), 2 px padding."""
    from PIL import Image
    from torchvision.utils import make_grid

    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    grid = make_grid(
        images.detach().float().cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1)
    )  # (C, H', W') in [0, 1]
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def plot_gan_history(run_dir: Path, history: list[dict], fd_real: float | None = None) -> None:
    """``losses.png`` (both losses, D(x), D(G(z))) and, with judge scores, ``fid.png``."""
    if not history:
        return
    plt = pyplot()
    ep = [m["epoch"] for m in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [m["loss_d"] for m in history], "o-", label="D loss")
    a1.plot(ep, [m["loss_g"] for m in history], "o-", label="G loss")
    a1.set_xlabel("epoch")
    a1.legend()
    a2.plot(ep, [m["d_real"] for m in history], "o-", label="D(x)")
    a2.plot(ep, [m["d_fake"] for m in history], "o-", label="D(G(z))")
    a2.set_ylim(0, 1)
    a2.set_xlabel("epoch")
    a2.legend()
    png = png_bytes(fig, dpi=110, tight_layout=True, bbox_inches="tight")
    atomic_write_bytes(Path(run_dir) / "losses.png", png)
    if "fd" not in history[-1]:
        return
    scored = [m for m in history if "fd" in m]
    ep = [m["epoch"] for m in scored]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ep, [m["fd"] for m in scored], "o-", color="C0", label="generated vs real")
    if fd_real is not None:
        ax.axhline(fd_real, ls="--", color="gray", label="real train vs real test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Fréchet distance (judge features)")
    ax.set_yscale("log")
    ax.set_title(
        "Feature-space Fréchet distance (judge's penultimate layer; not Inception FID)", fontsize=8
    )
    if "class_fidelity" in scored[-1]:
        ax2 = ax.twinx()
        ax2.plot(
            ep,
            [m.get("class_fidelity", math.nan) for m in scored],
            "s-",
            color="C2",
            label="class fidelity",
        )
        if "judge_acc_real" in scored[-1]:
            ax2.axhline(
                scored[-1]["judge_acc_real"], ls=":", color="C2", label="judge acc. on real"
            )
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("class fidelity")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    else:
        ax.legend(fontsize=8)
    png = png_bytes(fig, dpi=110, tight_layout=True, bbox_inches="tight")
    atomic_write_bytes(Path(run_dir) / "fid.png", png)
