"""Classification metrics from logits: accuracy, top-5, per-class accuracy, confusion
matrix, balanced accuracy, macro-F1, per-class precision/recall/F1, calibration error; and
the logits of a model over a loader."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.progress import track
from cnnlab.runtime.graphs import GraphedForward


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, loader, autocast=None, progress: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over a loader of (x, y); returns float32 logits and labels on the CPU.
    On CUDA the forward is replayed from CUDA graphs (:class:`GraphedForward`).
    ``progress``: a description to show a progress bar under (see cnnlab.progress)."""
    was = model.training
    model.eval()
    outs, ys = [], []
    fwd = GraphedForward(model, autocast)
    batches = track(loader, progress) if progress else loader
    for x, y in batches:
        out = fwd(x)  # a graph's static buffer on CUDA: copied before the next batch
        outs.append(out.float() if out.dtype != torch.float32 else out.clone())
        ys.append(y)
    model.train(was)
    return torch.cat(outs).cpu(), torch.cat(ys).cpu()


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def class_report(cm) -> dict:
    """Per-class precision, recall, F1 and support from a (true, predicted) count matrix,
    with their class-averaged summaries:

    * ``balanced_accuracy``: the mean recall over the classes that occur (support > 0) —
      what accuracy would be on a test set with every class equally common;
    * ``macro_f1``: the mean F1 over the classes that occur or are predicted.

    A class never predicted has precision 0; one that never occurs has recall 0 and is left
    out of the balanced accuracy (scikit-learn's conventions, without its warnings).
    ``cm`` may hold weights rather than counts (rows rescaled to another class mix)."""
    cm = torch.as_tensor(cm, dtype=torch.float64)
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    precision = tp / predicted.clamp_min(1e-300)
    recall = tp / support.clamp_min(1e-300)
    f1 = 2 * tp / (support + predicted).clamp_min(1e-300)
    occurs = support > 0
    seen = occurs | (predicted > 0)
    return {
        "balanced_accuracy": float(recall[occurs].mean()) if occurs.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
    }


def expected_calibration_error(
    probs: torch.Tensor, y: torch.Tensor, bins: int = 15
) -> tuple[float, list]:
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        n = int(m.sum())
        if n:
            acc, c = correct[m].mean().item(), conf[m].mean().item()
            ece += n / len(y) * abs(acc - c)
            table.append(
                {"lo": float(lo), "hi": float(hi), "count": n, "accuracy": acc, "confidence": c}
            )
    return ece, table


def metrics_from_logits(
    logits: torch.Tensor, y: torch.Tensor, classes: list[str] | None = None
) -> dict:
    k = logits.shape[1]
    classes = classes or [str(i) for i in range(k)]
    probs = F.softmax(logits.float(), 1)
    pred = probs.argmax(1)
    cm = confusion_matrix(pred, y, k)
    support = cm.sum(1)
    per_class = (cm.diag().float() / support.clamp_min(1)).tolist()
    topk = min(5, k)
    top5 = (logits.topk(topk, 1).indices == y[:, None]).any(1).float().mean().item()
    ece, rel = expected_calibration_error(probs, y)
    rep = class_report(cm)
    return {
        "n": int(len(y)),
        "accuracy": (pred == y).float().mean().item(),
        "balanced_accuracy": rep["balanced_accuracy"],
        "macro_f1": rep["macro_f1"],
        "top5": top5,
        "loss": F.cross_entropy(logits.float(), y).item(),
        "ece": ece,
        "per_class": {c: a for c, a in zip(classes, per_class, strict=True)},
        # precision, recall (= per_class), F1 and test images (support) of each class
        "per_class_metrics": {
            c: {"precision": p, "recall": r, "f1": f, "support": int(n)}
            for c, p, r, f, n in zip(
                classes, rep["precision"], rep["recall"], rep["f1"], rep["support"], strict=True
            )
        },
        "confusion": cm.tolist(),
        "classes": list(classes),
        "reliability": rel,
    }
