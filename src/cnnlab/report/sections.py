"""The report's sections around the test set: title, summary and verdict, learning curves,
gradient flow, regularisation and semi-supervised settings, the other analyses in the run
directory, the resolved config. Each returns its HTML as a list of parts."""

from __future__ import annotations

import html
from pathlib import Path

import yaml

from cnnlab.analysis.gradients import EXPLODE, VANISH, flags_for, read_gradients
from cnnlab.report.markup import img, json_block, pct, table
from cnnlab.report.plots import plot_curves, plot_gradients
from cnnlab.report.rundata import classifier_history, extra_files, find_baseline
from cnnlab.report.verdict import LARGE_GAP, OVERFIT_GAP, OVERFIT_LOSS_RISE
from cnnlab.runs.summary import best_epoch, time_text


def title_section(run: Path, hist: list[dict], cfg: dict) -> list[str]:
    """The run's name, model, dataset and epochs."""
    model_name = str(cfg.get("model", {}).get("name", "?"))
    data_name = str(cfg.get("data", {}).get("name", "?"))
    return [
        f"<h1>cnnlab run report: {html.escape(run.name)}</h1>",
        f"<p>{html.escape(model_name)} on {html.escape(data_name)} — "
        f"{len(hist)} epoch(s) in <code>{html.escape(str(run))}</code></p>",
    ]


def summary_section(hist: list[dict], ev: dict | None, v: dict) -> list[str]:
    """The summary table (with the test accuracy ``cnnlab eval`` prints, when the run could
    be evaluated) and the verdict ``v`` with its rule."""
    parts = []
    if hist:
        last = hist[-1]
        rows = []
        if ev is not None:  # the number `cnnlab eval` prints: the same function
            rows.append(
                [
                    f"test accuracy ({ev['checkpoint_file']} checkpoint, epoch "
                    f"{ev['summary']['epoch']}; as `cnnlab eval`)",
                    pct(ev["accuracy"]),
                ]
            )
        rows += [
            ["test accuracy during training, last epoch", pct(last["test_acc"])],
            ["test loss during training, last epoch", f"{last['test_loss']:.4f}"],
            ["train accuracy, last epoch", pct(last["train_acc"])],
        ]
        if "val_acc" in last:
            best = best_epoch(hist)
            rows.append(["validation accuracy, last epoch", pct(last["val_acc"])])
            rows.append(["best epoch (by validation accuracy)", f"{best['epoch']}"])
        else:
            rows.append(["best epoch", "none: no validation split (the last epoch is used)"])
        rows.append(["time (training; wall: training + per-epoch evaluation)", time_text(hist)])
        parts.append("<h2>Summary</h2>" + table(rows, ["metric", "value"]))
    parts.append(f'<p class="verdict {v["kind"]}"><b>Verdict:</b> {html.escape(v["text"])}</p>')
    parts.append(
        '<p class="note">Rule: overfitting when the held-out (validation, else test) loss has '
        f"risen ≥ {OVERFIT_LOSS_RISE - 1:.0%} above its minimum and train accuracy exceeds "
        f"held-out accuracy by ≥ {OVERFIT_GAP * 100:.0f} points; a gap ≥ "
        f"{LARGE_GAP * 100:.0f} points without a rising loss is a generalisation gap. "
        "Train accuracy is measured during the epoch, on augmented images.</p>"
    )
    return parts


def curves_section(name: str, hist: list[dict]) -> list[str]:
    """Loss and accuracy per epoch, drawn and as a table."""
    if not hist:
        return []
    parts = ["<h2>Learning curves</h2>" + img(plot_curves({name: hist}), "curves")]
    keys = [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "lr",
        "seconds",
        "pseudo_label_rate",
    ]
    keys = [k for k in keys if any(k in m for m in hist)]
    fmt = lambda k, x: (  # noqa: E731
        str(x) if k == "epoch" else (f"{x:.2e}" if k == "lr" else f"{x:.4f}")
    )
    parts.append(table([[fmt(k, m[k]) if k in m else "–" for k in keys] for m in hist], keys))
    return parts


def gradients_section(run: Path) -> list[str]:
    """Gradient flow per layer and epoch (``gradients.jsonl``, written with
    ``train.diagnostics``), the flagged layers, the activations' saturation."""
    grads = read_gradients(run)
    if not grads:
        return []
    parts = ["<h2>Gradient flow</h2>" + img(plot_gradients(grads), "gradient flow")]
    flagged = [(r["epoch"], f) for r in grads for f in flags_for(r["layers"])]
    if flagged:
        parts.append(
            "<ul>"
            + "".join(f'<li class="flag">epoch {e}: {html.escape(f)}</li>' for e, f in flagged)
            + "</ul>"
        )
    else:
        parts.append(
            "<p>No vanishing or exploding gradients flagged (rule: first-layer "
            f"gradient norm &lt; {VANISH:g} × or &gt; {EXPLODE:g} × the last "
            "layer's, or non-finite).</p>"
        )
    last = grads[-1]
    parts.append(
        table(
            [
                [
                    d["name"],
                    d["type"],
                    d["params"],
                    f"{d['grad_norm']:.3e}",
                    f"{d['update_ratio']:.3e}",
                ]
                for d in last["layers"]
                if d["grad_norm"] is not None
            ],
            ["layer", "type", "params", f"grad norm (epoch {last['epoch']})", "update ratio"],
        )
    )
    parts.append(
        table(
            [
                [
                    d["name"],
                    d["type"],
                    f"{d['mean']:.3f}",
                    f"{d['std']:.3f}",
                    f"{d['saturation']:.1%}",
                ]
                for d in last["activations"]
            ],
            ["activation", "type", "mean", "std", "saturated / dead"],
        )
    )
    return parts


def settings_section(run: Path, cfg: dict, hist: list[dict]) -> list[str]:
    """Regularisation settings; for a semi-supervised run its settings and the gain over
    its supervised-only twin (a sibling run, :func:`rundata.find_baseline`)."""
    parts = []
    t, d, o = cfg.get("train", {}), cfg.get("data", {}), cfg.get("optim", {})
    margs = {k: v for k, v in cfg.get("model", {}).items() if k != "name"}
    reg = [
        ["validation split", d.get("val_fraction", 0)],
        ["early stopping patience (epochs, on val_acc)", t.get("early_stop", 0) or "off"],
        ["weight decay", o.get("weight_decay", 0)],
        ["label smoothing", t.get("label_smoothing", 0)],
        ["augmentation", d.get("augment", "auto")],
        ["dropout (model option)", margs.get("dropout", "–")],
    ]
    parts.append(
        "<h2>Regularisation</h2>"
        + table(reg, ["setting", "value"])
        + '<p class="note">Compare runs that differ in these with '
        "<code>cnnlab compare RUN RUN ...</code>.</p>"
    )
    if d.get("labels_per_class"):
        semi = t.get("semi", "none")
        rows = [
            ["labelled images per class", d["labels_per_class"]],
            ["method", semi],
            [
                "steps",
                (t.get("steps_per_epoch") or "auto")
                if not hist
                else f"{t.get('epochs')} epochs × {t.get('steps_per_epoch') or 'auto'}",
            ],
        ]
        if hist:
            rows.append(["test accuracy (final)", pct(hist[-1]["test_acc"])])
        base = find_baseline(run, cfg)
        if base is not None:
            bh = classifier_history(base)
            if bh:
                rows.append(
                    [
                        f"supervised-only baseline ({base.name}, same labels, augmentation, steps)",
                        pct(bh[-1]["test_acc"]),
                    ]
                )
                if hist:
                    rows.append(
                        [
                            "gain over the baseline",
                            f"{(hist[-1]['test_acc'] - bh[-1]['test_acc']) * 100:+.2f} points",
                        ]
                    )
        elif semi != "none":
            rows.append(
                [
                    "supervised-only baseline",
                    "no sibling run found (train one with "
                    "train.semi=none and the same settings next to this run)",
                ]
            )
        parts.append("<h2>Semi-supervised</h2>" + table(rows, ["", ""]))
    return parts


def extras_section(run: Path) -> list[str]:
    """The other analyses left in the run directory: known JSON results and PNG figures."""
    parts = []
    jsons, pngs = extra_files(run)
    if jsons or pngs:
        parts.append("<h2>Other analyses in this run</h2>")
        for name, obj in jsons:
            parts.append(f"<h3>{html.escape(name)}</h3>" + json_block(obj))
        for rel, b64 in pngs:
            parts.append(f"<h3>{html.escape(rel)}</h3>" + img(b64, rel))
    return parts


def config_section(cfg: dict) -> list[str]:
    return [
        "<h2>Resolved config</h2><pre>"
        + html.escape(yaml.safe_dump(cfg, sort_keys=False))
        + "</pre>"
    ]
