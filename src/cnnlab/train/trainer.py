"""The one training loop. A Task says *what* a step computes; the Trainer says *how*.

For every Task alike: device, threads, precision and seeds (``runtime``); the run
directory (``train/rundir.py``: ``config.yaml``, ``metrics.jsonl``, one writer under a
lock); per-step sums kept in device tensors and read once per epoch (no host sync inside
the step loop); checkpoints at every epoch end and every ``train.checkpoint_every_steps``
steps with everything an exact resume needs (``train/resume.py``). An epoch's
checkpoints are written before its ``metrics.jsonl`` line. The config is checked in full
— names, ranges, the model against its input, a resume against the architecture and
optimiser it continues — before anything is written; a new run that fails before its
first checkpoint leaves no folder behind.

SIGINT/SIGTERM finish the current step, write a checkpoint and return (CLI exit 0;
``train/signals.py``). A non-finite loss stops the run naming epoch and step (policy
``stop``: no per-step host sync, the check runs where the sums are read anyway) or skips
that step and lowers the LR (policy ``skip``: one host sync per step to decide before the
optimiser moves; an epoch that skips more than half its steps stops the run). Weights
are checked finite before every checkpoint, and a checkpoint whose weights produced the
bad loss is set aside, so ``last`` is always one that was seen to give a finite loss.
Under torchrun the data is sharded, the sums are added across ranks, and only rank 0
writes.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.config import Config, check_pad
from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.runs.files import fault, io_error
from cnnlab.runs.layout import new_run_dir
from cnnlab.runtime import distributed
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
from cnnlab.train.resume import Checkpoints
from cnnlab.train.rundir import RunDirectory, resume_hint
from cnnlab.train.selection import selection_score
from cnnlab.train.signals import GracefulStop
from cnnlab.train.snapshots import WeightSnapshots
from cnnlab.train.task import Task, TaskContext
from cnnlab.train.tasks import make_task
from cnnlab.train.trackers import Trackers, parse_report_to
from cnnlab.train.validate import check_input, validate

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


def load_data(cfg: Config, resume: str | os.PathLike | None = None) -> Dataset:
    """The config's dataset; for a resumed image-folder run, with the run's own split."""
    args = dict(cfg.data.args)
    split = Path(resume) / "split.json" if resume is not None else None
    if split is not None and split.is_file():
        args["split_file"] = str(split)
    return load_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.download, **args)


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
        self.signals = GracefulStop(self.warn)
        self.checkpoints = Checkpoints(self)
        self.files: RunDirectory | None = None  # the run directory, once known (or locked)
        self._pending: dict | None = None  # a mid-epoch position a resume restored
        self._epoch_skips, self._epoch_first_skip = 0, 0  # nan_policy=skip, this epoch

    # -- set-up -------------------------------------------------------------------------

    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed)
        self.rt = make_runtime(t)
        self.dist, self.rt.device = distributed.from_env(self.rt.device)
        if self.resume_from is not None and self.dist.main:
            self.files = RunDirectory(self.resume_from, self.warn).acquire()  # before reading
        if not self.dist.main:
            for cb in self.callbacks:
                if isinstance(cb, Progress):
                    cb.quiet = True
        if self.dataset is None:
            self.dataset = load_data(cfg, self.resume_from)
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
        check_input(self.model, cfg)
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
        if self.files is None:
            self.files = RunDirectory(self.run_dir, self.warn)
        self.start_epoch = 1
        self.best_metric = -math.inf
        # per-step losses of the current epoch on the device: written without a sync, read
        # only to name the first bad step once a non-finite epoch sum has been seen
        self._losses = torch.zeros(max(1, self.steps_per_epoch), device=self.rt.device)
        if self.resume_from is not None:
            self._pending = self.checkpoints.resume()
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

    # -- NaN/inf --------------------------------------------------------------------------

    def apply_lr_scale(self) -> None:
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
            kept = self.files.set_aside(first_bad, keep=epoch > 1)
        lr = min(self.cfg.optim.lr / 10, 1e-3)
        raise NonFiniteLoss(
            f"{what} (global step {first_bad}); stopped, {kept}. Continue with a lower LR: "
            f"cnnlab train --resume {self.run_dir} --lr {lr:g} "
            "(or set train.grad_clip=1.0)"
        )

    # -- checkpoints and signals -----------------------------------------------------------

    def meta(self, epoch: int, metrics: dict) -> dict:
        """What a checkpoint records besides its tensors (``train/resume.py``)."""
        return self.checkpoints.meta(epoch, metrics)

    def save(self, name: str, epoch: int, metrics: dict, position: dict | None = None) -> Path:
        """Write ``checkpoints/<name>`` (rank 0 only). ``position`` marks a mid-epoch
        checkpoint: ``epoch`` is then the last completed epoch."""
        return self.checkpoints.save(name, epoch, metrics, position)

    @property
    def _signal(self) -> int | None:
        """The stop signal received; a callback may set it to stop like SIGTERM does."""
        return self.signals.signum

    @_signal.setter
    def _signal(self, signum: int | None) -> None:
        self.signals.signum = signum

    def _stopped_at(self, epoch: int, step: int) -> None:
        self.interrupted = True
        if self.dist.main:
            print(self.signals.stopped_message(epoch, step, self.run_dir), flush=True)

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
                self.apply_lr_scale()
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
        stop = self.signals.requested(self.dist, self.rt.device)
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
                created = self.files.open(
                    self.cfg.to_yaml(), self.dataset, self.history, self.resume_from is not None
                )
            return self._fit()
        except CnnlabError as e:
            # a user mistake found at the start leaves nothing behind; a divergence or a
            # disk error keeps the folder, so the --resume its message advises works
            if created and not isinstance(e, (NonFiniteLoss, CheckpointError)):
                self.files.remove_if_new()
            raise
        except OSError as e:
            # a full disk or a read-only file system met by any other file the run
            # writes (gradients.jsonl, a task's samples): one line, as for checkpoints
            if e.errno not in _DISK_ERRNOS:
                raise
            raise CheckpointError(
                io_error(e.filename or self.run_dir, e) + resume_hint(self.run_dir)
            ) from None
        finally:
            if self.files is not None:
                self.files.release()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self.signals.install()
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
                    self.files.append_metrics(m)
                if self.signals.requested(self.dist, self.rt.device):
                    self._stopped_at(epoch, 0)
                    break
                if self.should_stop:
                    if self.stop_reason:
                        for cb in self.callbacks:
                            if isinstance(cb, Progress):
                                cb.print(self.stop_reason)
                    break
        finally:
            self.signals.restore()
            for cb in self.callbacks:
                cb.on_fit_end(self)
        self.dist.finish()  # every rank ends together (a rank that failed never gets here)
        return TrainResult(self.run_dir, self.history, self.model, self.interrupted)
