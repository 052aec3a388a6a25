"""Where a study lives and how several workers share it: the RDB storage (SQLite on a
local disk, or a database server), its heartbeat, a sampler seeded per trial, the lock
that makes claiming a queued trial atomic on SQLite, and the trials' budget."""

from __future__ import annotations

import fcntl
import inspect
import os
import re
import time
import warnings
from pathlib import Path

from cnnlab.errors import ConfigError

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
