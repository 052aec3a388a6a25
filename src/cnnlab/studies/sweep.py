"""Hyper-parameter search with Optuna: TPE sampler, median pruner, SQLite (or any RDB) study.

The search space is a YAML mapping of config keys to distributions::

    optim.lr:            {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    optim.weight_decay:  {type: float, low: 1.0e-6, high: 1.0e-3, log: true}
    train.batch_size:    {type: categorical, choices: [64, 128, 256]}
    train.label_smoothing: {type: float, low: 0.0, high: 0.2}
    model.activation:    {type: categorical, choices: [tanh, relu, elu]}
    train.epochs:        {type: int, low: 2, high: 4}          # int: low, high[, step, log]

Each trial trains the recipe (+ ``--set`` overrides) with the sampled values. The
objective is the best **validation** accuracy (the sweep carves ``data.val_fraction``,
0.1 unless the recipe sets one, from the training set: the test set never chooses a
config). After every epoch the trial reports its validation accuracy, and the median
pruner stops trials that fall below the median of earlier trials at the same epoch.

The study lives in ``<runs>/<study>/study.db`` (SQLite) unless ``--storage`` names another
database (e.g. PostgreSQL shared by several machines); re-running the same command resumes
it until ``--trials`` trials have finished (complete or pruned), and several processes may
run it at once. A heartbeat marks the trials of a killed process as failed.
Outputs in ``<runs>/<study>/``: ``trials.csv``, ``best.yaml`` (a recipe), ``history.png``,
``importance.png``, and each trial's run directory under ``trials/``.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import shutil
import statistics
import warnings
from pathlib import Path

import yaml

from cnnlab.config import Config, find_recipe, get_value, set_value
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.base import option_default
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.layout import read_metrics
from cnnlab.train.api import build_config, fit
from cnnlab.train.callbacks import Callback
from cnnlab.train.validate import validate

TYPES = ("float", "int", "categorical")


def load_space(path: str | os.PathLike) -> dict[str, dict]:
    """A search space by path or by a shipped name (``space-lenet5``), as recipes are found."""
    try:
        p = find_recipe(path)
    except ConfigError:
        raise ConfigError(f"search space {str(path)!r} not found") from None
    try:
        space = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
    return check_space(space, str(p))


def check_space(space, where: str = "search space") -> dict[str, dict]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a mapping of config keys to distributions")
    probe = Config()
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ConfigError(
                f"{where}: {key}: needs type one of {', '.join(TYPES)} "
                "(e.g. {type: float, low: 1e-4, high: 1e-2, log: true})"
            )
        t = spec["type"]
        if t == "categorical":
            ch = spec.get("choices")
            if not isinstance(ch, list) or not ch:
                raise ConfigError(f"{where}: {key}: categorical needs a non-empty choices list")
            sample = ch[0]
        else:
            if "low" not in spec or "high" not in spec:
                raise ConfigError(f"{where}: {key}: {t} needs low and high")
            try:
                lo, hi = float(spec["low"]), float(spec["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {key}: low/high must be numbers") from None
            if not lo < hi or (spec.get("log") and lo <= 0):
                raise ConfigError(f"{where}: {key}: needs low < high (and low > 0 with log)")
            sample = int(lo) if t == "int" else lo
        set_value(probe, key, sample)  # unknown keys fail here, with the valid ones listed
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    out = {}
    for key, s in space.items():
        t = s["type"]
        if t == "float":
            out[key] = trial.suggest_float(
                key, float(s["low"]), float(s["high"]), log=bool(s.get("log", False))
            )
        elif t == "int":
            out[key] = trial.suggest_int(
                key,
                int(s["low"]),
                int(s["high"]),
                step=int(s.get("step", 1)),
                log=bool(s.get("log", False)),
            )
        else:
            out[key] = trial.suggest_categorical(key, s["choices"])
    return out


def baseline_params(base: Config, space: dict[str, dict]) -> dict | None:
    """The recipe's own values for the space's keys, when every one lies inside the space
    (then the sweep tries the recipe first, so its best is never worse than the recipe
    under the sweep's own budget); None when one lies outside."""
    out = {}
    for key, s in space.items():
        v = get_value(base, key)
        if v is None and key.startswith("model."):  # unset: the builder's default
            v = option_default(base.model.name, key.split(".")[-1])
        if s["type"] == "categorical":
            if v not in s["choices"]:
                return None
        else:
            try:
                x = float(v)
            except (TypeError, ValueError):
                return None
            if not float(s["low"]) <= x <= float(s["high"]):
                return None
            v = int(v) if s["type"] == "int" else x
        out[key] = v
    return out


class SweepInterrupted(Exception):
    """A trial's training was stopped by a signal: the whole sweep stops."""


class OptunaPruning(Callback):
    """Report the validation accuracy of each epoch; stop the trial when the pruner says so."""

    def __init__(self, trial, monitor: str = "val_acc"):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        import optuna

        v = m.get(self.monitor)
        if v is None:
            return
        self.trial.report(v, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.monitor} {v:.4f})")


def storage_for(url: str | None, study_dir: Path):
    import optuna
    from optuna import storages
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected a database URL such as sqlite:///study.db or "
            "postgresql://user:pass@host/db"
        )
    # optuna ≥ 4.9 renamed the stale-trial retry callback and its keyword
    if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters:
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(1)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
    try:
        return RDBStorage(url, heartbeat_interval=30, grace_period=120, **retry)
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as e:
        raise ConfigError(f"--storage {url!r}: cannot open the study database ({e})") from None


def run_sweep(
    recipe: str | None,
    space: dict | str | os.PathLike,
    trials: int,
    *,
    study: str | None = None,
    storage: str | None = None,
    runs_dir: str = "runs",
    overrides: list[str] | None = None,
    seed: int = 0,
    timeout: float | None = None,
    quiet: bool = True,
    objective_hook=None,
    baseline: bool = True,
    prune_after: int | None = None,
    confirm: int = 0,
    confirm_top: int = 1,
) -> dict:
    """Run (or resume) a study until ``trials`` trials have finished; returns a summary."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if trials < 1:
        raise ConfigError("--trials must be ≥ 1")
    if confirm < 0:
        raise ConfigError("--confirm needs a number of seeds ≥ 1 (or 0 for no confirmation)")
    if confirm_top < 1:
        raise ConfigError(f"--confirm-top needs a number of trials ≥ 1, got {confirm_top}")
    space = space if isinstance(space, dict) else load_space(space)
    space = check_space(space)
    base = validate(build_config(None, recipe, overrides))
    if base.data.val_fraction <= 0:
        base.data.val_fraction = 0.1
    name = study or (Path(recipe).stem if recipe else base.model.name) + "-sweep"
    study_dir = Path(runs_dir) / name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stor = storage_for(storage, study_dir)
    if prune_after is None:  # early epochs of a one-cycle schedule rank configs poorly
        prune_after = max(1, base.train.epochs // 3)
    warmup = max(0, int(prune_after))
    try:
        existing = len(optuna.load_study(study_name=name, storage=stor).trials)
    except KeyError:
        existing = 0
    st = optuna.create_study(
        study_name=name,
        storage=stor,
        direction="maximize",
        # offset by the trials already in the study: a second process (or a resumed sweep)
        # must not replay the first one's random start-up trials
        sampler=optuna.samplers.TPESampler(seed=seed + existing),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
        load_if_exists=True,
    )

    if existing == 0 and baseline:
        params = baseline_params(base, space)
        if params is not None:
            st.enqueue_trial(params, user_attrs={"baseline": True})

    def objective(trial) -> float:
        params = suggest(trial, space)
        cfg = base.copy()
        for k, v in params.items():
            set_value(cfg, k, v)
        cfg.run.runs_dir = str(study_dir / "trials")
        cfg.run.name = f"trial-{trial.number:03d}"
        cfg.train.report = False
        cfg.train.diagnostics = False
        if objective_hook is not None:
            objective_hook(trial, cfg)
        res = fit(cfg, quiet=quiet, callbacks=[OptunaPruning(trial)])
        if res.interrupted:  # Ctrl-C / SIGTERM stops the sweep, not just this trial
            raise SweepInterrupted(trial.number)
        best = max(m["val_acc"] for m in res.history)
        trial.set_user_attr("test_acc", res.history[-1]["test_acc"])
        trial.set_user_attr("epochs", len(res.history))
        trial.set_user_attr("run_dir", str(res.run_dir))
        if not quiet:
            print(f"trial {trial.number}: val acc {best:.4f}  {params}")
        return best

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = len(st.get_trials(deepcopy=False, states=done))
    if finished < trials:
        try:
            st.optimize(
                objective,
                n_trials=trials - finished,
                timeout=timeout,
                callbacks=[MaxTrialsCallback(trials, states=done)],
                catch=(ConfigError,),  # a config that cannot be built fails that trial only
                gc_after_trial=True,
            )
        except SweepInterrupted as e:  # the trial is marked failed; the study stays resumable
            raise CnnlabError(
                f"sweep stopped by a signal during trial {e.args[0]}; run the same command "
                "to resume it (finished trials are kept)"
            ) from None
    # best.yaml = the recipe + the best parameters: the sweep's per-trial budget (--set
    # overrides such as train_limit/epochs) and its validation split stay out of it
    keep = [o for o in overrides or [] if o.split("=", 1)[0] in ("data.data_dir", "data.name")]
    out = summarize(st, build_config(None, recipe, keep), study_dir)
    if confirm > 0 and out["best"] is not None:
        # every --set but the trials' budget: the confirming runs are full runs
        rest = [o for o in overrides or [] if o.split("=", 1)[0] not in BUDGET_KEYS]
        try:
            out["confirm"] = confirm_best(st, build_config(None, recipe, rest),
                                          study_dir, confirm, quiet, confirm_top)  # fmt: skip
        except SweepInterrupted as e:
            raise CnnlabError(
                f"{e.args[0]} stopped by a signal; run the same command to resume (the "
                "finished trials and confirming runs are kept)"
            ) from None
    return out


# a trial's budget, set with --set: the confirming full runs drop these (and only these)
BUDGET_KEYS = (
    "train.epochs",
    "data.train_limit",
    "data.val_fraction",
    "train.steps_per_epoch",
    "train.early_stop",
)


def confirm_best(
    st, base: Config, study_dir: Path, seeds: int, quiet: bool = True, top: int = 1
) -> dict:
    """Full-budget runs (the recipe's epochs, all training images, no validation split) of
    the recipe and of the ``top`` best trials' configs (the recipe itself excluded),
    ``seeds`` seeds each: does a pick beat the recipe by more than the spread between
    seeds? Finished runs are reused, so an interrupted confirmation resumes. Writes
    ``confirm.json``."""
    from optuna.trial import TrialState

    ranked = sorted(
        (
            t
            for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None
        ),
        key=lambda t: -t.value,
    )
    # the picks: the best trial, then the next best, as long as they beat the recipe's own
    # trial on validation (a trial ranked below the recipe is not a candidate)
    base_val = next((t.value for t in ranked if t.user_attrs.get("baseline")), None)
    picks = [
        t
        for t in ranked
        if not t.user_attrs.get("baseline") and (base_val is None or t.value > base_val)
    ][: max(1, top)]
    configs = {"recipe": base}
    for t in picks:
        cfg = base.copy()
        for k, v in t.params.items():
            set_value(cfg, k, v)
        configs[f"trial-{t.number}"] = cfg
    res: dict = {"seeds": seeds, "epochs": base.train.epochs, "top": top, "configs": {}}
    for name, cfg0 in configs.items():
        accs = []
        for seed in range(seeds):
            cfg = cfg0.copy()
            cfg.train.seed = seed
            cfg.run.runs_dir = str(study_dir / "confirm")
            cfg.run.name = f"{name}-seed{seed}"
            cfg.train.report = False
            d = Path(cfg.run.runs_dir) / cfg.run.name
            done = read_metrics(d) if (d / "metrics.jsonl").is_file() else []
            if len(done) < cfg.train.epochs:
                if d.exists():  # an interrupted confirming run: start it again
                    shutil.rmtree(d)
                r = fit(cfg, quiet=quiet)
                if r.interrupted:
                    raise SweepInterrupted(f"confirm {cfg.run.name}")
                done = r.history
            accs.append(done[-1]["test_acc"])
        res["configs"][name] = {
            "test_acc": accs,
            "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "min": min(accs),
            "max": max(accs),
        }
    res["verdicts"] = {}
    r = res["configs"]["recipe"]
    for name in list(res["configs"])[1:]:
        b = res["configs"][name]
        diff = b["mean"] - r["mean"]
        # standard error of the difference of the two means (Welch)
        se = ((b["std"] ** 2 + r["std"] ** 2) / seeds) ** 0.5
        if b["min"] > r["max"]:
            v = f"{name} beats the recipe on every seed"
        elif b["max"] < r["min"]:
            v = f"{name} is worse than the recipe on every seed"
        else:
            v = f"{name} and the recipe overlap across seeds: no clear winner"
        res["verdicts"][name] = {"difference": diff, "stderr": se, "verdict": v}
    if not res["verdicts"]:
        res["verdict"] = "no trial beat the recipe's own trial: the recipe stands"
    else:
        top_name = max(res["verdicts"], key=lambda n: res["configs"][n]["mean"])
        res["best"] = top_name
        res["difference"] = res["verdicts"][top_name]["difference"]
        res["verdict"] = res["verdicts"][top_name]["verdict"]
    atomic_write_text(study_dir / "confirm.json", json.dumps(res, indent=1))
    return res


def summarize(st, base: Config, study_dir: Path) -> dict:
    from optuna.trial import TrialState

    rows = []
    for t in st.get_trials(deepcopy=False):
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
                "seconds": dur,
                **{k: v for k, v in t.params.items()},
            }
        )
    study_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = study_dir / ".trials.csv.tmp"
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
    out["plots"] = plot_study(st, study_dir) if complete else []
    return out


def plot_study(st, study_dir: Path) -> list[str]:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

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
                fig.tight_layout()
                tmp = study_dir / f".{fname}.tmp.png"
                fig.savefig(tmp, dpi=100)
                plt.close(fig)
                os.replace(tmp, study_dir / fname)
                made.append(str(study_dir / fname))
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                warnings.warn(f"{fname}: {e}", stacklevel=1)  # e.g. too few trials
    return made
