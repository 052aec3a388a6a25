"""Accuracy under corruptions and attacks, and out-of-distribution detection, for a run.

Everything acts on [0, 1] pixels: the test set is converted as the run's loader does
(resize/grayscale), corrupted or attacked batched with torch on the run's device, then
normalised inside :class:`~cnnlab.analysis.attacks.Normalized`. Each (corruption, level)
draws from its own generator seeded from ``seed``, so one command gives the same numbers
every time, and a subset of corruptions gives the same numbers as the full report.

Outputs in the run directory: ``robustness.json`` (all figures), ``robustness.png``
(accuracy-vs-severity and accuracy-vs-ε curves) and ``robustness.html`` (a self-contained
section: table + embedded curves, for the run's report).

The work is split by job: :mod:`~cnnlab.analysis.corruptions` corrupts images,
:mod:`~cnnlab.analysis.robustness_eval` runs the sweep, :mod:`~cnnlab.analysis.robustness_report`
draws and tabulates it, :mod:`~cnnlab.analysis.ood_run` runs the out-of-distribution check;
this module reads the options, runs the sweep (:func:`robustness`) and re-exports their
public names.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from cnnlab.analysis.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from cnnlab.analysis.ood_run import OOD_NOISE, ood, ood_rows
from cnnlab.analysis.robustness_eval import ATTACKS, RunEval, measure
from cnnlab.analysis.robustness_report import (
    attack_rows,
    html_section,
    plot_robustness,
    table_rows,
)
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.progress import progress
from cnnlab.runs.files import atomic_write_text

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "DEFAULT_EPS",
    "OOD_NOISE",
    "ROBUSTNESS_FILES",
    "SEVERITIES",
    "attack_rows",
    "corrupt",
    "html_section",
    "ood",
    "ood_rows",
    "parse_eps",
    "parse_levels",
    "parse_list",
    "plot_robustness",
    "robustness",
    "table_rows",
]

DEFAULT_EPS = (0.02, 0.05, 0.1, 0.2)
ROBUSTNESS_FILES = ("robustness.json", "robustness.png", "robustness.html")


def parse_list(text: str | None, valid: tuple[str, ...], kind: str) -> tuple[str, ...]:
    if text in (None, "", "all"):
        return valid
    out = tuple(p.strip() for p in str(text).split(",") if p.strip())
    for p in out:
        if p not in valid:
            raise CnnlabError(choices_msg(kind, p, valid))
    return out


def parse_levels(text: str | None) -> tuple[int, ...]:
    if text in (None, "", "all"):
        return (1, 2, 3, 4, 5)
    try:
        levels = tuple(int(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        raise CnnlabError(f"severity must be integers 1 to 5 (e.g. 1,3,5), got {text!r}") from None
    for lv in levels:
        if not 1 <= lv <= 5:
            raise CnnlabError(f"severity {lv} out of range; choose 1 to 5")
    return levels


def parse_eps(text) -> tuple[float, ...]:
    if text in (None, ""):
        return DEFAULT_EPS
    if isinstance(text, (list, tuple)):
        vals = tuple(float(v) for v in text)
    else:
        try:
            vals = tuple(float(p) for p in str(text).split(",") if p.strip())
        except ValueError:
            raise CnnlabError(
                f"--eps needs numbers in (0, 1], e.g. 0.05,0.1; got {text!r}"
            ) from None
    for e in vals:
        if not 0 < e <= 1:
            raise CnnlabError(f"ε {e} out of range; attacks use pixel scale, choose 0 < ε ≤ 1")
    return vals


def robustness(
    target,
    corruptions: str | None = None,
    severity: str | None = None,
    attacks: str | None = None,
    eps=None,
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    data_dir=None,
    batch_size: int = 500,
    save: bool = True,
    out_dir=None,
) -> dict:
    """Accuracy of a run under corruptions (per severity) and FGSM/PGD (per ε).

    PGD: ``pgd_steps`` steps of size ``pgd_step_size`` (default ε/4), random start.
    """
    names = () if corruptions == "none" else parse_list(corruptions, CORRUPTIONS, "corruption")
    levels = parse_levels(severity)
    atk = parse_list(attacks, ATTACKS, "attack") if attacks != "none" else ()
    eps_list = parse_eps(eps)
    if pgd_steps < 1:
        raise CnnlabError(f"--pgd-steps must be ≥ 1, got {pgd_steps}")
    if limit is not None and limit < 1:
        raise CnnlabError(f"--limit must be ≥ 1, got {limit}")
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be ≥ 1, got {batch_size}")
    t0 = time.perf_counter()
    ev = RunEval(target, device, data_dir, limit, batch_size)
    passes = 1 + len(names) * len(levels) + len(atk) * len(eps_list)
    with progress("robustness: clean", passes * math.ceil(ev.n / batch_size)) as ev.bar:
        res = measure(ev, names, levels, atk, eps_list, pgd_steps, pgd_step_size, seed)
    res["seconds"] = time.perf_counter() - t0
    if save:
        out = Path(out_dir) if out_dir else ev.run_dir
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "robustness.json", json.dumps(res, indent=1))
        png = plot_robustness(res, out / "robustness.png")
        atomic_write_text(out / "robustness.html", html_section(res, png))
        res["outputs"] = [str(out / f) for f in ROBUSTNESS_FILES]
    return res
