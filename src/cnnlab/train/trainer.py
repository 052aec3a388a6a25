"""The one training loop. A Task says *what* a step computes; the Trainer says *how*.

For every Task alike: device, threads, precision and seeds (``runtime``); the run
directory (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``); per-step sums kept in
device tensors and read once per epoch (no host sync inside the step loop); checkpoints
at every epoch end and every ``train.checkpoint_every_steps`` steps, written atomically
with optimiser, schedule, task and RNG state and the position inside the epoch, so a
resumed run replays the same batches and ends bit-identical on CPU in deterministic mode;
the replaced ``last`` is kept as ``prev``. An epoch's checkpoints are written before its
``metrics.jsonl`` line, and a resume adds a line a crash left out from the checkpoint's
own copy. One process writes a run directory at a time (``runs/lock.py``: rank 0 under
DDP). The config is checked in full — names, ranges, the model against its input, a
resume against the architecture and optimiser it continues — before anything is
written; a new run that fails before its first checkpoint leaves no folder behind.

SIGINT/SIGTERM finish the current step, write a checkpoint and return (CLI exit 0).
A non-finite loss stops the run naming epoch and step (policy ``stop``: no per-step host
sync, the check runs where the sums are read anyway) or skips that step and lowers the
LR (policy ``skip``: one host sync per step to decide before the optimiser moves; an
epoch that skips more than half its steps stops the run). Weights are checked finite
before every checkpoint, and a checkpoint whose weights produced the bad loss is set
aside, so ``last`` is always one that was seen to give a finite loss.
Under torchrun the data is sharded, the sums are added across ranks, and only rank 0
writes.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnlab._version import __version__
from cnnlab.config import Config, check_pad, short
from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError
from cnnlab.runs.checkpoint import (
    load_checkpoint,
    optim_join,
    optim_split,
    read_metadata,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from cnnlab.runs.files import atomic_write_text, fault, io_error, unlink_quietly
from cnnlab.runs.layout import new_run_dir, run_kind, scan_metrics
from cnnlab.runs.lock import RunLock
from cnnlab.runtime import distributed, numerics
from cnnlab.runtime.device import make_runtime
from cnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    NaNGuard,
    NonFiniteLoss,
    Progress,
    ReportOnEnd,
)
from cnnlab.train.diagnostics import GradientFlow
from cnnlab.train.optim import OptimizerStep, Schedule
from cnnlab.train.selection import selection_score
from cnnlab.train.snapshots import WeightSnapshots
from cnnlab.train.task import Task, TaskContext
from cnnlab.train.tasks import make_task
from cnnlab.train.trackers import Trackers, parse_report_to
from cnnlab.train.validate import validate

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = None
    interrupted: bool = False  # stopped by SIGINT/SIGTERM after writing a checkpoint

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def best(self) -> dict:
        """The epoch of the best checkpoint: the best validation accuracy, or its 3-epoch
        mean with ``train.select=smooth`` ({} without a validation split)."""
        if not self.history or "val_acc" not in self.history[0]:
            return {}
        ranked = [m for m in self.history if "val_acc_smooth" in m] or self.history
        return max(ranked, key=lambda m: m.get("val_acc_smooth", m["val_acc"]))


def config_callbacks(cfg, kind: str = "classify") -> list[Callback]:
    """The callbacks the config asks for: early stopping, and for classifiers gradient-flow
    diagnostics and the run report."""
    cbs: list[Callback] = []
    t = cfg.train
    if t.early_stop > 0:
        cbs.append(EarlyStopping("val_acc", patience=t.early_stop))
    if t.diagnostics and kind == "classify":
        cbs.append(GradientFlow())
    if t.report and kind == "classify":
        cbs.append(ReportOnEnd())
    cbs += [WeightSnapshots()] if t.snapshots and kind == "classify" else []
    trackers = parse_report_to(cfg.run.report_to)
    if trackers:  # after the report: the figures the trackers take are drawn by then
        cbs.append(Trackers(trackers))
    return cbs


class Trainer:
    def __init__(
        self,
        cfg: Config,
        task: Task | None = None,
        dataset: Dataset | None = None,
        callbacks: list[Callback] | None = None,
        quiet: bool = False,
        resume: str | os.PathLike | None = None,
    ):
        self.cfg = validate(cfg)
        self.task = task if task is not None else make_task(self.cfg)
        self.dataset = dataset
        self.quiet = quiet
        self.callbacks = [
            Progress(quiet=quiet),
            NaNGuard(),
            *config_callbacks(self.cfg, self.task.kind),
            *(callbacks or []),
        ]
        self.resume_from = Path(resume) if resume else None
        self.should_stop = False
        self.stop_reason = ""
        self.interrupted = False
        self.history: list[dict] = []
        self._signal: int | None = None
        self._pending: dict | None = None  # a mid-epoch position restored by _resume
        self._lock: RunLock | None = None
        self._last_is_bad = False  # resumed from prev: the next save must not rotate last
        self._metrics_dirty = False  # resume changed metrics.jsonl's lines: rewrite it
        self._epoch_skips, self._epoch_first_skip = 0, 0  # nan_policy=skip, this epoch

    # -- set-up -------------------------------------------------------------------------

    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed)
        self.rt = make_runtime(t)
        self.dist, self.rt.device = distributed.from_env(self.rt.device)
        if self.resume_from is not None and self.dist.main:
            self._lock = RunLock(self.resume_from).acquire()  # before anything is read
        if not self.dist.main:
            for cb in self.callbacks:
                if isinstance(cb, Progress):
                    cb.quiet = True
        if self.dataset is None:
            args = dict(cfg.data.args)
            split = self.resume_from / "split.json" if self.resume_from is not None else None
            if split is not None and split.is_file():  # an image folder: the run's own split
                args["split_file"] = str(split)
            self.dataset = load_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.download, **args)
        check_pad(cfg.data.pad, getattr(self.dataset, "size", None))
        self.generator = torch.Generator(device=self.rt.device).manual_seed(t.seed)
        fp16 = self.rt.amp_dtype is torch.float16
        self.stepper = OptimizerStep(t.grad_clip, fp16, skip_nonfinite=t.nan_policy == "skip")
        self.ctx = TaskContext(
            cfg=cfg, dataset=self.dataset, rt=self.rt, generator=self.generator,
            step_optimizer=self.step_optimizer, dist=self.dist, warn=self.warn,
            reduce_eval=self.reduce_eval, quiet=self.quiet, resume_from=self.resume_from,
            callbacks=self.callbacks,
        )  # fmt: skip
        self.task.build(self.ctx)
        self.generator = self.ctx.generator  # a streaming data set draws its order on the CPU
        self.model = next(iter(self.task.modules().values()))
        self._check_input()
        self.optimizers = self.task.optimizers()
        self.steps_per_epoch = self.task.steps_per_epoch()
        self.schedule = self.ctx.schedule = Schedule(
            self.optimizers, cfg.sched, t.epochs, self.steps_per_epoch
        )
        self.base_lrs = list(self.schedule.base)
        self.lr_scale, self.skipped_steps = 1.0, 0
        stem = f"{cfg.model.name}-{cfg.data.name}"
        run_dir = self.resume_from or new_run_dir(cfg.run.runs_dir, cfg.run.name, stem)
        self.run_dir = self.ctx.run_dir = Path(self.dist.broadcast(str(run_dir)))
        self.start_epoch = 1
        self.best_metric = -math.inf
        # per-step losses of the current epoch on the device: written without a sync, read
        # only to name the first bad step once a non-finite epoch sum has been seen
        self._losses = torch.zeros(max(1, self.steps_per_epoch), device=self.rt.device)
        if self.resume_from is not None:
            self._resume()
        self.ctx.history = self.history

    def step_optimizer(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params=None,
                       foreach: bool | None = None) -> None:  # fmt: skip
        """The one update of every Task's step: backward, gradient clipping
        (``train.grad_clip`` over ``params``, default the optimiser's), the GradScaler
        under fp16, the NaN skip (``train.nan_policy=skip``) and the optimiser step."""
        self.stepper(loss, opt, params, foreach)

    def describe(self) -> str:
        par = f", {self.dist.describe()}" if self.dist.enabled else ""
        return f"{self.task.describe()} — {self.rt.describe()}{par}"

    def warn(self, text: str) -> None:
        if self.dist.main:
            print(text, file=sys.stderr, flush=True)

    # -- limits from the data and the model -----------------------------------------------

    def _check_input(self) -> None:
        """One forward pass of a single blank image, so a model that cannot take the
        data's image size fails here in one line instead of in the first step."""
        args = getattr(self.model, "cnnlab_args", None)
        if not isinstance(args, dict) or "input_size" not in args:
            return
        c, s = int(args.get("in_channels", 1)), int(args["input_size"])
        model = getattr(self.model, "_orig_mod", self.model)
        p = next(model.parameters(), None)
        if p is None:
            return
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, c, s, s, device=p.device, dtype=p.dtype)
                model(x)
        except RuntimeError as e:
            raise ConfigError(
                f"model {args.get('name', self.cfg.model.name)} cannot take {c}×{s}×{s} "
                f"images ({str(e).splitlines()[0][:160]}); give it larger images "
                "(data.resize, or the dataset's size option)"
            ) from None
        finally:
            model.train(was)

    # -- NaN/inf --------------------------------------------------------------------------

    def _apply_lr_scale(self) -> None:
        self.schedule.base = [b * self.lr_scale for b in self.base_lrs]
        self.schedule.apply()

    def _check_finite(self, epoch: int, step: int, loss_sum: torch.Tensor) -> None:
        """nan_policy=stop: called wherever the sums are read (checkpoints, epoch end) — a
        non-finite step poisons the running sum, so this costs no extra sync."""
        if self.cfg.train.nan_policy != "stop" or bool(torch.isfinite(loss_sum)):
            return
        seen = self._losses[:step]
        bad = (~torch.isfinite(seen)).nonzero()
        first = int(bad[0]) + 1 if len(bad) else step
        value = float(seen[first - 1]) if len(bad) else float(loss_sum)
        self._diverged(
            f"training loss became {value} at epoch {epoch}, step {first}",
            epoch,
            (epoch - 1) * self.steps_per_epoch + first,
        )

    def _check_weights(self, epoch: int, step: int) -> None:
        """Before a checkpoint: every weight and buffer finite (one sync per checkpoint)."""
        ts = [
            t.detach()
            for m in self.task.modules().values()
            for t in (*m.parameters(), *m.buffers())
            if t.is_floating_point()
        ]
        if not ts or bool(torch.stack([torch.isfinite(t).all() for t in ts]).all()):
            return
        self._diverged(
            f"the weights became non-finite at epoch {epoch}, step {step}",
            epoch,
            (epoch - 1) * self.steps_per_epoch + step + 1,
        )

    def _diverged(self, what: str, epoch: int, first_bad: int) -> None:
        """Stop a run that diverged at global step ``first_bad``: a checkpoint whose
        weights produced it (written at step ``first_bad - 1`` or later) is set aside, so
        ``--resume`` continues from one that gave a finite loss; one from inside the first
        epoch is set aside too (a diverged first epoch is best started again). Raises
        NonFiniteLoss with advice that works when followed."""
        kept = "no checkpoint was written yet"
        if self.dist.main:
            kept = self._set_aside(first_bad, keep=epoch > 1)
        lr = min(self.cfg.optim.lr / 10, 1e-3)
        raise NonFiniteLoss(
            f"{what} (global step {first_bad}); stopped, {kept}. Continue with a lower LR: "
            f"cnnlab train --resume {self.run_dir} --lr {lr:g} "
            "(or set train.grad_clip=1.0)"
        )

    def _set_aside(self, first_bad: int, keep: bool) -> str:
        ck = self.run_dir / "checkpoints"
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

    # -- checkpoints ---------------------------------------------------------------------

    def meta(self, epoch: int, metrics: dict) -> dict:
        _, plain_rng = rng_state()
        return {
            "cnnlab_version": __version__,
            "kind": self.task.kind,
            **self.task.meta(),
            "epoch": epoch,
            "step": self.schedule.step_num,
            "metrics": metrics,
            "best_metric": self.best_metric,
            "config": self.cfg.to_dict(),
            "schedule": self.schedule.state_dict(),
            "lr_scale": self.lr_scale,
            "skipped_steps": self.skipped_steps,
            "rng": plain_rng,
            "numerics": numerics.record(self.rt),
            "scalers": self.stepper.state(self.optimizers),
        }

    def _saved_module(self) -> nn.Module:
        mods = self.task.modules()
        return next(iter(mods.values())) if len(mods) == 1 else nn.ModuleDict(mods)

    def save(self, name: str, epoch: int, metrics: dict, position: dict | None = None) -> Path:
        """Write ``checkpoints/<name>`` (rank 0 only). ``position`` marks a mid-epoch
        checkpoint: ``epoch`` is then the last completed epoch."""
        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        if not self.dist.main:
            return path
        tensors, _ = rng_state(self.generator)
        meta = self.meta(epoch, metrics)
        task_tensors, task_meta = self.task.state()
        tensors.update({f"task.{k}": v for k, v in task_tensors.items()})
        meta["task"] = task_meta
        extra_opts = []
        for k, opt in enumerate(self.optimizers[1:], 1):
            ot, om = optim_split(opt.state_dict())
            tensors.update({f"optim{k}." + key[len("optim.") :]: v for key, v in ot.items()})
            extra_opts.append(om)
        meta["optimizers"] = extra_opts
        if position is not None:
            tensors["rng.epoch_start"] = position.pop("epoch_rng")
            for k, v in position.pop("sums").items():
                tensors[f"acc.{k}"] = v
            meta["position"] = position
        # after a resume that fell back to prev, last is known to be corrupt: replace it
        # without rotating it into prev (prev stays the good one)
        rotate = name == "last" and not self._last_is_bad
        try:
            out = save_checkpoint(
                path,
                self._saved_module(),
                meta,
                self.optimizers[0],
                tensors,
                keep_prev=path.with_name("prev.safetensors") if rotate else None,
            )
            if name == "last":
                self._last_is_bad = False
            return out
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}; fix that and continue with: cnnlab train --resume {self.run_dir}"
            ) from None

    def _clean_checkpoint_dir(self) -> None:
        """Temp files of a write that was killed: ours (.<name>.XXXX.tmp) and the one
        safetensors' save_file writes through (.tmpXXXXXX, Rust's tempfile crate). Run
        under the lock only (they may be a live writer's otherwise); a read-only file
        system leaves them where they are."""
        ck_dir = self.run_dir / "checkpoints"
        for junk in [*ck_dir.glob(".*.tmp"), *ck_dir.glob(".tmp*")]:
            unlink_quietly(junk)
        unlink_quietly(ck_dir / ".prev.safetensors.link")

    def _load_for_resume(self):
        ck_dir = self.run_dir / "checkpoints"
        last, prev = ck_dir / "last.safetensors", ck_dir / "prev.safetensors"
        if not last.exists() and not prev.exists():
            # stopped (or killed) before its first checkpoint was complete: an epoch line
            # without a checkpoint cannot be continued, so the run starts again
            n = len(scan_metrics(self.run_dir)[0])
            lines = f"; its {n} epoch line(s) in metrics.jsonl are dropped" if n else ""
            self.warn(
                f"warning: {self.run_dir} has no checkpoint yet (stopped before its first "
                f"one); starting it from the beginning{lines}"
            )
            return None
        try:
            return load_checkpoint(last)
        except CheckpointError as first:
            if prev.is_file():
                self.warn(f"warning: {first}; resuming from the previous checkpoint {prev}")
                self._last_is_bad = last.exists()
                return load_checkpoint(prev)
            raise

    def _check_same_run(self, ck) -> None:
        """What a checkpoint's state is made for cannot change on resume: the task, the
        model (architecture, input, classes) and the optimiser. Checked before anything
        is loaded or written."""
        if run_kind(ck.meta) != self.task.kind:
            raise CheckpointError(
                f"{ck.path}: a {run_kind(ck.meta)} run cannot be resumed as {self.task.kind}"
            )
        was = ck.meta.get("config")
        was = was if isinstance(was, dict) else {}
        now = self.cfg.to_dict()
        changed, old = [], {}
        for sec, keys in self.task.resume_keys:  # what the saved state's shapes depend on
            a = was.get(sec) if isinstance(was.get(sec), dict) else {}
            b = now.get(sec, {})
            if not a:
                continue  # a checkpoint without that section: nothing to compare
            for k in keys or sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    changed.append(f"{sec}.{k}")
                    old[f"{sec}.{k}"] = a.get(k)
        mine = json.loads(json.dumps(self.task.meta().get("model"), default=str))  # as saved
        if not changed and "model" in ck.meta and ck.meta["model"] != mine:
            changed.append("model input or classes (data.*)")
        if changed:
            first = changed[0]
            was_text = f"{first}={short(old[first], 40)}" if first in old else "other data"
            raise CheckpointError(
                f"cannot resume {self.run_dir} with a different {', '.join(changed[:4])} "
                f"(it was trained with {was_text}): its saved state does not fit. "
                f"Drop that --set, or start a new run from its config: cnnlab train --recipe "
                f"{self.run_dir / 'config.yaml'} --name NEW_NAME --set ..."
            )

    def _resume(self) -> None:
        ck = self._load_for_resume()
        if ck is None:
            self.history = []
            self._metrics_dirty = (self.run_dir / "metrics.jsonl").exists()
            return
        self._check_same_run(ck)
        was = ck.meta.get("config") if isinstance(ck.meta.get("config"), dict) else {}
        was_threads = (was.get("train") or {}).get("threads", self.cfg.train.threads)
        for note in numerics.reuse(
            self.rt, ck.meta.get("numerics"), threads_asked=was_threads != self.cfg.train.threads,
            exact=self.cfg.train.exact_resume, run=str(self.run_dir),
        ):  # fmt: skip
            self.warn(note)
        try:
            self._saved_module().load_state_dict(ck.model_state)
        except RuntimeError as e:
            raise CheckpointError(
                f"{ck.path}: weights do not fit the model ({str(e).splitlines()[0]})"
            ) from None
        try:
            st = ck.optimizer_state()
            if st is not None:
                self.optimizers[0].load_state_dict(st)
            for k, (opt, om) in enumerate(
                zip(self.optimizers[1:], ck.meta.get("optimizers", [])), 1
            ):
                pre = f"optim{k}."
                ot = {
                    "optim." + key[len(pre) :]: v
                    for key, v in ck.tensors.items()
                    if key[: len(pre)] == pre
                }
                opt.load_state_dict(optim_join(ot, om))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"{ck.path}: the optimiser state does not fit ({str(e).splitlines()[0][:120]})"
            ) from None
        self.task.load_state(
            {k[5:]: v for k, v in ck.tensors.items() if k.startswith("task.")},
            ck.meta.get("task", {}),
        )
        self.schedule.load_state_dict(ck.meta["schedule"])
        self.stepper.load_state(self.optimizers, ck.meta.get("scalers"))
        self.lr_scale = float(ck.meta.get("lr_scale", 1.0))
        self.skipped_steps = int(ck.meta.get("skipped_steps", 0))
        self._apply_lr_scale()
        restore_rng(ck.tensors, ck.meta.get("rng", {}), self.generator)
        self.start_epoch = int(ck.meta["epoch"]) + 1
        pos = ck.meta.get("position")
        if pos is not None:
            self.start_epoch = int(pos["epoch"])
            keep = self.dist.main  # the saved sums are global: one rank carries them on
            sums = {k[4:]: v * keep for k, v in ck.tensors.items() if k.startswith("acc.")}
            self._pending = dict(pos, epoch_rng=ck.tensors["rng.epoch_start"], sums=sums)
        self.best_metric = float(ck.meta.get("best_metric", -math.inf))
        self.history = self._reconciled_history(ck)

    def _reconciled_history(self, ck) -> list[dict]:
        """metrics.jsonl's lines that agree with the checkpoint: one per completed epoch.
        Lines after the checkpoint (a crash between the two) and damaged lines are
        dropped; the line of the checkpoint's own epoch, if a crash left it out, is taken
        from the checkpoint."""
        rows, bad = scan_metrics(self.run_dir)
        by_epoch: dict[int, dict] = {}
        for m in rows:
            if m["epoch"] < self.start_epoch:
                by_epoch.setdefault(m["epoch"], m)
        done = int(ck.meta.get("epoch", 0))
        own = ck.meta.get("metrics")
        if done >= 1 and done not in by_epoch and isinstance(own, dict):
            if own.get("epoch") == done:
                by_epoch[done] = own
        history = [by_epoch[e] for e in sorted(by_epoch)]
        if bad:
            self.warn(f"warning: {self.run_dir}/metrics.jsonl: {bad} damaged line(s) left out")
        self._metrics_dirty = True
        return history

    def _rewrite_metrics(self) -> None:
        atomic_write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
        )

    def _append_metrics(self, m: dict) -> None:
        """One fsynced line; a failed write is cut back so no torn line is left."""
        p = self.run_dir / "metrics.jsonl"
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
            raise CheckpointError(
                io_error(p, e, "append to")
                + f"; fix that and continue with: cnnlab train --resume {self.run_dir}"
            ) from None

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now (the files stay consistent)
            raise KeyboardInterrupt
        self._signal = signum
        self.warn(
            f"received {signal.Signals(signum).name}: finishing the current step and writing "
            "a checkpoint (send it again to stop at once)"
        )

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGINT/SIGTERM (all ranks must stop at the same step)."""
        if not self.dist.enabled:
            return self._signal is not None
        flag = torch.tensor([float(self._signal is not None)], device=self.rt.device)
        return bool(self.dist.all_reduce(flag, "max").item())

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _stopped_at(self, epoch: int, step: int) -> None:
        self.interrupted = True
        name = signal.Signals(self._signal).name if self._signal else "a signal"
        where = f"epoch {epoch}, step {step}" if step else f"the end of epoch {epoch}"
        if self.dist.main:
            print(
                f"stopped by {name} at {where}; checkpoint saved. "
                f"Resume with: cnnlab train --resume {self.run_dir}",
                flush=True,
            )

    # -- the loop ------------------------------------------------------------------------

    def _epoch_state(self, epoch: int) -> dict:
        """Where epoch ``epoch`` starts: fresh, or the position a mid-epoch checkpoint
        holds (the same data order, drawn again from the generator's state at the epoch's
        start; the rest of the epoch continues from the generator's state at the stop)."""
        dev = self.rt.device
        p, self._pending = self._pending, None
        if p is not None and int(p["epoch"]) == epoch:
            now = self.generator.get_state()
            self.generator.set_state(p["epoch_rng"])
            self.task.begin_epoch(epoch)
            self.generator.set_state(now)
            sums = {k: v.to(dev) for k, v in p["sums"].items()}
            n = int(p["n"]) if self.dist.main else 0
            return dict(
                epoch_rng=p["epoch_rng"], step=int(p["step"]), sums=sums, n=n,
                seconds=float(p["seconds"]), lr=float(p["lr"]),
            )  # fmt: skip
        epoch_rng = self.generator.get_state()
        self.task.begin_epoch(epoch)
        return dict(epoch_rng=epoch_rng, step=0, sums={}, n=0, seconds=0.0, lr=self.schedule.lr)

    def _reduced(self, sums: dict[str, torch.Tensor], n: int) -> dict[str, float]:
        """The sums (and n) added over ranks: float64 on the host (the epoch's one sync)."""
        keys = sorted(sums)
        dev = self.rt.device
        flat = torch.stack(
            [
                *(sums[k].double() for k in keys),
                torch.tensor(float(n), device=dev, dtype=torch.float64),
            ]
        )
        flat = self.dist.all_reduce(flat).cpu()
        return {**{k: float(flat[i]) for i, k in enumerate(keys)}, "n": float(flat[-1])}

    def _position(self, epoch: int, step: int, st: dict, sums: dict, n: int, seconds) -> dict:
        pos = {"epoch": epoch, "step": step, "seconds": seconds, "lr": st["lr"]}
        pos["epoch_rng"] = st["epoch_rng"]
        if not self.dist.enabled:
            return dict(pos, n=n, sums={k: v.clone() for k, v in sums.items()})
        r = self._reduced(sums, n)  # global sums: one rank carries them on
        return dict(pos, n=int(r.pop("n")), sums={k: torch.tensor(v) for k, v in r.items()})

    def train_epoch(self, epoch: int) -> dict | None:
        """One epoch (or its rest, after a mid-epoch resume). Returns the epoch's metrics,
        or None when a signal stopped it (a checkpoint of the position is then written)."""
        for m in self.task.modules().values():
            m.train()
        st = self._epoch_state(epoch)
        sums, n, step = st["sums"], st["n"], st["step"]
        sums.setdefault("loss_sum", torch.zeros((), device=self.rt.device))
        skip_policy = self.cfg.train.nan_policy == "skip"
        if step == 0:
            self._losses.zero_()
        self._epoch_skips, self._epoch_first_skip = 0, 0
        t0 = time.perf_counter() - st["seconds"]
        for i in range(step, self.steps_per_epoch):
            loss, k, extra = self.task.step(i)
            self.schedule.step()
            if skip_policy and self.stepper.skipped:
                self.stepper.skipped = False
                self.skipped_steps += 1
                self._epoch_skips += 1
                if self._epoch_skips == 1:
                    self._epoch_first_skip = (epoch - 1) * self.steps_per_epoch + i + 1
                self.lr_scale *= self.cfg.train.nan_lr_factor
                self._apply_lr_scale()
                self.warn(
                    f"warning: non-finite loss at epoch {epoch}, step {i + 1}: step skipped, "
                    f"LR scaled to {self.lr_scale:g}× ({self.schedule.lr:.2e})"
                )
            else:
                self._losses[i] = loss
                sums["loss_sum"] += loss * k
                for key, v in extra.items():
                    if key in sums:
                        sums[key] += v
                    else:  # the epoch's first step: a copy (a graph overwrites its outputs)
                        sums[key] = v.clone()
                n += k
            if self._step_end(epoch, i + 1, st, loss, sums, n, t0):
                return None
        return self._epoch_end(epoch, self.steps_per_epoch, st, sums, n, t0)

    def _step_end(self, epoch, i, st, loss, sums, n, t0) -> bool:
        """After step ``i`` (1-based): callbacks, then a position checkpoint when one is due
        or a signal asked to stop. True when the epoch must stop here."""
        for cb in self.callbacks:
            cb.on_step(self, i, loss)
        fault("step")
        stop = self._stop_requested()
        every = self.cfg.train.checkpoint_every_steps
        if stop or (every and self.schedule.step_num % every == 0 and i < self.steps_per_epoch):
            self._check_finite(epoch, i, sums["loss_sum"])
            self._check_weights(epoch, i)
            pos = self._position(epoch, i, st, sums, n, time.perf_counter() - t0)
            self.save("last", epoch - 1, self._last_metrics(), pos)
            if stop:
                self._stopped_at(epoch, i)
        return stop

    def _epoch_end(self, epoch, steps, st, sums, n, t0) -> dict:
        """The epoch's metrics from its device sums (the epoch's one sync)."""
        self._check_finite(epoch, steps, sums["loss_sum"])
        if self._epoch_skips * 2 > steps:  # nan_policy=skip: the model has diverged
            self._diverged(
                f"{self._epoch_skips} of the {steps} steps of epoch {epoch} had a non-finite "
                "loss and were skipped",
                epoch,
                self._epoch_first_skip,
            )
        self._check_weights(epoch, steps)
        r = self._reduced(sums, n)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            **self.task.epoch_metrics(r, steps),
            "seconds": seconds,
            "images_per_s": r["n"] / seconds,
            "lr": st["lr"],
        }

    def _last_metrics(self) -> dict:
        return self.history[-1] if self.history else {}

    def reduce_eval(self, loss: float, acc: float, n: int) -> tuple[float, float]:
        """(mean loss, accuracy) over every rank's share of an evaluation set."""
        if not self.dist.enabled:
            return loss, acc
        t = torch.tensor([loss * n, round(acc * n), n], dtype=torch.float64, device=self.rt.device)
        self.dist.all_reduce(t)
        return float(t[0] / t[2]), float(t[1] / t[2])

    def fit(self) -> TrainResult:
        created = False
        try:
            self.setup()
            if self.dist.main:
                created = self._open_run_dir()
            return self._fit()
        except CnnlabError as e:
            # a user mistake found at the start leaves nothing behind; a divergence or a
            # disk error keeps the folder, so the --resume its message advises works
            if created and not isinstance(e, (NonFiniteLoss, CheckpointError)):
                self._remove_new_run_dir()
            raise
        except OSError as e:
            # a full disk or a read-only file system met by any other file the run
            # writes (gradients.jsonl, a task's samples): one line, as for checkpoints
            if e.errno not in _DISK_ERRNOS:
                raise
            raise CheckpointError(
                io_error(e.filename or self.run_dir, e)
                + f"; fix that and continue with: cnnlab train --resume {self.run_dir}"
            ) from None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _open_run_dir(self) -> bool:
        """Create (or take over) the run directory under its lock, then write what the
        resume settled and config.yaml. True when this call created the directory."""
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(io_error(self.run_dir, e, "create run directory")) from None
        if self._lock is None:
            try:
                self._lock = RunLock(self.run_dir).acquire()
            except CnnlabError:
                if created:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise
            if (self.run_dir / "config.yaml").exists():  # another new run took the name
                raise CheckpointError(
                    f"run {self.run_dir} already exists; continue it with "
                    f"--resume {self.run_dir} or choose another --name"
                )
        if self.resume_from is not None:
            self._clean_checkpoint_dir()
            if self._metrics_dirty:
                self._rewrite_metrics()
        try:
            atomic_write_text(self.run_dir / "config.yaml", self.cfg.to_yaml())
            if hasattr(self.dataset, "split_record"):  # an image folder: which file where
                atomic_write_text(self.run_dir / "split.json", self.dataset.split_record())
        except CnnlabError:
            if created:  # a full disk here left only .lock, which blocked the same --name
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        return created

    def _remove_new_run_dir(self) -> None:
        """A new run that failed before its first checkpoint leaves nothing behind."""
        ck = self.run_dir / "checkpoints"
        if ck.is_dir() and any(ck.glob("*.safetensors")):
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        old_handlers = self._install_signals()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        monitor = self.task.monitor
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs + 1):
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
                m = self.train_epoch(epoch)
                if m is None:
                    break
                lr = m.pop("lr")
                te = time.perf_counter()
                m.update(self.task.evaluate(epoch))
                m["eval_seconds"] = time.perf_counter() - te
                m["lr"] = lr  # last, as before
                if self.skipped_steps:
                    m["skipped_steps"] = self.skipped_steps
                score = m.get(monitor) if monitor else None  # validation only, never test
                self.schedule.epoch_end(score)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, m)
                self.history.append(m)
                # best: by validation accuracy (train.select: or its mean over epochs);
                # without a validation split no best is kept (choosing on the test set
                # would leak it) and readers use last
                pick = selection_score(cfg.train.select, self.history, cfg.train.epochs, monitor)
                if pick is not None and cfg.train.select == "smooth":
                    m["val_acc_smooth"] = pick
                if cfg.run.save_best and pick is not None and pick > self.best_metric:
                    self.best_metric = pick
                    self.save("best", epoch, m)
                self.save("last", epoch, m)
                if self.dist.main:  # after the checkpoints: a line always has its checkpoint
                    fault("metrics")  # test hook: a kill between the two
                    self._append_metrics(m)
                if self._stop_requested():
                    self._stopped_at(epoch, 0)
                    break
                if self.should_stop:
                    if self.stop_reason:
                        for cb in self.callbacks:
                            if isinstance(cb, Progress):
                                cb.print(self.stop_reason)
                    break
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            for cb in self.callbacks:
                cb.on_fit_end(self)
        self.dist.finish()  # every rank ends together (a rank that failed never gets here)
        return TrainResult(self.run_dir, self.history, self.model, self.interrupted)
