"""The run directory as the Trainer writes it: created (or taken over) under its lock
(``runs/lock.py``: one writer at a time, rank 0 under DDP), ``config.yaml`` and an image
folder's ``split.json``, ``metrics.jsonl`` (one fsynced line per epoch, written after that
epoch's checkpoints; on resume reconciled with the checkpoint it continues), the temp
files of a killed write cleaned away, and a diverged run's checkpoints set aside. A new
run that fails before its first checkpoint leaves no folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.runs.checkpoint import read_metadata
from cnnlab.runs.files import atomic_write_text, io_error, unlink_quietly
from cnnlab.runs.layout import scan_metrics
from cnnlab.runs.lock import RunLock


def resume_hint(run_dir: Path) -> str:
    return f"; fix that and continue with: cnnlab train --resume {run_dir}"


class RunDirectory:
    """One run's folder, its lock and its ``metrics.jsonl``, for the process that writes it."""

    def __init__(self, path: Path, warn: Callable[[str], None]):
        self.path = Path(path)
        self.warn = warn
        self.lock: RunLock | None = None
        self.metrics_dirty = False  # a resume changed metrics.jsonl's lines: rewrite it

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def acquire(self) -> RunDirectory:
        """Lock an existing run (a resume), before anything of it is read."""
        self.lock = RunLock(self.path).acquire()
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def open(self, config_yaml: str, dataset, history: list[dict], resuming: bool) -> bool:
        """Create (or take over) the directory under its lock, then write what the resume
        settled and config.yaml. True when this call created the directory."""
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(io_error(self.path, e, "create run directory")) from None
        if self.lock is None:
            try:
                self.lock = RunLock(self.path).acquire()
            except CnnlabError:
                if created:
                    shutil.rmtree(self.path, ignore_errors=True)
                raise
            if (self.path / "config.yaml").exists():  # another new run took the name
                raise CheckpointError(
                    f"run {self.path} already exists; continue it with "
                    f"--resume {self.path} or choose another --name"
                )
        if resuming:
            self.clean_checkpoints()
            if self.metrics_dirty:
                self.rewrite_metrics(history)
        try:
            atomic_write_text(self.path / "config.yaml", config_yaml)
            if hasattr(dataset, "split_record"):  # an image folder: which file where
                atomic_write_text(self.path / "split.json", dataset.split_record())
        except CnnlabError:
            if created:  # a full disk here left only .lock, which blocked the same --name
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        return created

    def remove_if_new(self) -> None:
        """A new run that failed before its first checkpoint leaves nothing behind."""
        ck = self.checkpoints
        if ck.is_dir() and any(ck.glob("*.safetensors")):
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def clean_checkpoints(self) -> None:
        """Temp files of a write that was killed: ours (.<name>.XXXX.tmp) and the one
        safetensors' save_file writes through (.tmpXXXXXX, Rust's tempfile crate). Run
        under the lock only (they may be a live writer's otherwise); a read-only file
        system leaves them where they are."""
        ck_dir = self.checkpoints
        for junk in [*ck_dir.glob(".*.tmp"), *ck_dir.glob(".tmp*")]:
            unlink_quietly(junk)
        unlink_quietly(ck_dir / ".prev.safetensors.link")

    # -- metrics.jsonl -------------------------------------------------------------------

    def rewrite_metrics(self, history: list[dict]) -> None:
        atomic_write_text(
            self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history)
        )

    def append_metrics(self, m: dict) -> None:
        """One fsynced line; a failed write is cut back so no torn line is left."""
        p = self.path / "metrics.jsonl"
        try:
            with open(p, "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    f.write((json.dumps(m) + "\n").encode())
                    os.fsync(f.fileno())
                except OSError:
                    os.ftruncate(f.fileno(), size)
                    raise
        except OSError as e:
            raise CheckpointError(io_error(p, e, "append to") + resume_hint(self.path)) from None

    def epoch_lines(self) -> int:
        return len(scan_metrics(self.path)[0])

    def reconciled_history(self, ck, start_epoch: int) -> list[dict]:
        """metrics.jsonl's lines that agree with the checkpoint: one per completed epoch.
        Lines after the checkpoint (a crash between the two) and damaged lines are
        dropped; the line of the checkpoint's own epoch, if a crash left it out, is taken
        from the checkpoint."""
        rows, bad = scan_metrics(self.path)
        by_epoch: dict[int, dict] = {}
        for m in rows:
            if m["epoch"] < start_epoch:
                by_epoch.setdefault(m["epoch"], m)
        done = int(ck.meta.get("epoch", 0))
        own = ck.meta.get("metrics")
        if done >= 1 and done not in by_epoch and isinstance(own, dict):
            if own.get("epoch") == done:
                by_epoch[done] = own
        history = [by_epoch[e] for e in sorted(by_epoch)]
        if bad:
            self.warn(f"warning: {self.path}/metrics.jsonl: {bad} damaged line(s) left out")
        self.metrics_dirty = True
        return history

    # -- a diverged run ------------------------------------------------------------------

    def set_aside(self, first_bad: int, keep: bool) -> str:
        """Set aside the checkpoints whose weights produced the bad global step
        ``first_bad`` (all of them unless ``keep``); says what a resume then continues."""
        ck = self.checkpoints
        last, prev = ck / "last.safetensors", ck / "prev.safetensors"

        def usable(p: Path) -> bool:
            try:
                meta = json.loads(read_metadata(p)["cnnlab"])
                return keep and int(meta["step"]) < first_bad - 1
            except (OSError, CnnlabError, KeyError, ValueError, TypeError):
                return False

        try:
            if last.exists() and not usable(last):
                if prev.exists() and usable(prev):
                    os.replace(prev, last)
                else:
                    os.replace(last, ck / "diverged-last.safetensors")
            if prev.exists() and not usable(prev):
                os.replace(prev, ck / "diverged-prev.safetensors")
        except OSError as e:
            return io_error(last, e, "set aside the diverged checkpoint")
        if last.exists():
            return f"the last checkpoint that gave a finite loss, {last}, is kept"
        if ck.is_dir() and any(ck.glob("diverged-*")):
            return (
                "the checkpoints of the diverged first epoch are set aside as "
                f"{ck}/diverged-*.safetensors and a resume starts the run again"
            )
        return "no checkpoint was written yet, so a resume starts the run again"
