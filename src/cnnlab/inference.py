"""Using a trained run: its metrics on a dataset (with a confusion-matrix plot), and its
top classes for image files."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cnnlab.analysis.ood import load_ood, ood_flags
from cnnlab.data.datasets import Dataset
from cnnlab.data.images import load_image, maybe_invert
from cnnlab.errors import CnnlabError
from cnnlab.metrics import metrics_from_logits, predict_logits
from cnnlab.progress import track
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.load import load_model, loader_for, open_run, resolve_checkpoint, run_dir_of
from cnnlab.runtime.device import resolve_device


class Scored(NamedTuple):
    """A checkpoint scored on a split: the metrics and what they were computed from."""

    metrics: dict
    logits: torch.Tensor
    labels: torch.Tensor
    model: torch.nn.Module
    meta: dict
    dataset: Dataset
    run_dir: Path
    checkpoint: Path


def score(
    target,
    dataset: str | None = None,
    data_dir=None,
    split: str = "test",
    device: str = "auto",
    which: str = "best",
    download: bool = True,
) -> Scored:
    """The one evaluation path: a run's checkpoint scored on a split, in float32, in
    batches of 1000 — what ``cnnlab eval``, ``cnnlab.evaluate`` and the report share, so
    they print one number. ``dataset`` must have the model's classes."""
    if split not in ("test", "train"):
        raise CnnlabError(f"unknown split {split!r}; choose test or train")
    dev = resolve_device(device)
    model, meta, ds, run_dir = open_run(target, which, dev, data_dir, dataset, download, split)
    name = own_dataset(meta) if dataset is None else dataset
    if list(ds.classes) != list(meta["classes"]):
        raise CnnlabError(
            f"dataset {name} has the classes {_short(ds.classes)}, the model "
            f"{_short(meta['classes'])}; evaluate on a dataset with the model's classes"
        )
    x, y = (ds.test_x, ds.test_y) if split == "test" else (ds.train_x, ds.train_y)
    with strict_fp32():
        logits, labels = predict_logits(
            model, loader_for(meta, x, y, dev), progress=f"evaluating on {name} {split}"
        )
    res = metrics_from_logits(logits, labels, meta["classes"])
    ck = resolve_checkpoint(target, which)
    res.update(dataset=name, split=split, checkpoint=ck.stem, epoch=meta.get("epoch"))
    return Scored(res, logits, labels, model, meta, ds, run_dir, ck)


@contextmanager
def strict_fp32():
    """Plain float32 on CUDA (no TF32, no benchmarked cuDNN algorithms) while evaluating:
    a training process turns TF32 on, a fresh ``cnnlab eval`` has it off, and the two must
    score a checkpoint alike."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = b.cudnn.benchmark = False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = saved


def own_dataset(meta: dict) -> str | None:
    """The dataset a run was trained on, from its checkpoint's metadata."""
    return meta.get("dataset") or meta.get("config", {}).get("data", {}).get("name")


def _short(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:4]) + (f", … ({len(names)})" if len(names) > 4 else "")


def eval_name(meta: dict, dataset: str | None, split: str) -> str:
    """``eval`` for the run's own test set, else ``eval-<dataset>[-<split>]``: an
    evaluation elsewhere never overwrites the run's own ``eval.json``."""
    parts = []
    if dataset is not None and dataset != own_dataset(meta):
        parts.append(dataset)
    if split != "test":
        parts.append(split)
    return "-".join(["eval", *parts])


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
    """Evaluate a run (or checkpoint) on its dataset's test split (or ``dataset``, which
    must have the same classes).

    Writes ``eval.json`` and ``confusion.png`` into the run directory (or ``out_dir``);
    another dataset or split writes ``eval-<dataset>[-<split>].json`` and its
    ``confusion-….png`` instead, leaving the run's own evaluation as it was.
    """
    sc = score(target, dataset, data_dir, split, device, which)
    res = sc.metrics
    if save:
        out = Path(out_dir) if out_dir else sc.run_dir
        stem = eval_name(sc.meta, dataset, split)
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / f"{stem}.json", json.dumps(res, indent=1))
            fig = out / f"confusion{stem[4:]}.png"
            plot_confusion(res["confusion"], res["classes"], fig)
        except OSError as e:
            raise CnnlabError(f"cannot write into {out}: {e.strerror}") from None
        res["outputs"] = [str(out / f"{stem}.json"), str(fig)]
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


def predict(
    target,
    images,
    top: int = 3,
    device: str = "auto",
    invert: str = "auto",
    which: str = "best",
    errors: str = "raise",
) -> list[dict]:
    """Classify image files (or uint8 arrays (C, H, W)) with a trained run.

    ``invert='auto'``: a gray image on a light background is inverted when the model was
    trained on light-on-dark images (MNIST, Fashion-MNIST), as a photo of ink on paper is.
    ``errors='report'``: an unreadable file gives ``{"image": ..., "error": ...}`` in its
    place and the others are still answered (``'raise'``: the first one is an error).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise CnnlabError(f"--top must be a whole number ≥ 1, got {top!r}")
    if errors not in ("raise", "report"):
        raise CnnlabError(f"errors must be 'raise' or 'report', got {errors!r}")
    dev = resolve_device(device)
    model, meta = load_model(target, which, dev)
    inp = meta["input"]
    c, s = inp["channels"], inp["size"]
    out: list[dict] = []
    good: list[int] = []
    arrs, flags = [], []
    for i, im in enumerate(images):
        is_file = isinstance(im, (str, os.PathLike))
        label = str(im) if is_file else f"#{i}"
        try:
            a = load_image(im, c, s) if is_file else np.asarray(im, np.uint8)
        except CnnlabError as e:
            if errors == "raise":
                raise
            out.append({"image": label, "error": str(e)})
            continue
        a, flip = maybe_invert(a, inp["mean"], invert)
        arrs.append(a)
        flags.append(flip)
        good.append(len(out))
        out.append({"image": label})
    if not arrs:
        return out
    mean = torch.tensor(inp["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(inp["std"]).reshape(1, -1, 1, 1)
    logits = []
    with torch.no_grad():
        for b in track(range(0, len(arrs), 256), "classifying images"):
            x = torch.from_numpy(np.stack(arrs[b : b + 256]))
            logits.append(model(((x.float() / 255 - mean) / std).to(dev)).float().cpu())
    logits = torch.cat(logits)
    probs = torch.softmax(logits, 1)
    ood = load_ood(run_dir_of(target))  # stored by `cnnlab robustness RUN --ood ...`
    scores, is_ood = ood_flags(logits, ood) if ood else (None, None)
    for k, (i, p) in enumerate(zip(good, probs, strict=True)):
        v, idx = p.topk(min(top, len(p)))
        out[i].update(
            {
                "class": meta["classes"][int(idx[0])],
                "probability": float(v[0]),
                "top": [
                    {"class": meta["classes"][int(j)], "probability": float(q)}
                    for q, j in zip(v, idx, strict=True)
                ],
                "inverted": bool(flags[k]),
            }
        )
        if ood:
            out[i].update(ood_score=float(scores[k]), ood=bool(is_ood[k]))
    return out
