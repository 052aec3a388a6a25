"""The run report: one self-contained HTML file (``runs/<name>/report.html``), and the page
``cnnlab compare`` writes for several runs.

Every figure is a PNG embedded as base64, there is no external asset, so the file opens
offline and can be mailed. Sections: summary and generalisation verdict
(``report/verdict.py`` holds the rule), learning curves, confusion matrix, per-class
accuracy, the worst mistakes (the highest-loss test images and the most-confused class
pairs with examples), reliability diagram + ECE, gradient flow (when ``gradients.jsonl``
exists), regularisation and semi-supervised settings with the supervised-only baseline,
model summary (layers, parameters, MACs), the resolved config, and whatever other
analyses left in the run directory (``robustness.json``, ``ood.json``, ``eval.json``,
their PNGs).

The pieces: ``rundata`` reads the run directory, ``evaluation`` scores its checkpoint as
``cnnlab eval`` does, ``plots`` draws, ``sections`` and ``testset`` write the sections,
``markup`` the page around them; this module puts them in order.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.report.evaluation import evaluate_run
from cnnlab.report.markup import img, page, table
from cnnlab.report.plots import plot_curves
from cnnlab.report.rundata import classifier_history
from cnnlab.report.sections import (
    config_section,
    curves_section,
    extras_section,
    gradients_section,
    settings_section,
    summary_section,
    title_section,
)
from cnnlab.report.testset import model_section, test_set_section
from cnnlab.report.verdict import verdict
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.layout import run_config
from cnnlab.runs.summary import best_epoch, run_seconds


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
    skipped = []
    try:
        ev = evaluate_run(run, which, data_dir=data_dir, device=device)
    except CnnlabError as e:
        ev = None
        skipped = [f'<p class="note">Test-set evaluation skipped: {html.escape(str(e))}</p>']
    sizes = {}
    if ev is not None:
        sizes = {"n_train": ev["n_train"], "n_held": ev["n_val"] or ev["n"]}
    v = verdict(hist, len(ev["classes"]) if ev is not None else None, **sizes)
    if info is not None:
        info["verdict"] = v
        info["evaluation"] = ev
    parts = title_section(run, hist, cfg)
    parts += summary_section(hist, ev, v)
    parts += curves_section(run.name, hist)
    parts += skipped
    if ev is not None:
        parts += test_set_section(ev, which)
    parts += gradients_section(run)
    parts += settings_section(run, cfg, hist)
    if ev is not None:
        parts += model_section(ev)
    parts += extras_section(run)
    parts += config_section(cfg)
    return page(f"cnnlab report {run.name}", parts)


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


# -- cnnlab compare -------------------------------------------------------------------------

COMPARE_HEADER = [
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


def render_compare(runs: list[str | os.PathLike]) -> tuple[str, list[list], list[str], list[list]]:
    """Overlaid curves + a metrics table for several runs → (HTML, rows, header, the rows
    of the config keys that differ)."""
    hists, cfgs = {}, {}
    for p in map(Path, runs):
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
    rows = [compare_row(name, h) for name, h in hists.items()]
    diff_rows = config_differences(cfgs)
    parts = [
        "<h1>cnnlab compare</h1>",
        img(plot_curves(hists), "curves"),
        table(rows, COMPARE_HEADER),
        "<h2>Config differences</h2>",
        table(diff_rows, ["key", *hists]) if diff_rows else "<p>none</p>",
    ]
    return page("cnnlab compare", parts), rows, list(COMPARE_HEADER), diff_rows


def compare_row(name: str, h: list[dict]) -> list:
    """One run's row: the validation-selected epoch and the last one, never a maximum over
    test epochs."""
    last, best = h[-1], best_epoch(h)
    v = verdict(h)
    train_s, wall_s = run_seconds(h)
    return [
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


def config_differences(cfgs: dict[str, dict]) -> list[list]:
    """``[key, value per run...]`` for each config key whose value differs between the runs
    (the run section's keys left out)."""
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
    return [[k] + [str(flat[n].get(k, "–")) for n in cfgs] for k in diff]
