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

The pieces: ``studies.space`` (the search space), ``studies.storage`` (the study's
database and how workers share it), ``studies.sweep_outputs`` (the files above); this
module runs the trials and the confirming runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnlab.config import Config, set_value
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.progress import progress
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.layout import read_metrics
from cnnlab.studies.space import baseline_params, check_space, load_space, suggest
from cnnlab.studies.storage import (
    ClaimLock,
    SurplusTrial,
    budget_left,
    seeded_sampler,
    sqlite_file,
    storage_for,
)
from cnnlab.studies.sweep_outputs import summarize
from cnnlab.train.api import build_config, fit
from cnnlab.train.callbacks import Callback
from cnnlab.train.validate import validate


class SweepInterrupted(Exception):
    """A trial's training was stopped by a signal: the whole sweep stops."""


class OptunaPruning(Callback):
    """Report the validation accuracy of each epoch; when the pruner says so, stop the
    trial at the end of that epoch (its metrics and checkpoint written, as an early stop
    does) and note why: the objective then reports the trial pruned."""

    def __init__(self, trial, monitor: str = "val_acc"):
        self.trial, self.monitor = trial, monitor
        self.pruned: str | None = None

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        v = m.get(self.monitor)
        if v is None:
            return
        self.trial.report(v, epoch)
        if self.trial.should_prune():
            self.pruned = f"pruned at epoch {epoch} ({self.monitor} {v:.4f})"
            trainer.should_stop = True


class StudyBar(Callback):
    """The sweep's overall progress, in trials finished over all its workers, with an ETA;
    the trial running here adds the fraction of its epochs done, so the bar moves (and
    the ETA forms) during the first trial too."""

    def __init__(self, bar, total: int):
        self.bar, self.total, self.base = bar, total, 0.0

    def finished(self, n: int, best: float | None = None) -> None:
        self.base = float(min(n, self.total))
        if best is not None:
            self.bar.describe(f"sweep trials (best val acc {best:.4f})")
        self.bar.advance(self.base - self.bar.done)

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        done = min(self.base + epoch / max(1, trainer.cfg.train.epochs), self.total)
        self.bar.advance(done - self.bar.done)


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
    heartbeat: float = 120,
) -> dict:
    """Run (or resume, or join) a study until ``trials`` trials have finished, counted over
    every worker on the study; returns a summary.

    Several processes (on one machine with SQLite, on several with a database server) may
    run this at once on one study: each claims a trial only while the budget has room
    (finished + running + queued < ``trials``), and waits, rather than leaving, while the
    last trials run elsewhere, so a worker that dies mid-trial (its trial failed by the
    heartbeat and queued again) is replaced by another."""
    import optuna

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
    stor = storage_for(storage, study_dir, heartbeat)
    if prune_after is None:  # early epochs of a one-cycle schedule rank configs poorly
        prune_after = max(1, base.train.epochs // 3)
    first = baseline_params(base, space) if baseline else None
    st = open_study(name, stor, seed, max(0, int(prune_after)), first)
    objective = Objective(st, trials, space, base, study_dir, quiet, objective_hook,
                          ClaimLock(sqlite_file(storage, study_dir)))  # fmt: skip
    # trials shown one by one (--verbose) have their own bars: then no overall one
    with (
        hide_surplus_warnings(objective.surplus),
        progress("sweep trials", total=trials, enabled=quiet) as bar,
    ):
        objective.bar = StudyBar(bar, trials)
        try:
            run_trials(st, trials, objective, timeout, heartbeat)
        except SweepInterrupted as e:  # the trial is marked failed; the study stays resumable
            raise CnnlabError(
                f"sweep stopped by a signal during trial {e.args[0]}; run the same command "
                "to resume it (finished trials are kept)"
            ) from None
    plots = draws_plots(st, objective.worker)
    out = summarize(st, best_base(recipe, overrides), study_dir, plots=plots)
    if confirm > 0 and out["best"] is not None:
        out["confirm"] = confirm_full(st, recipe, overrides, study_dir, confirm, quiet,
                                      confirm_top)  # fmt: skip
    return out


def confirm_full(st, recipe: str | None, overrides: list[str] | None, study_dir: Path,
                 seeds: int, quiet: bool, top: int) -> dict:  # fmt: skip
    """:func:`confirm_best` with every ``--set`` but the trials' budget (the confirming
    runs are full runs); a signal is one clear error."""
    rest = [o for o in overrides or [] if o.split("=", 1)[0] not in BUDGET_KEYS]
    try:
        return confirm_best(st, build_config(None, recipe, rest), study_dir, seeds, quiet, top)
    except SweepInterrupted as e:
        raise CnnlabError(
            f"{e.args[0]} stopped by a signal; run the same command to resume (the "
            "finished trials and confirming runs are kept)"
        ) from None


def open_study(name: str, storage, seed: int, warmup: int, first: dict | None = None):
    """Create the study, or load it where another worker made it; the one that creates it
    queues ``first`` (the recipe's own values) as its first trial."""
    import optuna

    kw = dict(
        storage=storage,
        # per-trial seeds (see seeded_sampler); the constant liar makes TPE treat the
        # trials running on other workers as bad, so parallel workers spread out
        sampler=seeded_sampler(seed, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
    )
    try:  # of workers started at once, the one that creates the study queues the recipe
        st = optuna.create_study(study_name=name, direction="maximize", **kw)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, **kw)
    if first is not None:
        st.enqueue_trial(first, user_attrs={"baseline": True})
    return st


class Objective:
    """One trial of the study, as this worker runs it: claim it while the budget has room,
    train the recipe with the trial's values, report its best validation accuracy (or
    prune it). ``bar`` (a :class:`StudyBar`) follows the epochs."""

    def __init__(self, st, trials: int, space: dict, base: Config, study_dir: Path,
                 quiet: bool, hook, claim: ClaimLock):  # fmt: skip
        self.st, self.trials, self.space, self.base = st, trials, space, base
        self.study_dir, self.quiet, self.hook, self.claim = study_dir, quiet, hook, claim
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.surplus: set[int] = set()
        self.bar: StudyBar | None = None

    def __call__(self, trial) -> float:
        import optuna

        self.claim.release()  # this trial is ours now (see ClaimLock)
        trial.set_user_attr("worker", self.worker)
        if budget_left(self.st, self.trials, trial.number) <= 0:  # another worker took it
            self.surplus.add(trial.number)
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(trial.number)
        params = suggest(trial, self.space)
        cfg = self.trial_config(trial.number, params)
        if self.hook is not None:
            self.hook(trial, cfg)
        pruning = OptunaPruning(trial)
        res = fit(cfg, quiet=self.quiet, callbacks=[pruning, self.bar])
        if res.interrupted:  # Ctrl-C / SIGTERM stops the sweep, not just this trial
            raise SweepInterrupted(trial.number)
        best = max(m["val_acc"] for m in res.history)
        trial.set_user_attr("test_acc", res.history[-1]["test_acc"])
        trial.set_user_attr("epochs", len(res.history))
        trial.set_user_attr("run_dir", str(res.run_dir))
        if pruning.pruned:
            raise optuna.TrialPruned(pruning.pruned)
        if not self.quiet:
            print(f"trial {trial.number}: val acc {best:.4f}  {params}")
        return best

    def trial_config(self, number: int, params: dict) -> Config:
        """The recipe with the trial's values, its run in ``<study>/trials/trial-NNN``."""
        cfg = self.base.copy()
        for k, v in params.items():
            set_value(cfg, k, v)
        cfg.run.runs_dir = str(self.study_dir / "trials")
        cfg.run.name = f"trial-{number:03d}"
        cfg.train.report = False
        cfg.train.diagnostics = False
        return cfg


def run_trials(st, trials: int, objective: Objective, timeout: float | None,
               heartbeat: float) -> None:  # fmt: skip
    """Claim and run trials one at a time until the study has ``trials`` finished ones (or
    ``timeout`` seconds passed); wait while its last trials run on other workers."""
    import optuna
    from optuna.trial import TrialState

    claim, study_bar = objective.claim, objective.bar
    start, attempts, waiting = time.monotonic(), 0, False
    while attempts < 2 * trials:  # a bound where every trial fails (a broken config)
        if timeout is not None and time.monotonic() - start > timeout:
            break
        with claim:  # a dead worker's trial: failed, queued again (once)
            optuna.storages.fail_stale_trials(st)
        left = budget_left(st, trials)
        done = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        values = [t.value for t in done if t.value is not None]
        study_bar.finished(len(done), max(values) if values else None)
        if len(done) >= trials:
            break
        queued = st.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if left <= 0 and not queued:
            # the budget is claimed by trials running elsewhere: wait, in case one dies
            if not waiting:
                waiting = True
                print(
                    "the study's last trials run on other workers: waiting for them (a "
                    f"worker silent for {heartbeat:g} s has its trial run again here)",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(min(2.0, heartbeat / 4))
            continue
        attempts += 1
        with claim:  # released by the objective once the trial is claimed
            st.optimize(objective, n_trials=1, catch=(ConfigError, SurplusTrial),
                        gc_after_trial=True)  # fmt: skip


def draws_plots(st, worker: str) -> bool:
    """Of several workers, the one that finished the study's last trial draws the plots
    (``--report`` draws them again at any time)."""
    from optuna.trial import TrialState

    ended = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    last = max(ended, key=lambda t: t.datetime_complete) if ended else None
    return last is None or last.user_attrs.get("worker", worker) == worker


@contextmanager
def hide_surplus_warnings(numbers: set[int]) -> Iterator[None]:
    """A surplus trial is recorded as failed; Optuna's warning about it is noise."""
    quiet_surplus = _SurplusFilter(numbers)
    log = logging.getLogger("optuna")
    for h in log.handlers:
        h.addFilter(quiet_surplus)
    try:
        yield
    finally:
        for h in log.handlers:
            h.removeFilter(quiet_surplus)


def best_base(recipe: str | None, overrides: list[str] | None) -> Config:
    """What best.yaml starts from: the recipe and its data source, without the trials'
    budget (--set train_limit/epochs) or their validation split."""
    keep = [o for o in overrides or [] if o.split("=", 1)[0] in ("data.data_dir", "data.name")]
    return build_config(None, recipe, keep)


def sweep_report(
    recipe: str | None,
    *,
    study: str | None = None,
    storage: str | None = None,
    runs_dir: str = "runs",
    overrides: list[str] | None = None,
) -> dict:
    """The summary of a study as it stands (trials.csv, best.yaml, plots), running nothing:
    what any worker, or anyone holding the database URL, sees."""
    import optuna

    base = build_config(None, recipe, overrides)
    name = study or (Path(recipe).stem if recipe else base.model.name) + "-sweep"
    study_dir = Path(runs_dir) / name
    if storage is None and not (study_dir / "study.db").is_file():
        raise ConfigError(
            f"no study {name!r} in {study_dir}: give its --study, --runs-dir or --storage"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=name, storage=storage_for(storage, study_dir))
    except KeyError:
        raise ConfigError(f"no study {name!r} in {storage}: give its --study") from None
    return summarize(st, best_base(recipe, overrides), study_dir)


# a trial's budget, set with --set: the confirming full runs drop these (and only these)
BUDGET_KEYS = (
    "train.epochs",
    "data.train_limit",
    "data.val_fraction",
    "train.steps_per_epoch",
    "train.early_stop",
)


class _SurplusFilter(logging.Filter):
    def __init__(self, numbers: set[int]):
        super().__init__()
        self.numbers = numbers

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(msg.startswith(f"Trial {n} failed") for n in self.numbers)


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
        accs = [confirm_run(cfg0, f"{name}-seed{seed}", seed, study_dir, quiet)
                for seed in range(seeds)]  # fmt: skip
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


def confirm_run(cfg0: Config, name: str, seed: int, study_dir: Path, quiet: bool) -> float:
    """The test accuracy of ``cfg0`` trained with ``seed`` in ``<study>/confirm/<name>``; a
    finished run there is read, not trained again."""
    cfg = cfg0.copy()
    cfg.train.seed = seed
    cfg.run.runs_dir = str(study_dir / "confirm")
    cfg.run.name = name
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
    return done[-1]["test_acc"]
