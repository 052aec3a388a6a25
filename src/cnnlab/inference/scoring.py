"""Scoring a trained run on a dataset: its metrics (with a confusion-matrix plot), with
test-time augmentation (TTA) optionally, and the per-image outputs the report shows (the
worst mistakes, the most confused pairs)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.datasets import Dataset
from cnnlab.errors import CnnlabError
from cnnlab.figures import png_bytes
from cnnlab.inference.model import average_views, strict_fp32
from cnnlab.inference.views import View, own_views, tta_views
from cnnlab.metrics import metrics_from_logits, predict_logits
from cnnlab.progress import track
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.load import loader_for, open_run, resolve_checkpoint
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
    tta_probs: torch.Tensor | None = None  # (N, K): softmax averaged over the TTA views


def score(
    target,
    dataset: str | None = None,
    data_dir=None,
    split: str = "test",
    device: str = "auto",
    which: str = "best",
    download: bool = True,
    tta: bool = False,
) -> Scored:
    """The one evaluation path: a run's checkpoint scored on a split, in float32, in
    batches of 1000 — what ``cnnlab eval``, ``cnnlab.evaluate`` and the report share, so
    they print one number. ``dataset`` must have the model's classes.

    ``tta=True`` also scores the test-time-augmented predictions (:func:`tta_views`: the
    flips and shifts the run was trained with) from the same checkpoint and images; the
    plain metrics stay as they are and ``metrics["tta"]`` holds the TTA ones and the
    accuracy change. A run that scored itself on each image and its mirror image
    (``train.eval_flip``) gets those two views in ``metrics["tta"]`` without asking, so
    the number its training printed is reproduced."""
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
    # --tta: the views training augmented with; else the views the run scored itself on
    views = tta_views(meta, getattr(ds, "augment", None)) if tta else own_views(meta)
    x, y = (ds.test_x, ds.test_y) if split == "test" else (ds.train_x, ds.train_y)
    loader = loader_for(meta, x, y, dev)
    probs = None
    with strict_fp32():
        logits, labels = predict_logits(model, loader, progress=f"evaluating on {name} {split}")
        if views:
            probs = _tta_over(model, loader, views, f"TTA ({len(views)} views) on {name} {split}")
    res = metrics_from_logits(logits, labels, meta["classes"])
    ck = resolve_checkpoint(target, which)
    res.update(dataset=name, split=split, checkpoint=ck.stem, epoch=meta.get("epoch"))
    if views:
        res["tta"] = tta_metrics(res, probs, labels, meta["classes"], views)
    return Scored(res, logits, labels, model, meta, ds, run_dir, ck, probs)


# -- test-time augmentation ------------------------------------------------------------------


def _tta_over(model, loader, views: list[View], progress: str) -> torch.Tensor:
    """TTA probabilities over a resident loader's images, ``1000 // len(views)`` images
    (about 1000 model inputs) at a time."""
    was = model.training
    model.eval()
    n, bs = loader.x.shape[0], max(1, 1000 // len(views))
    out = [
        average_views(model, loader.pixels(loader.x[i : i + bs], False), views, loader.normalize)
        for i in track(range(0, n, bs), progress)
    ]
    model.train(was)
    return torch.cat(out).cpu()


def tta_metrics(plain: dict, probs: torch.Tensor, labels, classes, views) -> dict:
    """The TTA predictions' metrics next to the plain ones: accuracy with and without TTA
    and the change."""
    m = metrics_from_logits(probs.clamp_min(1e-30).log(), labels, classes)
    return {
        "views": [v.name for v in views],
        "accuracy": m["accuracy"],
        "accuracy_without_tta": plain["accuracy"],
        "accuracy_change": m["accuracy"] - plain["accuracy"],
        "top5": m["top5"],
        "loss": m["loss"],
        "loss_without_tta": plain["loss"],
        "ece": m["ece"],
        "per_class": m["per_class"],
    }


# -- per-sample outputs: the worst mistakes ---------------------------------------------------


def per_sample(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each image's cross-entropy loss, predicted class and its probability, and the true
    class's probability (from :func:`score`'s logits, so they agree with ``eval``)."""
    logits = logits.float()
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    loss = F.cross_entropy(logits, labels, reduction="none")
    return {
        "loss": loss,
        "pred": pred,
        "confidence": conf,
        "p_true": probs.gather(1, labels[:, None])[:, 0],
    }


def worst_mistakes(logits, labels, classes, n: int = 24) -> list[dict]:
    """The ``n`` highest-loss images: index into the split, true and predicted class,
    confidence of the prediction, probability of the true class and the loss."""
    s = per_sample(logits, labels)
    top = s["loss"].argsort(descending=True)[:n]
    return [
        {
            "index": int(i),
            "true": classes[int(labels[i])],
            "predicted": classes[int(s["pred"][i])],
            "confidence": float(s["confidence"][i]),
            "p_true": float(s["p_true"][i]),
            "loss": float(s["loss"][i]),
        }
        for i in top
    ]


def confused_pairs(logits, labels, classes, top: int = 5, examples: int = 4) -> list[dict]:
    """The ``top`` most frequent (true, predicted) mistakes — off-diagonal cells of the
    confusion matrix, largest first — each with the indices of its ``examples`` highest-loss
    images."""
    s = per_sample(logits, labels)
    k = len(classes)
    cm = torch.bincount(labels * k + s["pred"], minlength=k * k).view(k, k)
    off = cm.clone()
    off.fill_diagonal_(0)
    order = off.flatten().argsort(descending=True)[:top]
    support = cm.sum(1)
    out = []
    for c in order:
        t, p = divmod(int(c), k)
        count = int(off[t, p])
        if count == 0:
            break
        idx = ((labels == t) & (s["pred"] == p)).nonzero().flatten()
        idx = idx[s["loss"][idx].argsort(descending=True)[:examples]]
        out.append(
            {
                "true": classes[t],
                "predicted": classes[p],
                "count": count,
                "rate": count / max(int(support[t]), 1),  # of the true class's images
                "examples": [int(i) for i in idx],
            }
        )
    return out


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
    tta: bool = False,
) -> dict:
    """Evaluate a run (or checkpoint) on its dataset's test split (or ``dataset``, which
    must have the same classes).

    Writes ``eval.json`` and ``confusion.png`` into the run directory (or ``out_dir``);
    another dataset or split writes ``eval-<dataset>[-<split>].json`` and its
    ``confusion-….png`` instead, leaving the run's own evaluation as it was.
    ``tta=True`` adds ``"tta"``: accuracy with and without test-time augmentation, the
    change, and the views (:func:`score`).
    """
    sc = score(target, dataset, data_dir, split, device, which, tta=tta)
    res = sc.metrics
    if save:
        out = Path(out_dir) if out_dir else sc.run_dir
        stem = eval_name(sc.meta, dataset, split)
        fig = out / f"confusion{stem[4:]}.png"
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / f"{stem}.json", json.dumps(res, indent=1))
            plot_confusion(res["confusion"], res["classes"], fig)
        except (OSError, CnnlabError) as e:
            # the reason alone (runs.files words it for train, with a --runs-dir hint)
            why = getattr(e, "strerror", None) or str(e).rpartition(": ")[2].split(" (")[0]
            if out_dir is None:  # a read-only (or full) run: the numbers, not the files
                for p in (out / f"{stem}.json", fig):
                    with contextlib.suppress(OSError):
                        if p.is_file() and p.stat().st_size == 0:
                            p.unlink()
                res["outputs"] = []
                res["not_saved"] = (
                    f"cannot write into {out} ({why}); pass --out-dir DIR to keep them"
                )
                return res
            raise CnnlabError(f"cannot write into {out}: {why}; choose another --out-dir") from None
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
    fig = confusion_figure(cm, classes)
    atomic_write_bytes(path, png_bytes(fig, dpi=110, tight_layout=True))
