"""Classification metrics from logits: accuracy, top-5, per-class accuracy, confusion
matrix, calibration error; and the logits of a model over a loader."""

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
    return {
        "n": int(len(y)),
        "accuracy": (pred == y).float().mean().item(),
        "top5": top5,
        "loss": F.cross_entropy(logits.float(), y).item(),
        "ece": ece,
        "per_class": {c: a for c, a in zip(classes, per_class, strict=True)},
        "confusion": cm.tolist(),
        "classes": list(classes),
        "reliability": rel,
    }
