"""What a sweep writes in its study folder: ``trials.csv`` (every trial, any worker's),
``best.yaml`` (a recipe with the best trial's values) and the plots ``history.png`` and
``importance.png``."""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import yaml

from cnnlab.config import Config, set_value
from cnnlab.figures import png_bytes, pyplot
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text


def summarize(st, base: Config, study_dir: Path, plots: bool = True) -> dict:
    from optuna.trial import TrialState

    rows = []
    for t in st.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):  # claimed in a race for the budget's last slot, not run
            continue
        dur = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if (t.datetime_complete and t.datetime_start)
            else math.nan
        )
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "baseline": bool(t.user_attrs.get("baseline")),  # the recipe's own values
                "val_acc": t.value,
                "test_acc": t.user_attrs.get("test_acc"),
                "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
                "worker": t.user_attrs.get("worker"),
                "seconds": dur,
                **{k: v for k, v in t.params.items()},
            }
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = study_dir / f".trials.csv.{os.getpid()}.tmp"  # workers may write it at once
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, study_dir / "trials.csv")
    out = {"study": st.study_name, "dir": str(study_dir), "trials": rows, "best": None}
    complete = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = st.best_trial
        cfg = base.copy()
        for k, v in best.params.items():
            set_value(cfg, k, v)
        cfg.run.name = None
        cfg.run.runs_dir = "runs"
        d = cfg.to_dict()
        header = (
            f"# best of study {st.study_name!r}: trial {best.number}, val acc {best.value:.4f}"
            + (
                " (the recipe's own values: nothing beat it)"
                if best.user_attrs.get("baseline")
                else ""
            )
            + "\n"
            f"# params: {best.params}\n"
        )
        atomic_write_text(study_dir / "best.yaml", header + yaml.safe_dump(d, sort_keys=False))
        out["best"] = {
            "trial": best.number,
            "val_acc": best.value,
            "params": best.params,
            "recipe": str(study_dir / "best.yaml"),
        }
    out["plots"] = plot_study(st, study_dir) if (complete and plots) else []
    return out


def plot_study(st, study_dir: Path) -> list[str]:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib)."""
    from optuna.visualization import matplotlib as ovm

    pyplot()  # headless, before optuna draws

    made = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        for fname, fn in (
            ("history.png", ovm.plot_optimization_history),
            ("importance.png", ovm.plot_param_importances),
        ):
            try:
                ax = fn(st)
                fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
                fig.set_size_inches(8, 4.5)
                png = png_bytes(fig, dpi=100, tight_layout=True)
                atomic_write_bytes(study_dir / fname, png)
                made.append(str(study_dir / fname))
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                warnings.warn(f"{fname}: {e}", stacklevel=1)  # e.g. too few trials
    return made
