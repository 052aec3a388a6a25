"""Using a trained run: its metrics on a dataset (with a confusion-matrix plot), and its
top classes for image files; optionally with test-time augmentation (TTA): softmax
probabilities averaged over the flips and shifts the run was trained with."""

from __future__ import annotations

import contextlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.analysis.ood import load_ood, ood_flags
from cnnlab.data.augment import parse_augment
from cnnlab.data.datasets import Dataset
from cnnlab.data.images import load_image, maybe_invert
from cnnlab.errors import CnnlabError
from cnnlab.figures import png_bytes
from cnnlab.metrics import metrics_from_logits, predict_logits
from cnnlab.progress import track
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.load import (
    load_model,
    load_run_dataset,
    loader_for,
    open_run,
    resolve_checkpoint,
    run_dir_of,
)
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
    accuracy change."""
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
    views = tta_views(meta, getattr(ds, "augment", None)) if tta else None
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


class View(NamedTuple):
    """One TTA view: an optional horizontal flip, then a shift by (dy, dx) pixels with zero
    fill (the padding ``random_crop`` crops from)."""

    flip: bool
    dy: int
    dx: int

    @property
    def name(self) -> str:
        parts = ["flip"] if self.flip else []
        if self.dy or self.dx:
            parts.append(f"shift({self.dy:+d},{self.dx:+d})")
        return "+".join(parts) or "original"


TTA_OPS = ("flip", "crop")  # deterministic views exist for these; noise/erase have none
TTA_SHIFT_DIV = 32  # TTA shifts are at least 1/32 of the image's side


def trained_augment(meta: dict, dataset_default: str | None = None) -> tuple[str, ...]:
    """The augmentations a run was trained with: the checkpoint's record of them (runs since
    TTA), else its config's ``data.augment`` ('auto' → ``dataset_default``, the dataset's
    default)."""
    if isinstance(meta.get("augment"), list):
        return tuple(str(a) for a in meta["augment"])
    spec = meta.get("config", {}).get("data", {}).get("augment", "auto")
    if spec in (None, "", "auto", "default") and dataset_default is None:
        raise CnnlabError(
            "--tta: cannot tell which augmentation this run was trained with (data.augment: "
            "auto, and its dataset is not available here to look its default up)"
        )
    return parse_augment(spec, dataset_default or "none")


def _dataset_augment(meta: dict) -> str | None:
    """The default augmentation of a run's dataset, for a run that recorded
    ``data.augment: auto`` but not what it resolved to (runs from before TTA); None when the
    dataset cannot be opened here."""
    if isinstance(meta.get("augment"), list):
        return None
    spec = meta.get("config", {}).get("data", {}).get("augment", "auto")
    if spec not in (None, "", "auto", "default"):
        return None
    try:
        return getattr(load_run_dataset(meta, download=False), "augment", None)
    except CnnlabError:
        return None


def tta_views(meta: dict, dataset_default: str | None = None) -> list[View]:
    """The views TTA averages over: exactly what the run's training augmentation allows.
    The original; its mirror image when trained with ``flip``; shifts up, down, left and
    right (of each of those) when trained with ``crop`` (random crops of a
    ``data.pad``-padded image), by max(1, pad // 2, side / :data:`TTA_SHIFT_DIV`) pixels —
    proportional to the image: a 224-px photo moves by 7 px, where half a 2-px pad would be
    1 px and change nothing. A run trained without flip or crop has no view to add: an
    error that says so."""
    ops = trained_augment(meta, dataset_default)
    pad = meta.get("config", {}).get("data", {}).get("pad", 2)
    pad = pad if isinstance(pad, int) and not isinstance(pad, bool) else 2
    side = (meta.get("input") or {}).get("size")
    side = side if isinstance(side, int) and not isinstance(side, bool) else 0
    flips = (False, True) if "flip" in ops else (False,)
    s = max(1, pad // 2, round(side / TTA_SHIFT_DIV))
    shifts = [(0, 0)]
    if "crop" in ops and pad > 0:
        shifts += [(-s, 0), (s, 0), (0, -s), (0, s)]
    views = [View(f, dy, dx) for f in flips for dy, dx in shifts]
    if len(views) == 1:
        trained = ",".join(ops) or "none"
        raise CnnlabError(
            f"--tta: this run was trained without flip or crop augmentation (data.augment: "
            f"{trained}), so there is no view to average over; leave --tta out"
        )
    return views


def describe_views(names: list[str]) -> str:
    """``[original, shift(-1,+0), …, flip, …]`` → ``10 views: original and flip, each also
    shifted 1 px up, down, left and right``."""
    base = "original and flip" if "flip" in names else "original"
    shifts = sorted({n.split("shift(")[1] for n in names if "shift(" in n})
    px = max((abs(int(v)) for sh in shifts for v in sh.rstrip(")").split(",")), default=0)
    more = f", each also shifted {px} px up, down, left and right" if px else ""
    return f"{len(names)} views: {base}{more}"


def apply_view(x: torch.Tensor, v: View) -> torch.Tensor:
    """``v`` applied to a batch (B, C, H, W) in [0, 1] pixel scale."""
    if v.flip:
        x = x.flip(3)
    if v.dy or v.dx:
        p = max(abs(v.dy), abs(v.dx))
        h, w = x.shape[-2:]
        xp = F.pad(x, (p, p, p, p))
        x = xp[..., p - v.dy : p - v.dy + h, p - v.dx : p - v.dx + w]
    return x


@torch.no_grad()
def average_views(model, x01: torch.Tensor, views: list[View], normalize) -> torch.Tensor:
    """Softmax probabilities (B, K) averaged over ``views`` of the batch ``x01`` (pixels in
    [0, 1]): all views go through the model as one batch."""
    b = x01.shape[0]
    xs = torch.cat([apply_view(x01, v) for v in views])
    p = torch.softmax(model(normalize(xs)).float(), 1)
    return p.view(len(views), b, -1).mean(0)


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


def predict(
    target,
    images,
    top: int = 3,
    device: str = "auto",
    invert: str = "auto",
    which: str = "best",
    errors: str = "raise",
    tta: bool = False,
) -> list[dict]:
    """Classify image files (or uint8 arrays (C, H, W)) with a trained run.

    ``invert='auto'``: a gray image on a light background is inverted when the model was
    trained on light-on-dark images (MNIST, Fashion-MNIST), as a photo of ink on paper is.
    ``errors='report'``: an unreadable file gives ``{"image": ..., "error": ...}`` in its
    place and the others are still answered (``'raise'``: the first one is an error).
    ``tta=True``: the probabilities are averaged over the flips and shifts the run was
    trained with (:func:`tta_views`; each answer names them under ``"tta"``); the
    out-of-distribution score stays the plain image's.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise CnnlabError(f"--top must be a whole number ≥ 1, got {top!r}")
    if errors not in ("raise", "report"):
        raise CnnlabError(f"errors must be 'raise' or 'report', got {errors!r}")
    dev = resolve_device(device)
    model, meta = load_model(target, which, dev)
    views = tta_views(meta, _dataset_augment(meta)) if tta else None
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
    norm = lambda x01: (x01 - mean.to(dev)) / std.to(dev)  # noqa: E731
    logits, tprobs = [], []
    bs = 256 // len(views) if views else 256
    with torch.no_grad():
        for b in track(range(0, len(arrs), bs), "classifying images"):
            x01 = torch.from_numpy(np.stack(arrs[b : b + bs])).to(dev).float() / 255
            logits.append(model(norm(x01)).float().cpu())
            if views:
                tprobs.append(average_views(model, x01, views, norm).cpu())
    logits = torch.cat(logits)
    probs = torch.cat(tprobs) if views else torch.softmax(logits, 1)
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
        if views:
            out[i]["tta"] = [v.name for v in views]
        if ood:
            out[i].update(ood_score=float(scores[k]), ood=bool(is_ood[k]))
    return out
