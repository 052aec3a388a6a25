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
import fcntl
import inspect
import json
import logging
import math
import os
import re
import shutil
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

import yaml

from cnnlab.config import Config, find_recipe, get_value, set_value
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models.base import option_default
from cnnlab.progress import progress
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


# file systems whose locks SQLite cannot rely on (https://www.sqlite.org/howtocorrupt.html)
NETWORK_FS = frozenset(
    "nfs nfs4 cifs smb3 smbfs 9p afs ncpfs fuse.sshfs glusterfs fuse.glusterfs ceph "
    "fuse.ceph fuse.cephfs lustre gpfs beegfs fuse.s3fs fuse.gcsfuse".split()
)


def filesystem_of(path: Path, mounts: str | None = None) -> tuple[str, str]:
    """(file-system type, mount point) holding ``path``, from ``/proc/mounts`` (the longest
    mount point that is a prefix of the resolved path); ("", "") where that is unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "", ""
    target = str(Path(path).resolve())
    best = ("", "")
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts writes a space in a path as \040 (octal escapes)
        mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[1]):
            best = (parts[2], mnt)
    return best


def check_sqlite_is_local(db: Path) -> None:
    """SQLite's file locks do not hold on a network file system: workers on several
    machines sharing the file would corrupt the study or wait forever on a lock. Refuse."""
    fs, mnt = filesystem_of(db)
    if fs in NETWORK_FS:
        raise ConfigError(
            f"the SQLite study {str(db)!r} is on a network file system ({fs} at {mnt}), where "
            "SQLite's locks do not hold; use a database server (--storage "
            "postgresql://user:pass@host/db) to share a study between machines, or a local "
            "--runs-dir for one machine"
        )


def storage_for(url: str | None, study_dir: Path, heartbeat: float = 120):
    """The study's RDB storage. A worker that stays silent for ``heartbeat`` seconds (killed,
    its machine lost) has its running trial marked failed and queued once more for the
    other workers (Optuna's heartbeat, checked at each trial start)."""
    import optuna
    from optuna import storages
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url is None:
        check_sqlite_is_local(study_dir / "study.db")
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected a database URL such as sqlite:///study.db or "
            "postgresql://user:pass@host/db"
        )
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg 3, named: SQLAlchemy < 2.1 would look for psycopg2 under a bare postgresql://
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if heartbeat < 2:
        raise ConfigError(f"--heartbeat needs at least 2 seconds, got {heartbeat:g}")
    engine: dict = {}
    if url.startswith("sqlite:///"):
        check_sqlite_is_local(Path(url[len("sqlite:///") :]))
        # several local workers take turns on the file's lock: wait for it, do not fail
        engine = {"connect_args": {"timeout": 60}}
    # optuna ≥ 4.9 renamed the stale-trial retry callback and its keyword
    if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters:
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(1)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    interval = max(1, int(heartbeat // 4))
    for attempt in range(6):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=interval,
                grace_period=max(int(heartbeat), interval + 1),
                **retry,
            )
        except (IntegrityError, OperationalError, ProgrammingError) as e:
            # workers started at once on a new database race to create its tables (and, on
            # PostgreSQL, its enum types: DuplicateObject): the losers find them made by
            # the winner on the next try
            busy = isinstance(e, IntegrityError) or any(w in str(e) for w in ("locked", "exists"))
            if not busy or attempt == 5:
                raise ConfigError(
                    f"--storage {url!r}: cannot open the study database "
                    f"({str(e.orig).splitlines()[0]})"
                ) from None
            time.sleep(0.5 * (attempt + 1))
        except ImportError:
            raise ConfigError(
                f"--storage {url!r}: its database driver is not installed (PostgreSQL: "
                "pip install 'psycopg[binary]')"
            ) from None
        except (optuna.exceptions.StorageInternalError, ValueError) as e:
            raise ConfigError(f"--storage {url!r}: cannot open the study database ({e})") from None


def seeded_sampler(seed: int, **kw):
    """A TPE sampler whose random stream is drawn afresh for each trial from ``seed`` and the
    trial's number: one worker replays exactly, and workers started at once on one study
    (which would share a seed) do not propose the same start-up trials."""
    from optuna.samplers import BaseSampler, TPESampler

    class PerTrialSeed(BaseSampler):
        def __init__(self) -> None:
            self.inner = TPESampler(seed=seed, **kw)

        def before_trial(self, study, trial) -> None:
            self.inner = TPESampler(seed=seed + 7919 * trial.number, **kw)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

    return PerTrialSeed()


class ClaimLock:
    """Local workers on one SQLite study take turns to claim a trial.

    Optuna claims a queued trial (the baseline, or a dead worker's trial queued again) by
    reading that it is WAITING and then writing RUNNING; on PostgreSQL the read locks the
    row (``FOR UPDATE``), but SQLite ignores that and runs the read outside the write's
    transaction, so two workers can both claim one queued trial and both run it. Workers
    sharing an SQLite file are on one machine (a network file system is refused), so a
    blocking ``flock`` on ``<db>.claim``, held from the claim to the objective's first
    line, makes the claim atomic. A no-op for other databases."""

    def __init__(self, db: Path | None):
        self.path = None if db is None else Path(str(db) + ".claim")
        self.fd: int | None = None

    def __enter__(self) -> ClaimLock:
        if self.path is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __exit__(self, *exc) -> None:
        self.release()


def sqlite_file(url: str | None, study_dir: Path) -> Path | None:
    """The study's SQLite file, or None when it lives in a database server."""
    if url is None:
        return study_dir / "study.db"
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


class SurplusTrial(Exception):
    """Workers racing for the last trials of the budget: this one is not needed."""


def budget_left(st, budget: int, number: int | None = None) -> int:
    """Trials still to claim: the budget less the finished (complete, pruned) trials and the
    ones claimed before trial ``number`` (running or queued; all of them when None)."""
    from optuna.trial import TrialState

    n = 0
    for t in st.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING) and (
            number is None or t.number < number
        ):
            n += 1
    return budget - n


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
    stor = storage_for(storage, study_dir, heartbeat)
    if prune_after is None:  # early epochs of a one-cycle schedule rank configs poorly
        prune_after = max(1, base.train.epochs // 3)
    warmup = max(0, int(prune_after))
    kw = dict(
        storage=stor,
        # per-trial seeds (see seeded_sampler); the constant liar makes TPE treat the
        # trials running on other workers as bad, so parallel workers spread out
        sampler=seeded_sampler(seed, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
    )
    try:  # of workers started at once, the one that creates the study queues the recipe
        st = optuna.create_study(study_name=name, direction="maximize", **kw)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=name, **kw)
        created = False
    if created and baseline:
        params = baseline_params(base, space)
        if params is not None:
            st.enqueue_trial(params, user_attrs={"baseline": True})
    worker = f"{socket.gethostname()}:{os.getpid()}"
    surplus: set[int] = set()
    claim = ClaimLock(sqlite_file(storage, study_dir))

    def objective(trial) -> float:
        claim.release()  # this trial is ours now (see ClaimLock)
        trial.set_user_attr("worker", worker)
        if budget_left(st, trials, trial.number) <= 0:  # another worker took the last one
            surplus.add(trial.number)
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(trial.number)
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
        pruning = OptunaPruning(trial)
        res = fit(cfg, quiet=quiet, callbacks=[pruning, study_bar])
        if res.interrupted:  # Ctrl-C / SIGTERM stops the sweep, not just this trial
            raise SweepInterrupted(trial.number)
        best = max(m["val_acc"] for m in res.history)
        trial.set_user_attr("test_acc", res.history[-1]["test_acc"])
        trial.set_user_attr("epochs", len(res.history))
        trial.set_user_attr("run_dir", str(res.run_dir))
        if pruning.pruned:
            raise optuna.TrialPruned(pruning.pruned)
        if not quiet:
            print(f"trial {trial.number}: val acc {best:.4f}  {params}")
        return best

    # a surplus trial is recorded as failed; Optuna's warning about it is noise
    quiet_surplus = _SurplusFilter(surplus)
    log = logging.getLogger("optuna")
    for h in log.handlers:
        h.addFilter(quiet_surplus)
    start, attempts, waiting = time.monotonic(), 0, False
    # trials shown one by one (--verbose) have their own bars: then no overall one
    overall = progress("sweep trials", total=trials, enabled=quiet)
    study_bar = StudyBar(overall.__enter__(), trials)
    try:
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
    except SweepInterrupted as e:  # the trial is marked failed; the study stays resumable
        raise CnnlabError(
            f"sweep stopped by a signal during trial {e.args[0]}; run the same command "
            "to resume it (finished trials are kept)"
        ) from None
    finally:
        overall.__exit__(None, None, None)
        for h in log.handlers:
            h.removeFilter(quiet_surplus)
    # of several workers, the one that finished the study's last trial draws the plots
    # (`--report` draws them again at any time)
    ended = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    last = max(ended, key=lambda t: t.datetime_complete) if ended else None
    plots = last is None or last.user_attrs.get("worker", worker) == worker
    out = summarize(st, best_base(recipe, overrides), study_dir, plots=plots)
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
                tmp = study_dir / f".{fname}.{os.getpid()}.tmp.png"
                fig.savefig(tmp, dpi=100)
                plt.close(fig)
                os.replace(tmp, study_dir / fname)
                made.append(str(study_dir / fname))
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                warnings.warn(f"{fname}: {e}", stacklevel=1)  # e.g. too few trials
    return made
