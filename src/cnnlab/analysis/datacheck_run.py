"""A data check from its target to its files: a folder of images or a dataset by name is
scanned and checked (:mod:`cnnlab.analysis.datacheck`) with a progress bar, and the result
is written — ``datacheck.json`` and the contact sheets, each file all or nothing — into an
output folder that never replaces an earlier check's. What ``cnnlab data check`` calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cnnlab.analysis import datacheck as dc
from cnnlab.data.datasets import DATASETS, load_dataset
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.progress import Phases
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text


@dataclass
class CheckedData:
    check: dc.DataCheck
    result: dict  # what datacheck.json holds (DataCheck.to_dict)
    out: Path  # the folder written
    sheets: list[str]  # the contact sheets written, <out>/<name>.png


def check_settings(limit: int | None, near: int, max_mad: float, folds: int, top: int) -> None:
    for name, v, lo in (("--limit", limit, 1), ("--folds", folds, 2), ("--top", top, 1)):
        if v is not None and v < lo:
            raise CnnlabError(f"{name} must be ≥ {lo}")
    if not 0 <= near <= 64 or max_mad < 0:
        raise CnnlabError("--near must be in 0..64 and --max-mad ≥ 0")


def output_folder(out: str | None, runs_dir: str, name: str) -> Path:
    """``out`` as given (a folder), else ``<runs_dir>/datacheck-<name>``, numbered
    (``-2``, ``-3``, ...) rather than over an earlier check."""
    if out:
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise CnnlabError(f"--out {str(p)!r} is a file; give a folder")
        return p
    p = Path(runs_dir) / f"datacheck-{name}"
    stem, i = p.name, 2
    while p.exists():
        p, i = p.with_name(f"{stem}-{i}"), i + 1
    return p


def check_target(
    target: str,
    data_dir=None,
    limit: int | None = None,
    near: int = 2,
    max_mad: float = 5.0,
    folds: int = 3,
    labels: bool = True,
    top: int = 48,
    out: str | None = None,
    runs_dir: str = "runs",
    quiet: bool = False,
) -> CheckedData:
    """Check ``target`` — an existing folder, else a dataset name — and write the result.
    ``limit``: images per split; ``top``: suspects per contact sheet; ``quiet``: no
    progress bar. The other settings are :func:`cnnlab.analysis.datacheck.check`'s."""
    check_settings(limit, near, max_mad, folds, top)
    path = Path(target)
    is_folder = path.exists() or target not in DATASETS.names()
    if is_folder and not path.exists() and "/" not in target:
        raise CnnlabError(
            f"{target!r} is neither a folder nor a dataset; "
            + choices_msg("dataset", target, DATASETS.names()).split("; ", 1)[1]
        )
    out_dir = output_folder(out, runs_dir, path.name if is_folder else target)
    with Phases(quiet=quiet) as bar:
        if is_folder:
            im = dc.scan_folder(path, limit, progress=lambda d, t: bar("reading", d, t))
        else:
            im = dc.scan_dataset(load_dataset(target, data_dir), limit)
        res = dc.check(im, near, max_mad, folds, labels, progress=bar)
    result = res.to_dict()
    sheets = res.sheets(top)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in sheets.items():
        atomic_write_bytes(out_dir / f"{name}.png", png)
    atomic_write_text(out_dir / "datacheck.json", json.dumps(result, indent=1) + "\n")
    return CheckedData(res, result, out_dir, list(sheets))


def summary_rows(result: dict) -> list[list]:
    """(check, what was found) for each check of a result, as one line of text each."""
    s = result["summary"]
    rows = [
        ["images", f"{s['images']:,} ({', '.join(f'{k} {v:,}' for k, v in s['splits'].items())})"],
        ["classes", s["classes"]],
        ["unreadable files", s["unreadable"]],
        ["sizes", ", ".join(f"{k} ({v:,})" for k, v in list(s["sizes"].items())[:5])],
        ["modes", ", ".join(f"{k} ({v:,})" for k, v in s["modes"].items())],
        [
            "imbalance (largest/smallest class)",
            ", ".join(f"{k} {v:.2f}" for k, v in s["imbalance_ratio"].items()),
        ],
        [
            "exact duplicates",
            f"{s['exact_duplicate_groups']} groups, {s['exact_duplicates_across_splits']} across "
            f"splits, {s['exact_duplicates_with_other_labels']} with other labels",
        ],
        [
            "near-duplicates",
            f"{s['near_duplicate_pairs']} pairs, {s['near_duplicates_across_splits']} across "
            f"splits, {s['near_duplicates_with_other_labels']} with other labels",
        ],
        ["junk (probably not photos)", s["junk"]],
    ]
    v = s.get("label_check")
    if v is not None and not v["ok"]:
        rows.append(["likely label errors", f"not judged: {v['why']}"])
    elif "label_issues" in s:
        rows.append(
            [
                "likely label errors",
                f"{s['label_issues']:,} (cleanlab; the quick model's out-of-fold accuracy "
                f"{100 * v['accuracy']:.1f} %, 95 % interval {100 * v['interval'][0]:.1f}-"
                f"{100 * v['interval'][1]:.1f} %, chance {100 * v['chance']:.1f} %, "
                f"calibration error {v['ece']:.3f})",
            ]
        )
    return rows
