"""The report's test-set sections: the metrics ``cnnlab eval`` prints, the confusion
matrix, per-class accuracy and F1, the worst mistakes, calibration, the model summary."""

from __future__ import annotations

from cnnlab.report.markup import img, pct, table
from cnnlab.report.plots import (
    plot_confusion,
    plot_pairs,
    plot_per_class,
    plot_reliability,
    plot_wrong,
)


def test_set_section(ev: dict, which: str) -> list[str]:
    """Metrics, confusion matrix, per-class accuracy, worst mistakes and calibration of the
    evaluation ``ev`` (:func:`report.evaluation.evaluate_run`) of the ``which`` checkpoint."""
    parts = []
    parts.append(
        f"<h2>Test set ({ev['n']:,} images, {which} checkpoint, epoch "
        f"{ev['summary']['epoch']})</h2>"
        + table(
            [
                ["accuracy", pct(ev["accuracy"])],
                *balance_rows(ev),
                ["top-5", pct(ev["top5"])],
                ["loss", f"{ev['loss']:.4f}"],
                ["ECE (15 bins)", f"{ev['ece']:.4f}"],
            ],
            ["metric", "value"],
        )
    )
    parts.append(
        "<h3>Confusion matrix</h3>"
        + img(plot_confusion(ev["confusion"], ev["classes"]), "confusion matrix")
    )
    parts.append(
        "<h3>Per-class accuracy</h3>"
        + img(plot_per_class(ev["per_class"]), "per-class accuracy")
        + per_class_table(ev)
    )
    parts += worst_mistakes_section(ev)
    parts.append(
        "<h3>Calibration (reliability diagram)</h3>"
        + img(plot_reliability(ev["reliability"], ev["ece"]), "reliability")
        + table(
            [
                [
                    f"{b['lo']:.2f}–{b['hi']:.2f}",
                    b["count"],
                    f"{b['accuracy']:.3f}",
                    f"{b['confidence']:.3f}",
                ]
                for b in ev["reliability"]
            ],
            ["confidence bin", "images", "accuracy", "mean confidence"],
        )
    )
    return parts


def model_section(ev: dict) -> list[str]:
    """Parameters, MACs per image and the layers of the evaluated model."""
    s = ev["summary"]
    return [
        f"<h2>Model summary</h2><p>{s['params']:,} parameters, {s['macs']:,} MACs per "
        "image</p>"
        + table(
            [[n, t_, p, r] for n, t_, p, r in s["layers"]],
            ["layer", "type", "params", "definition"],
        )
    ]


def balance_rows(ev: dict) -> list[list[str]]:
    """Balanced accuracy and macro-F1 rows of the test-set table (an evaluation from before
    they were computed has none)."""
    rows = []
    if "balanced_accuracy" in ev:
        rows.append(["balanced accuracy (mean per-class recall)", pct(ev["balanced_accuracy"])])
    if "macro_f1" in ev:
        rows.append(["macro-F1", pct(ev["macro_f1"])])
    return rows


def per_class_table(ev: dict) -> str:
    """Per class: training images (when the run recorded them), precision, recall (its
    accuracy), F1 and test images; with the imbalance ratio of the training set."""
    pcm = ev.get("per_class_metrics")
    if not pcm:
        return table([[c, pct(a)] for c, a in ev["per_class"].items()], ["class", "accuracy"])
    counts = ev.get("class_counts") or {}
    head = ["class", *(["train images"] if counts else []), "precision", "recall", "F1"]
    rows = [
        [
            c,
            *([f"{counts.get(c, 0):,}"] if counts else []),
            pct(m["precision"]),
            pct(m["recall"]),
            pct(m["f1"]),
            f"{m['support']:,}",
        ]
        for c, m in pcm.items()
    ]
    note = ""
    if counts:
        lo, hi = min(counts.values()), max(counts.values())
        ratio = f"{hi / lo:.1f}" if lo else "∞"
        note = (
            f"<p>Training images per class: {lo:,} to {hi:,}, an imbalance ratio (largest "
            f"over smallest) of {ratio}. Recall is the class's accuracy.</p>"
        )
    return note + table(rows, [*head, "test images"])


def worst_mistakes_section(ev: dict) -> list[str]:
    """The worst mistakes: a gallery of the highest-loss test images (true and predicted
    class, confidence, loss) and the most-confused class pairs, a few examples each."""
    parts = []
    if len(ev["wrong"]["images"]):
        parts.append(
            f"<h3>Worst mistakes: the {len(ev['worst'])} highest-loss test images</h3>"
            '<p class="note">Caption: the image (its file name in an image folder, else '
            "its index in the test set), predicted class and its probability; the true "
            "class and the image's cross-entropy loss.</p>"
            + img(plot_wrong(ev["wrong"]["images"], ev["wrong"]["captions"]), "worst mistakes")
        )
    pairs = ev.get("confused_pairs") or []
    if pairs:
        parts.append(
            "<h3>Most-confused class pairs</h3>"
            + table(
                [[p["true"], p["predicted"], p["count"], pct(p["rate"])] for p in pairs],
                ["true class", "predicted as", "images", "of the true class"],
            )
        )
        parts.append(
            '<p class="note">One row per pair, in the order of the table: its highest-loss '
            "examples.</p>" + img(plot_pairs(pairs), "most-confused pairs")
        )
    return parts
