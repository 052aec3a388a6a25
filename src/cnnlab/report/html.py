"""The run report: one self-contained HTML file (``runs/<name>/report.html``).

Every figure is a PNG embedded as base64, there is no external asset, so the file opens
offline and can be mailed. Sections: summary and generalisation verdict, learning curves,
confusion matrix, per-class accuracy, the worst mistakes (the highest-loss test images and
the most-confused class pairs with examples), reliability diagram + ECE, gradient flow
(when ``gradients.jsonl`` exists), regularisation and
semi-supervised settings with the supervised-only baseline, model summary (layers,
parameters, MACs), the resolved config, and whatever other analyses left in the run
directory (``robustness.json``, ``ood.json``, ``eval.json``, their PNGs).

The generalisation verdict (``verdict(history)``), on the held-out curve (validation when
the run has a validation split, else test):

* **overfitting from epoch k**: the held-out loss reached its minimum at epoch k-1 < the
  last epoch and the last held-out loss is ≥ 10 % above it, while train accuracy exceeds
  held-out accuracy by ≥ 2 points at the end;
* **generalisation gap**: train − held-out accuracy ≥ 5 points, the held-out loss not
  (yet) rising;
* **still learning**: train accuracy rose by > 0.5 points in the last epoch and the gap is
  < 2 points (more epochs would help);
* **not learning**: train and held-out accuracy both < 1.5 × chance (1/classes);
* **no verdict** when there is too little to judge by: fewer than 10 training images per
  class, a held-out set under 100 images, or train or held-out accuracy < 1.5 × chance;
* **good fit** otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from cnnlab.analysis.gradients import EXPLODE, VANISH, flags_for, read_gradients
from cnnlab.errors import CnnlabError
from cnnlab.inference import confused_pairs, confusion_figure, score, worst_mistakes
from cnnlab.models import count_macs, count_params
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.layout import read_metrics, run_config, run_kind
from cnnlab.runs.summary import best_epoch, run_seconds, time_text

OVERFIT_LOSS_RISE = 1.10
OVERFIT_GAP = 0.02
LARGE_GAP = 0.05
STILL_LEARNING = 0.005
KNOWN_FILES = ("robustness.json", "ood.json", "eval.json", "sweep.json")
MIN_TRAIN_PER_CLASS = 10  # a verdict needs at least this many training images per class
MIN_HELD_OUT = 100  # ... and a held-out set at least this large


# -- the verdict ---------------------------------------------------------------------------


def verdict(
    history: list[dict],
    num_classes: int | None = None,
    n_train: int | None = None,
    n_held: int | None = None,
) -> dict:
    """Classify the learning curves (rule in the module docstring); ``n_train`` and
    ``n_held`` (images trained on / in the held-out set), where known, must be enough to
    judge by."""
    if not history:
        return {"kind": "empty", "text": "no finished epoch"}
    held = "val" if "val_acc" in history[0] else "test"
    last = history[-1]
    tr, te = last["train_acc"], last[f"{held}_acc"]
    gap = tr - te
    losses = [m[f"{held}_loss"] for m in history]
    i_min = int(np.argmin(losses))
    best_epoch = history[i_min]["epoch"]
    base = {
        "held_out": held,
        "train_acc": tr,
        "held_acc": te,
        "gap": gap,
        "best_loss_epoch": best_epoch,
    }
    nums = f"train {tr:.1%}, {held} {te:.1%}"
    if num_classes and max(tr, te) < 1.5 / num_classes:
        return {
            **base,
            "kind": "not_learning",
            "text": f"not learning: {nums}, near chance ({1 / num_classes:.0%}) — check the "
            "learning rate and the gradient flow (vanishing gradients?)",
        }
    few = []
    if n_train is not None and num_classes and n_train < MIN_TRAIN_PER_CLASS * num_classes:
        few.append(f"it trained on {n_train:,} images (fewer than {MIN_TRAIN_PER_CLASS} per class)")
    if n_held is not None and n_held < MIN_HELD_OUT:
        few.append(f"its {held} set holds {n_held:,} images (fewer than {MIN_HELD_OUT})")
    if num_classes and min(tr, te) < 1.5 / num_classes:
        few.append(f"an accuracy near chance ({1 / num_classes:.0%})")
    if few:
        return {
            **base,
            "kind": "no_verdict",
            "text": f"no verdict: {nums}, but " + " and ".join(few) + " — too little to "
            "judge the fit by; train on more images for more epochs",
        }
    if (
        i_min < len(history) - 1
        and losses[-1] >= OVERFIT_LOSS_RISE * losses[i_min]
        and gap >= OVERFIT_GAP
    ):
        start = history[i_min + 1]["epoch"]
        return {
            **base,
            "kind": "overfitting",
            "from_epoch": start,
            "text": f"overfitting from epoch {start}: {nums} ({held} loss "
            f"{losses[-1]:.3f} vs its minimum {losses[i_min]:.3f} at epoch {best_epoch})",
        }
    if gap >= LARGE_GAP:
        return {
            **base,
            "kind": "gap",
            "text": f"generalisation gap of {gap * 100:.1f} points: {nums}; the {held} loss is "
            "not rising yet — more data, augmentation or regularisation would help",
        }
    if len(history) >= 2 and tr - history[-2]["train_acc"] > STILL_LEARNING and gap < OVERFIT_GAP:
        return {
            **base,
            "kind": "still_learning",
            "text": f"still learning: {nums}; train accuracy rose "
            f"{(tr - history[-2]['train_acc']) * 100:.1f} points in the last epoch — "
            "more epochs would help",
        }
    return {**base, "kind": "good_fit", "text": f"good fit: {nums} (gap {gap * 100:.1f} points)"}


# -- figures ------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_png(fig) -> str:
    """A matplotlib figure → base64 PNG (the figure is closed)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_curves(runs: dict[str, list[dict]]) -> str:
    """Loss and accuracy per epoch; one colour per run, line style per split."""
    plt = _plt()
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
    plt = _plt()
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
    plt = _plt()
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
    plt = _plt()
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
                (im, f"{_image_name(p, k, i)} true {p['true']}\npredicted {p['predicted']}")
                for k, (im, i) in enumerate(zip(p["images"], p["examples"], strict=True))
            ]
            for p in pairs
        ]
    )


def plot_gradients(rows: list[dict]) -> str:
    """Per-layer gradient norm, update ratio and activation saturation across epochs."""
    plt = _plt()
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


# -- data for the report ---------------------------------------------------------------------


CLASSIFIER_KEYS = ("epoch", "train_acc", "train_loss", "test_acc", "test_loss")


def classifier_history(run: str | os.PathLike) -> list[dict]:
    """The epochs of a classifier run's ``metrics.jsonl`` that hold its numbers (a damaged
    line is skipped); a GAN run is an error that says what to use instead."""
    rows = read_metrics(run)
    if run_kind(run, hist=rows) == "gan":
        raise CnnlabError(
            f"{str(run)!r} is a GAN run: it has no accuracy to report; its samples and "
            "curves are the PNGs in the run directory (more with `cnnlab generate RUN`)"
        )

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def ok(m) -> bool:
        keys = CLASSIFIER_KEYS + (("val_acc", "val_loss") if "val_acc" in m else ())
        return all(number(m.get(k)) for k in keys)

    rows = [m for m in rows if isinstance(m, dict) and ok(m)]
    with_val = bool(rows) and "val_acc" in rows[0]
    return [m for m in rows if ("val_acc" in m) == with_val]


def _short(name: str, limit: int = 18) -> str:
    """A file's name for a caption: its base name, the middle cut when long."""
    base = name.rsplit("/", 1)[-1]
    return base if len(base) <= limit else base[: limit // 2 - 1] + "…" + base[-(limit // 2) :]


def _image_name(pair: dict, k: int, index: int) -> str:
    files = pair.get("files")
    return _short(files[k]) if files else f"#{index}"


def test_files(ds) -> list[str] | None:
    """The test images' file names (relative to the folder) in the test set's order, for an
    image folder; None for a built-in dataset (its images have only an index)."""
    parts = getattr(getattr(ds, "split", None), "parts", None)
    if isinstance(parts, dict) and isinstance(parts.get("test"), list):
        return [rel for rel, _ in parts["test"]]
    return None


def mistake_caption(w: dict) -> str:
    """``#index predicted 87% / true X, loss 2.31`` for one of :func:`worst_mistakes` — the
    file's name instead of the index for an image folder."""
    where = _short(w["file"]) if w.get("file") else f"#{w['index']}"
    return f"{where} {w['predicted']} {w['confidence']:.0%}\ntrue {w['true']}, loss {w['loss']:.2f}"


def evaluate_run(
    run: Path, which: str = "best", n_wrong: int = 24, data_dir=None, device: str = "auto"
) -> dict:
    """Test-set metrics (the same evaluation as ``cnnlab eval``: :func:`inference.score`),
    the worst mistakes (the ``n_wrong`` highest-loss images and the most-confused class
    pairs with examples) and the model summary."""
    sc = score(run, data_dir=data_dir, device=device, which=which, download=False)
    res, logits, y, meta, ds = dict(sc.metrics), sc.logits, sc.labels, sc.meta, sc.dataset
    model = sc.model.cpu()
    cls = meta["classes"]
    # the worst mistakes: per-image losses from the same logits `cnnlab eval` scores
    res["worst"] = worst_mistakes(logits, y, cls, n_wrong)
    res["confused_pairs"] = confused_pairs(logits, y, cls, top=5, examples=4)
    files = test_files(ds)
    if files is not None and len(files) == len(y):  # an image folder: name the files
        for w in res["worst"]:
            w["file"] = files[w["index"]]
        for pair in res["confused_pairs"]:
            pair["files"] = [files[i] for i in pair["examples"]]
    res["wrong"] = {
        "images": ds.test_x[[w["index"] for w in res["worst"]]].numpy(),
        "captions": [mistake_caption(w) for w in res["worst"]],
    }
    for pair in res["confused_pairs"]:
        pair["images"] = ds.test_x[pair["examples"]].numpy()
    inp = meta["input"]
    layers = []
    for name, m in model.named_modules():
        if name and not list(m.children()):
            layers.append((name, type(m).__name__, sum(p.numel() for p in m.parameters()), str(m)))
    res["summary"] = {
        "params": count_params(model),
        "macs": count_macs(model, inp["channels"], inp["size"]),
        "layers": layers,
        "checkpoint": which,
        "epoch": meta.get("epoch"),
    }
    res["checkpoint_file"] = sc.checkpoint.stem  # best, or last where no best was kept
    res["class_counts"] = meta.get("class_counts")  # training images per class, if recorded
    d = meta.get("config", {}).get("data", {})
    n = ds.num_train  # the test split alone was loaded
    if isinstance(d.get("train_limit"), int) and d["train_limit"] > 0:
        n = min(n, d["train_limit"])
    vf = d.get("val_fraction", 0)
    res["n_val"] = int(round(n * vf)) if isinstance(vf, (int, float)) and 0 < vf < 1 else 0
    res["n_train"] = n - res["n_val"]
    return res


def balance_rows(ev: dict) -> list[list[str]]:
    """Balanced accuracy and macro-F1 rows of the test-set table (an evaluation from before
    they were computed has none)."""
    rows = []
    if "balanced_accuracy" in ev:
        rows.append(["balanced accuracy (mean per-class recall)", _pct(ev["balanced_accuracy"])])
    if "macro_f1" in ev:
        rows.append(["macro-F1", _pct(ev["macro_f1"])])
    return rows


def per_class_table(ev: dict) -> str:
    """Per class: training images (when the run recorded them), precision, recall (its
    accuracy), F1 and test images; with the imbalance ratio of the training set."""
    pcm = ev.get("per_class_metrics")
    if not pcm:
        return _table([[c, _pct(a)] for c, a in ev["per_class"].items()], ["class", "accuracy"])
    counts = ev.get("class_counts") or {}
    head = ["class", *(["train images"] if counts else []), "precision", "recall", "F1"]
    rows = [
        [
            c,
            *([f"{counts.get(c, 0):,}"] if counts else []),
            _pct(m["precision"]),
            _pct(m["recall"]),
            _pct(m["f1"]),
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
    return note + _table(rows, [*head, "test images"])


def find_baseline(run: Path, cfg: dict) -> Path | None:
    """A sibling run that is this semi-supervised run's supervised-only twin: same model,
    labels per class, seed, augmentation and number of steps, train.semi none."""
    t, d = cfg.get("train", {}), cfg.get("data", {})
    if not d.get("labels_per_class") or t.get("semi", "none") == "none":
        return None

    def key(c):
        ct, cd = c.get("train", {}), c.get("data", {})
        return (
            c.get("model", {}).get("name"),
            cd.get("name"),
            cd.get("labels_per_class"),
            cd.get("augment"),
            ct.get("seed"),
            ct.get("epochs"),
            ct.get("steps_per_epoch"),
            ct.get("batch_size"),
        )

    for other in sorted(run.parent.iterdir()):
        if other == run or not (other / "config.yaml").is_file():
            continue
        oc = run_config(other)
        if oc.get("train", {}).get("semi", "none") == "none" and key(oc) == key(cfg):
            return other
    return None


def _extra_files(run: Path, own: set[str]) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """Other analyses left in the run directory: known JSON results and any PNG figure."""
    jsons, pngs = [], []
    for name in KNOWN_FILES:
        p = run / name
        if p.is_file():
            try:
                jsons.append((name, json.loads(p.read_text())))
            except (json.JSONDecodeError, OSError):
                continue
    cands = sorted(run.glob("*.png")) + sorted(run.glob("*/*.png"))
    for p in cands:
        rel = str(p.relative_to(run))
        if rel in own or rel.startswith("checkpoints/") or p.stat().st_size > 5_000_000:
            continue
        pngs.append((rel, base64.b64encode(p.read_bytes()).decode("ascii")))
    return jsons, pngs[:40]


# -- HTML -----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.1em;padding:.6em 1em;border-radius:6px;background:#eef5ff}
.overfitting,.gap{background:#fff1e6}.flag{color:#b00;font-weight:bold}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}img{max-width:100%}
.note{color:#666;font-size:.9em}
"""


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(rows: list[list], header: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _pct(v) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "–"


def _json_block(obj, limit: int = 6000) -> str:
    text = json.dumps(obj, indent=1, default=str)
    if len(text) > limit:
        text = text[:limit] + "\n… (truncated)"
    return f"<pre>{html.escape(text)}</pre>"


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
            + _img(plot_wrong(ev["wrong"]["images"], ev["wrong"]["captions"]), "worst mistakes")
        )
    pairs = ev.get("confused_pairs") or []
    if pairs:
        parts.append(
            "<h3>Most-confused class pairs</h3>"
            + _table(
                [[p["true"], p["predicted"], p["count"], _pct(p["rate"])] for p in pairs],
                ["true class", "predicted as", "images", "of the true class"],
            )
        )
        parts.append(
            '<p class="note">One row per pair, in the order of the table: its highest-loss '
            "examples.</p>" + _img(plot_pairs(pairs), "most-confused pairs")
        )
    return parts


def render_report(
    run: str | os.PathLike,
    which: str = "best",
    data_dir=None,
    info: dict | None = None,
    device: str = "auto",
) -> str:
    """The report's HTML for a run directory (``info`` receives the verdict and the
    test-set evaluation)."""
    run = Path(run)
    if not (run / "config.yaml").is_file() and not (run / "metrics.jsonl").is_file():
        raise CnnlabError(f"{str(run)!r} is not a run directory (no config.yaml/metrics.jsonl)")
    hist = classifier_history(run)
    cfg = run_config(run)
    parts = [f"<h1>cnnlab run report: {html.escape(run.name)}</h1>"]
    model_name = str(cfg.get("model", {}).get("name", "?"))
    data_name = str(cfg.get("data", {}).get("name", "?"))
    parts.append(
        f"<p>{html.escape(model_name)} on {html.escape(data_name)} — "
        f"{len(hist)} epoch(s) in <code>{html.escape(str(run))}</code></p>"
    )

    # evaluation
    own: set[str] = set()
    skipped = ""
    try:
        ev = evaluate_run(run, which, data_dir=data_dir, device=device)
    except CnnlabError as e:
        ev = None
        skipped = f'<p class="note">Test-set evaluation skipped: {html.escape(str(e))}</p>'

    # summary + verdict
    sizes = {}
    if ev is not None:
        sizes = {"n_train": ev["n_train"], "n_held": ev["n_val"] or ev["n"]}
    v = verdict(hist, len(ev["classes"]) if ev is not None else None, **sizes)
    if info is not None:
        info["verdict"] = v
        info["evaluation"] = ev
    if hist:
        last = hist[-1]
        rows = []
        if ev is not None:  # the number `cnnlab eval` prints: the same function
            rows.append(
                [
                    f"test accuracy ({ev['checkpoint_file']} checkpoint, epoch "
                    f"{ev['summary']['epoch']}; as `cnnlab eval`)",
                    _pct(ev["accuracy"]),
                ]
            )
        rows += [
            ["test accuracy during training, last epoch", _pct(last["test_acc"])],
            ["test loss during training, last epoch", f"{last['test_loss']:.4f}"],
            ["train accuracy, last epoch", _pct(last["train_acc"])],
        ]
        if "val_acc" in last:
            best = best_epoch(hist)
            rows.append(["validation accuracy, last epoch", _pct(last["val_acc"])])
            rows.append(["best epoch (by validation accuracy)", f"{best['epoch']}"])
        else:
            rows.append(["best epoch", "none: no validation split (the last epoch is used)"])
        rows.append(["time (training; wall: training + per-epoch evaluation)", time_text(hist)])
        parts.append("<h2>Summary</h2>" + _table(rows, ["metric", "value"]))
    parts.append(f'<p class="verdict {v["kind"]}"><b>Verdict:</b> {html.escape(v["text"])}</p>')
    parts.append(
        '<p class="note">Rule: overfitting when the held-out (validation, else test) loss has '
        f"risen ≥ {OVERFIT_LOSS_RISE - 1:.0%} above its minimum and train accuracy exceeds "
        f"held-out accuracy by ≥ {OVERFIT_GAP * 100:.0f} points; a gap ≥ "
        f"{LARGE_GAP * 100:.0f} points without a rising loss is a generalisation gap. "
        "Train accuracy is measured during the epoch, on augmented images.</p>"
    )
    if hist:
        parts.append("<h2>Learning curves</h2>" + _img(plot_curves({run.name: hist}), "curves"))
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
        parts.append(_table([[fmt(k, m[k]) if k in m else "–" for k in keys] for m in hist], keys))

    if skipped:
        parts.append(skipped)
    if ev is not None:
        parts.append(
            f"<h2>Test set ({ev['n']:,} images, {which} checkpoint, epoch "
            f"{ev['summary']['epoch']})</h2>"
            + _table(
                [
                    ["accuracy", _pct(ev["accuracy"])],
                    *balance_rows(ev),
                    ["top-5", _pct(ev["top5"])],
                    ["loss", f"{ev['loss']:.4f}"],
                    ["ECE (15 bins)", f"{ev['ece']:.4f}"],
                ],
                ["metric", "value"],
            )
        )
        parts.append(
            "<h3>Confusion matrix</h3>"
            + _img(plot_confusion(ev["confusion"], ev["classes"]), "confusion matrix")
        )
        parts.append(
            "<h3>Per-class accuracy</h3>"
            + _img(plot_per_class(ev["per_class"]), "per-class accuracy")
            + per_class_table(ev)
        )
        parts += worst_mistakes_section(ev)
        parts.append(
            "<h3>Calibration (reliability diagram)</h3>"
            + _img(plot_reliability(ev["reliability"], ev["ece"]), "reliability")
            + _table(
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

    # gradient flow
    grads = read_gradients(run)
    if grads:
        parts.append("<h2>Gradient flow</h2>" + _img(plot_gradients(grads), "gradient flow"))
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
            _table(
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
            _table(
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

    # regularisation + semi-supervised
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
        + _table(reg, ["setting", "value"])
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
            rows.append(["test accuracy (final)", _pct(hist[-1]["test_acc"])])
        base = find_baseline(run, cfg)
        if base is not None:
            bh = classifier_history(base)
            if bh:
                rows.append(
                    [
                        f"supervised-only baseline ({base.name}, same labels, augmentation, steps)",
                        _pct(bh[-1]["test_acc"]),
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
        parts.append("<h2>Semi-supervised</h2>" + _table(rows, ["", ""]))

    # model summary
    if ev is not None:
        s = ev["summary"]
        parts.append(
            f"<h2>Model summary</h2><p>{s['params']:,} parameters, {s['macs']:,} MACs per "
            "image</p>"
            + _table(
                [[n, t_, p, r] for n, t_, p, r in s["layers"]],
                ["layer", "type", "params", "definition"],
            )
        )

    # other analyses in the run directory
    jsons, pngs = _extra_files(run, own)
    if jsons or pngs:
        parts.append("<h2>Other analyses in this run</h2>")
        for name, obj in jsons:
            parts.append(f"<h3>{html.escape(name)}</h3>" + _json_block(obj))
        for rel, b64 in pngs:
            parts.append(f"<h3>{html.escape(rel)}</h3>" + _img(b64, rel))

    parts.append(
        "<h2>Resolved config</h2><pre>"
        + html.escape(yaml.safe_dump(cfg, sort_keys=False))
        + "</pre>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnlab report "
        f"{html.escape(run.name)}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


def write_report(
    run,
    which: str = "best",
    data_dir=None,
    out=None,
    info: dict | None = None,
    device: str = "auto",
    **_,
) -> Path:
    """Render and write ``<run>/report.html`` atomically; returns its path."""
    text = render_report(run, which, data_dir, info, device)
    path = Path(out) if out else Path(run) / "report.html"
    atomic_write_text(path, text)
    return path


def render_compare(runs: list[str | os.PathLike]) -> tuple[str, list[list], list[str], list[list]]:
    """Overlaid curves + a metrics table for several runs → (HTML, rows, header)."""
    paths = [Path(r) for r in runs]
    hists, cfgs = {}, {}
    for p in paths:
        if not p.is_dir():
            raise CnnlabError(f"run directory {str(p)!r} not found (see `cnnlab runs`)")
        h = classifier_history(p)
        if not h:
            raise CnnlabError(
                f"{str(p)!r}: no finished epoch in its metrics.jsonl (not a run directory, "
                "no epoch finished yet, or the file is damaged)"
            )
        name = p.name if p.name not in hists else str(p)
        hists[name], cfgs[name] = h, run_config(p)
    # the validation-selected epoch and the last one, never a maximum over test epochs
    header = [
        "run",
        "epochs",
        "best epoch (by val acc)",
        "val acc (best)",
        "test acc (best)",
        "test acc (last)",
        "train acc (last)",
        "gap (pts, train − held-out, last)",
        "train s",
        "wall s",
        "verdict",
    ]
    rows = []
    for name, h in hists.items():
        last, best = h[-1], best_epoch(h)
        v = verdict(h)
        train_s, wall_s = run_seconds(h)
        rows.append(
            [
                name,
                last["epoch"],
                best["epoch"] if best else "– (no val split)",
                f"{best['val_acc']:.4f}" if best else "–",
                f"{best['test_acc']:.4f}" if best else "–",
                f"{last['test_acc']:.4f}",
                f"{last['train_acc']:.4f}",
                f"{v['gap'] * 100:.1f}",
                f"{train_s:.1f}",
                f"{wall_s:.1f}",
                v["kind"],
            ]
        )
    # the config keys that differ between the runs
    flat = {}
    for name, c in cfgs.items():
        flat[name] = {
            f"{s}.{k}": v
            for s, body in c.items()
            if isinstance(body, dict)
            for k, v in body.items()
            if k not in ("name",) or s != "run"
        }
    keys = sorted({k for f in flat.values() for k in f})
    diff = [
        k
        for k in keys
        if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1
        and not k.startswith("run.")
    ]
    diff_rows = [[k] + [str(flat[n].get(k, "–")) for n in hists] for k in diff]
    html_parts = [
        "<h1>cnnlab compare</h1>",
        _img(plot_curves(hists), "curves"),
        _table(rows, header),
        "<h2>Config differences</h2>",
        _table(diff_rows, ["key", *hists]) if diff_rows else "<p>none</p>",
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnlab compare</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(html_parts) + "</body></html>"
    )
    return page, rows, header, diff_rows


__all__ = ["render_compare", "render_report", "verdict", "write_report", "torch"]
