"""The report's figures, each returned as base64 PNG text for an ``<img>`` of the page, and
the captions of its image galleries."""

from __future__ import annotations

import numpy as np

from cnnlab.figures import png_base64, pyplot
from cnnlab.inference import confusion_figure


def fig_png(fig) -> str:
    """A matplotlib figure → base64 PNG (the figure is closed)."""
    return png_base64(fig, dpi=100, tight_layout=True)


def plot_curves(runs: dict[str, list[dict]]) -> str:
    """Loss and accuracy per epoch; one colour per run, line style per split."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {"train": "-", "val": "-.", "test": "--"}
    for ci, (name, hist) in enumerate(runs.items()):
        color = f"C{ci % 10}"
        ep = [m["epoch"] for m in hist]
        for split, ls in styles.items():
            for ax, what in zip(axes, ("loss", "acc"), strict=True):
                k = f"{split}_{what}"
                if hist and k in hist[0]:
                    label = f"{name} {split}" if len(runs) > 1 else split
                    ax.plot(ep, [m[k] for m in hist], ls, color=color, label=label, marker=".")
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig_png(fig)


def plot_confusion(cm, classes) -> str:
    return fig_png(confusion_figure(cm, classes))


def plot_per_class(per_class: dict) -> str:
    plt = pyplot()
    names, acc = list(per_class), list(per_class.values())
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), acc, color="C0")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    for i, a in enumerate(acc):
        ax.text(i, a + 0.01, f"{a:.2f}", ha="center", fontsize=7)
    return fig_png(fig)


def plot_reliability(table: list[dict], ece: float) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    centers = [(b["lo"] + b["hi"]) / 2 for b in table]
    width = [(b["hi"] - b["lo"]) for b in table]
    ax.bar(
        centers,
        [b["accuracy"] for b in table],
        width=width,
        edgecolor="k",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], "r.", label="bins")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {ece:.4f}")
    ax.legend(fontsize=7)
    return fig_png(fig)


def plot_grid(rows: list[list[tuple[np.ndarray, str]]]) -> str:
    """Rows of captioned uint8 images (C, H, W), drawn as one montage on one axes (a
    subplot per image costs ~70 ms each); gray when every image has one channel."""
    plt = pyplot()
    cols = max(len(r) for r in rows)
    c, h, w = rows[0][0][0].shape
    gap_x, gap_y = max(2, w // 8), max(10, h // 2)  # room for two caption lines above
    hh, ww = h + gap_y, w + gap_x
    canvas = np.full((len(rows) * hh, cols * ww - gap_x, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, (im, _) in enumerate(row):
            rgb = np.repeat(im, 3, 0) if im.shape[0] == 1 else im[:3]
            y0, x0 = i * hh + gap_y, j * ww
            canvas[y0 : y0 + h, x0 : x0 + w] = rgb.transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(1.6 * cols, 1.6 * cols * canvas.shape[0] / canvas.shape[1]))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for i, row in enumerate(rows):
        for j, (_, cap) in enumerate(row):
            ax.text(j * ww + w / 2, i * hh + gap_y - 1, cap, ha="center", va="bottom", fontsize=6)
    return fig_png(fig)


def plot_wrong(images: np.ndarray, captions: list[str]) -> str:
    """A grid of uint8 images (N, C, H, W) with captions, 8 a row."""
    items = list(zip(images, captions, strict=True))
    return plot_grid([items[k : k + 8] for k in range(0, len(items), 8)])


def plot_pairs(pairs: list[dict]) -> str:
    """One row per confused pair: its example images (uint8 (N, C, H, W)), captioned."""
    return plot_grid(
        [
            [
                (im, f"{image_name(p, k, i)} true {p['true']}\npredicted {p['predicted']}")
                for k, (im, i) in enumerate(zip(p["images"], p["examples"], strict=True))
            ]
            for p in pairs
        ]
    )


def plot_gradients(rows: list[dict]) -> str:
    """Per-layer gradient norm, update ratio and activation saturation across epochs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    layers = [d["name"] for d in rows[-1]["layers"]] if rows and rows[-1]["layers"] else []
    epochs = [r["epoch"] for r in rows]
    for li, name in enumerate(layers):
        g = [next((d["grad_norm"] for d in r["layers"] if d["name"] == name), None) for r in rows]
        u = [
            next((d["update_ratio"] for d in r["layers"] if d["name"] == name), None) for r in rows
        ]
        axes[0].plot(
            epochs, [v if v else np.nan for v in g], marker=".", color=f"C{li % 10}", label=name
        )
        axes[1].plot(
            epochs, [v if v else np.nan for v in u], marker=".", color=f"C{li % 10}", label=name
        )
    acts = [d["name"] for d in rows[-1]["activations"]] if rows else []
    for ai, name in enumerate(acts):
        s = [
            next((d["saturation"] for d in r["activations"] if d["name"] == name), np.nan)
            for r in rows
        ]
        kind = next(d["type"] for d in rows[-1]["activations"] if d["name"] == name)
        axes[2].plot(epochs, s, marker=".", color=f"C{ai % 10}", label=f"{name} ({kind})")
    axes[0].set_title("gradient norm ‖∂L/∂W‖ (last step)")
    axes[1].set_title("update ratio ‖ΔW‖/‖W‖ (last step)")
    axes[2].set_title("activation saturation / dead fraction")
    for ax in axes[:2]:
        ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig_png(fig)


# -- captions -------------------------------------------------------------------------------


def short_name(name: str, limit: int = 18) -> str:
    """A file's name for a caption: its base name, the middle cut when long."""
    base = name.rsplit("/", 1)[-1]
    return base if len(base) <= limit else base[: limit // 2 - 1] + "…" + base[-(limit // 2) :]


def image_name(pair: dict, k: int, index: int) -> str:
    """The ``k``-th example of a confused pair: its file's name, else its test index."""
    files = pair.get("files")
    return short_name(files[k]) if files else f"#{index}"


def mistake_caption(w: dict) -> str:
    """``#index predicted 87% / true X, loss 2.31`` for one of the worst mistakes — the
    file's name instead of the index for an image folder."""
    where = short_name(w["file"]) if w.get("file") else f"#{w['index']}"
    return f"{where} {w['predicted']} {w['confidence']:.0%}\ntrue {w['true']}, loss {w['loss']:.2f}"
