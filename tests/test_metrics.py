import pytest
import torch

from cnnlab.metrics import class_report, confusion_matrix, metrics_from_logits


def _reference(y: list[int], pred: list[int], k: int) -> dict:
    """Precision/recall/F1 counted image by image (scikit-learn's definitions and its
    zero_division=0; macro-F1 over the classes that occur or are predicted)."""
    p, r, f = [], [], []
    for c in range(k):
        tp = sum(a == c and b == c for a, b in zip(y, pred, strict=True))
        npred, nsup = pred.count(c), y.count(c)
        p.append(tp / npred if npred else 0.0)
        r.append(tp / nsup if nsup else 0.0)
        f.append(2 * p[-1] * r[-1] / (p[-1] + r[-1]) if p[-1] + r[-1] else 0.0)
    occurs = [c for c in range(k) if c in y]
    seen = [c for c in range(k) if c in y or c in pred]
    return {
        "balanced_accuracy": sum(r[c] for c in occurs) / len(occurs),
        "macro_f1": sum(f[c] for c in seen) / len(seen),
        "precision": p,
        "recall": r,
        "f1": f,
        "support": [y.count(c) for c in range(k)],
    }


def test_class_report_matches_an_image_by_image_count():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (300,), generator=g)
    y[y == 4] = 3  # class 4 never occurs
    noise = torch.randint(0, 5, (300,), generator=g)
    pred = torch.where(torch.rand(300, generator=g) < 0.6, y, noise)
    pred[pred == 2] = 1  # class 2 is never predicted
    assert (pred == 4).any()
    rep = class_report(confusion_matrix(pred, y, 5))
    ref = _reference(y.tolist(), pred.tolist(), 5)
    for key, value in ref.items():
        assert rep[key] == pytest.approx(value), key
    assert rep["precision"][2] == 0 and rep["recall"][4] == 0


def test_balanced_accuracy_ignores_the_class_mix_accuracy_does_not():
    cm = torch.tensor([[90, 10], [5, 5]])  # a majority class, and a minority one at 50 %
    rep = class_report(cm)
    assert rep["balanced_accuracy"] == pytest.approx((0.9 + 0.5) / 2)
    rescaled = class_report(cm.double() * torch.tensor([[1.0], [18.0]]))  # same recalls
    assert rescaled["balanced_accuracy"] == pytest.approx(rep["balanced_accuracy"])
    assert rep["f1"][1] == pytest.approx(2 * 5 / (10 + 15))


def test_metrics_from_logits_reports_per_class_precision_recall_f1():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 0]), 3).float()
    m = metrics_from_logits(logits, y, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    pc = m["per_class_metrics"]
    assert pc["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert pc["b"]["precision"] == pytest.approx(0.5) and pc["c"]["precision"] == 1.0
    assert [pc[c]["recall"] for c in "abc"] == pytest.approx(list(m["per_class"].values()))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)
