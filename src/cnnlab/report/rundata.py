"""What the report reads from a run directory besides its checkpoint: the resolved config,
the classifier's epochs, the supervised-only twin of a semi-supervised run, and the other
analyses left there."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.runs.layout import read_metrics, run_config, run_kind

KNOWN_FILES = ("robustness.json", "ood.json", "eval.json", "sweep.json")


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


def extra_files(run: Path) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
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
        if rel.startswith("checkpoints/") or p.stat().st_size > 5_000_000:
            continue
        pngs.append((rel, base64.b64encode(p.read_bytes()).decode("ascii")))
    return jsons, pngs[:40]
