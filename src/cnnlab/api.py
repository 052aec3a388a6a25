"""Python API for evaluation and prediction on a trained run (the CLI calls these)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .data.loader import ResidentLoader
from .errors import CnnlabError
from .evaluate import metrics_from_logits, predict_logits
from .runs import load_model, load_run_dataset, run_dir_of
from .train.checkpoint import atomic_write_text
from .train.device import resolve_device


def _loader_for(meta: dict, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 1000):
    inp = meta["input"]
    return ResidentLoader(
        x,
        y,
        batch_size,
        inp["mean"],
        inp["std"],
        device=device,
        resize=inp["size"] if inp["size"] != x.shape[-1] else None,
        grayscale=inp.get("grayscale", False),
    )


def evaluate(
    target,
    dataset: str | None = None,
    data_dir=None,
    split: str = "test",
    device: str = "auto",
    which: str = "best",
    out_dir: str | os.PathLike | None = None,
    save: bool = True,
) -> dict:
    """Evaluate a run (or checkpoint) on its dataset's test split (or ``dataset``).

    Writes ``eval.json`` and ``confusion.png`` into the run directory (or ``out_dir``).
    """
    dev = resolve_device(device)
    model, meta = load_model(target, which, dev)
    cfg = meta.get("config", {}).get("data", {})
    name = dataset or meta.get("dataset") or cfg.get("name")
    ds = load_run_dataset(meta, data_dir, name)
    if split not in ("test", "train"):
        raise CnnlabError(f"unknown split {split!r}; choose test or train")
    x, y = (ds.test_x, ds.test_y) if split == "test" else (ds.train_x, ds.train_y)
    if len(ds.classes) != len(meta["classes"]):
        raise CnnlabError(
            f"dataset {name} has {len(ds.classes)} classes, the model {len(meta['classes'])}"
        )
    logits, labels = predict_logits(model, _loader_for(meta, x, y, dev))
    res = metrics_from_logits(logits, labels, meta["classes"])
    res.update(dataset=name, split=split, checkpoint=str(meta.get("epoch")))
    if save:
        out = Path(out_dir) if out_dir else run_dir_of(target)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "eval.json", json.dumps(res, indent=1))
        plot_confusion(res["confusion"], res["classes"], out / "confusion.png")
        res["outputs"] = [str(out / "eval.json"), str(out / "confusion.png")]
    return res


def confusion_figure(cm, classes):
    """A row-normalised confusion matrix with counts (shared by eval and the report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6, color=color)
    return fig


def plot_confusion(cm, classes, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = confusion_figure(cm, classes)
    fig.tight_layout()
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpx (8192 × 8192): above any photo, below a memory bomb
MAX_IMAGE_FILE = 256 << 20  # bytes


def load_image(
    path, channels: int, size: int, max_pixels: int | None = None, name: str | None = None
) -> np.ndarray:
    """Decode any PNG/JPEG (any size or mode) → uint8 (C, size, size).

    ``path`` may be a file object (the server passes uploads as BytesIO, named ``name``).
    ``max_pixels`` refuses larger images from their header, before decoding a pixel.
    """
    import io

    from PIL import Image

    label = name or path
    try:
        src, nbytes = path, 0
        if isinstance(path, (str, os.PathLike)):
            # decode from memory: a chunk length that lies (b"\x04\x00\x00\x0cIDAT") makes
            # a buffered file's read(n) allocate n bytes up front; BytesIO.read does not
            nbytes = os.path.getsize(path)
            if nbytes > MAX_IMAGE_FILE:
                raise Image.DecompressionBombError(f"a {nbytes:,}-byte file")
            src = io.BytesIO(Path(path).read_bytes())
        elif hasattr(path, "getbuffer"):
            nbytes = path.getbuffer().nbytes
        with Image.open(src) as im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise CnnlabError(
                    f"{label}: image has {w}×{h} pixels, more than the "
                    f"limit of {max_pixels}; send a smaller image"
                )
            # decided from the header, before the decoder allocates w*h pixels: an absolute
            # cap, and a cap against the file's size (deflate tops out near 1032:1, so a
            # 100-byte file that claims 8192 x 8192 pixels is lying)
            if w * h > MAX_IMAGE_PIXELS or (nbytes and w * h > max(1 << 20, 4096 * nbytes)):
                raise Image.DecompressionBombError(
                    f"header claims {w}x{h} pixels in a {nbytes:,}-byte file"
                )
            im.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode smaller
            im.load()
            return pil_to_input(im, channels, size)
    except CnnlabError:
        raise
    except FileNotFoundError:
        raise CnnlabError(f"{label}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise CnnlabError(f"{label}: image too large ({e})") from None
    except Exception as e:  # noqa: BLE001 - any failure of a decoder fed untrusted bytes
        raise CnnlabError(f"{label}: not a readable image ({type(e).__name__})") from None


def pil_to_input(im, channels: int, size: int) -> np.ndarray:
    """A decoded PIL image → uint8 (C, size, size): transparency on white, mode, resize."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("L" if channels == 1 else "RGB")
    im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def maybe_invert(a: np.ndarray, mean, invert: str = "auto") -> tuple[np.ndarray, bool]:
    """Invert a gray uint8 image (C, H, W) on a light background when the training data
    was light-on-dark (mean < 0.5); ``invert``: auto | always | never."""
    if a.shape[0] != 1 or invert == "never":
        return a, False
    dark_data = float(np.mean(mean)) < 0.5
    flip = invert == "always"
    if not flip and dark_data:
        border = np.concatenate([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], axis=None)
        flip = bool(border.mean() > 127)
    return (255 - a if flip else a), flip


def predict(
    target, images, top: int = 3, device: str = "auto", invert: str = "auto", which: str = "best"
) -> list[dict]:
    """Classify image files (or uint8 arrays (C, H, W)) with a trained run.

    ``invert='auto'``: a gray image on a light background is inverted when the model was
    trained on light-on-dark images (MNIST, Fashion-MNIST), as a photo of ink on paper is.
    """
    dev = resolve_device(device)
    model, meta = load_model(target, which, dev)
    inp = meta["input"]
    c, s = inp["channels"], inp["size"]
    arrs, flags = [], []
    for im in images:
        a = load_image(im, c, s) if isinstance(im, (str, os.PathLike)) else np.asarray(im, np.uint8)
        a, flip = maybe_invert(a, inp["mean"], invert)
        arrs.append(a)
        flags.append(flip)
    x = torch.from_numpy(np.stack(arrs))
    mean = torch.tensor(inp["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(inp["std"]).reshape(1, -1, 1, 1)
    xn = ((x.float() / 255 - mean) / std).to(dev)
    with torch.no_grad():
        logits = model(xn).float().cpu()
    probs = torch.softmax(logits, 1)
    from .analysis.ood import load_ood, ood_flags

    ood = load_ood(run_dir_of(target))  # stored by `cnnlab robustness RUN --ood ...`
    scores, is_ood = ood_flags(logits, ood) if ood else (None, None)
    out = []
    for i, p in enumerate(probs):
        v, idx = p.topk(min(top, len(p)))
        out.append(
            {
                "image": str(images[i]) if isinstance(images[i], (str, os.PathLike)) else f"#{i}",
                "class": meta["classes"][int(idx[0])],
                "probability": float(v[0]),
                "top": [
                    {"class": meta["classes"][int(j)], "probability": float(q)}
                    for q, j in zip(v, idx, strict=True)
                ],
                "inverted": bool(flags[i]),
            }
        )
        if ood:
            out[-1].update(ood_score=float(scores[i]), ood=bool(is_ood[i]))
    return out
