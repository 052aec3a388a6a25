"""What a Trainer checkpoint holds, written and read back for an exact resume.

A checkpoint (``runs/checkpoint.py`` writes it atomically) carries the weights of every
module of the Task, every optimiser's state, the schedule, the GradScalers, the NaN
policy's LR scale, the task's own state, the RNG states, the numerics it was made with
and, for one written inside an epoch, the position there (step, the device sums so far,
the data generator's state at the epoch's start). The replaced ``last`` is kept as
``prev``. Reading one back checks first that it is for the same task, model and
optimiser (before anything is loaded or written), falls back to ``prev`` when ``last``
is damaged, reuses the recorded numerics (``runtime/numerics.py``), then restores it all,
so a resumed run replays the same batches and ends bit-identical on CPU in deterministic
mode.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from torch import nn

from cnnlab._version import __version__
from cnnlab.config import short
from cnnlab.errors import CheckpointError
from cnnlab.runs.checkpoint import (
    load_checkpoint,
    optim_join,
    optim_split,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from cnnlab.runs.layout import run_kind
from cnnlab.runtime import numerics
from cnnlab.train.rundir import resume_hint


class Checkpoints:
    """The Trainer's checkpoints: ``save`` one, ``resume`` from the run's latest good one.
    Reads and sets the Trainer's state (the Trainer owns it; this is how it is stored)."""

    def __init__(self, trainer):
        self.tr = trainer
        self.last_is_bad = False  # resumed from prev: the next save must not rotate last

    # -- writing -------------------------------------------------------------------------

    def meta(self, epoch: int, metrics: dict) -> dict:
        tr = self.tr
        _, plain_rng = rng_state()
        return {
            "cnnlab_version": __version__,
            "kind": tr.task.kind,
            **tr.task.meta(),
            "epoch": epoch,
            "step": tr.schedule.step_num,
            "metrics": metrics,
            "best_metric": tr.best_metric,
            "config": tr.cfg.to_dict(),
            "schedule": tr.schedule.state_dict(),
            "lr_scale": tr.lr_scale,
            "skipped_steps": tr.skipped_steps,
            "rng": plain_rng,
            "numerics": numerics.record(tr.rt),
            "scalers": tr.stepper.state(tr.optimizers),
        }

    def saved_module(self) -> nn.Module:
        mods = self.tr.task.modules()
        return next(iter(mods.values())) if len(mods) == 1 else nn.ModuleDict(mods)

    def save(self, name: str, epoch: int, metrics: dict, position: dict | None = None) -> Path:
        """Write ``checkpoints/<name>`` (rank 0 only). ``position`` marks a mid-epoch
        checkpoint: ``epoch`` is then the last completed epoch."""
        tr = self.tr
        path = tr.run_dir / "checkpoints" / f"{name}.safetensors"
        if not tr.dist.main:
            return path
        tensors, _ = rng_state(tr.generator)
        meta = self.meta(epoch, metrics)
        task_tensors, task_meta = tr.task.state()
        tensors.update({f"task.{k}": v for k, v in task_tensors.items()})
        meta["task"] = task_meta
        extra_opts = []
        for k, opt in enumerate(tr.optimizers[1:], 1):
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
        rotate = name == "last" and not self.last_is_bad
        try:
            out = save_checkpoint(
                path,
                self.saved_module(),
                meta,
                tr.optimizers[0],
                tensors,
                keep_prev=path.with_name("prev.safetensors") if rotate else None,
            )
            if name == "last":
                self.last_is_bad = False
            return out
        except CheckpointError as e:
            raise CheckpointError(f"{e}{resume_hint(tr.run_dir)}") from None

    # -- reading back --------------------------------------------------------------------

    def load(self):
        """The run's latest good checkpoint (``prev`` when ``last`` is damaged), or None
        when the run stopped before its first one."""
        tr = self.tr
        ck_dir = tr.run_dir / "checkpoints"
        last, prev = ck_dir / "last.safetensors", ck_dir / "prev.safetensors"
        if not last.exists() and not prev.exists():
            # stopped (or killed) before its first checkpoint was complete: an epoch line
            # without a checkpoint cannot be continued, so the run starts again
            n = tr.files.epoch_lines()
            lines = f"; its {n} epoch line(s) in metrics.jsonl are dropped" if n else ""
            tr.warn(
                f"warning: {tr.run_dir} has no checkpoint yet (stopped before its first "
                f"one); starting it from the beginning{lines}"
            )
            return None
        try:
            return load_checkpoint(last)
        except CheckpointError as first:
            if prev.is_file():
                tr.warn(f"warning: {first}; resuming from the previous checkpoint {prev}")
                self.last_is_bad = last.exists()
                return load_checkpoint(prev)
            raise

    def check_same_run(self, ck) -> None:
        """What a checkpoint's state is made for cannot change on resume: the task, the
        model (architecture, input, classes) and the optimiser. Checked before anything
        is loaded or written."""
        task = self.tr.task
        if run_kind(ck.meta) != task.kind:
            raise CheckpointError(
                f"{ck.path}: a {run_kind(ck.meta)} run cannot be resumed as {task.kind}"
            )
        was = ck.meta.get("config")
        was = was if isinstance(was, dict) else {}
        now = self.tr.cfg.to_dict()
        changed, old = [], {}
        for sec, keys in task.resume_keys:  # what the saved state's shapes depend on
            a = was.get(sec) if isinstance(was.get(sec), dict) else {}
            b = now.get(sec, {})
            if not a:
                continue  # a checkpoint without that section: nothing to compare
            for k in keys or sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    changed.append(f"{sec}.{k}")
                    old[f"{sec}.{k}"] = a.get(k)
        mine = json.loads(json.dumps(task.meta().get("model"), default=str))  # as saved
        if not changed and "model" in ck.meta and ck.meta["model"] != mine:
            changed.append("model input or classes (data.*)")
        if changed:
            run_dir, first = self.tr.run_dir, changed[0]
            was_text = f"{first}={short(old[first], 40)}" if first in old else "other data"
            raise CheckpointError(
                f"cannot resume {run_dir} with a different {', '.join(changed[:4])} "
                f"(it was trained with {was_text}): its saved state does not fit. "
                f"Drop that --set, or start a new run from its config: cnnlab train --recipe "
                f"{run_dir / 'config.yaml'} --name NEW_NAME --set ..."
            )

    def reuse_numerics(self, ck) -> None:
        """Run on the numerics the checkpoint was made with (threads, and under
        ``train.exact_resume`` the warnings when torch or the device differ)."""
        tr = self.tr
        was = ck.meta.get("config") if isinstance(ck.meta.get("config"), dict) else {}
        was_threads = (was.get("train") or {}).get("threads", tr.cfg.train.threads)
        for note in numerics.reuse(
            tr.rt, ck.meta.get("numerics"), threads_asked=was_threads != tr.cfg.train.threads,
            exact=tr.cfg.train.exact_resume, run=str(tr.run_dir),
        ):  # fmt: skip
            tr.warn(note)

    def resume(self) -> dict | None:
        """Restore the Trainer from the run's checkpoint: its history, where it goes on,
        and the mid-epoch position to continue from (returned; None at an epoch's end)."""
        tr = self.tr
        ck = self.load()
        if ck is None:
            tr.history = []
            tr.files.metrics_dirty = (tr.run_dir / "metrics.jsonl").exists()
            return None
        self.check_same_run(ck)
        self.reuse_numerics(ck)
        self.load_weights(ck)
        self.load_optimizers(ck)
        tr.task.load_state(
            {k[5:]: v for k, v in ck.tensors.items() if k.startswith("task.")},
            ck.meta.get("task", {}),
        )
        tr.schedule.load_state_dict(ck.meta["schedule"])
        tr.stepper.load_state(tr.optimizers, ck.meta.get("scalers"))
        tr.lr_scale = float(ck.meta.get("lr_scale", 1.0))
        tr.skipped_steps = int(ck.meta.get("skipped_steps", 0))
        tr.apply_lr_scale()
        restore_rng(ck.tensors, ck.meta.get("rng", {}), tr.generator)
        tr.start_epoch = int(ck.meta["epoch"]) + 1
        pos, pending = ck.meta.get("position"), None
        if pos is not None:
            tr.start_epoch = int(pos["epoch"])
            keep = tr.dist.main  # the saved sums are global: one rank carries them on
            sums = {k[4:]: v * keep for k, v in ck.tensors.items() if k.startswith("acc.")}
            pending = dict(pos, epoch_rng=ck.tensors["rng.epoch_start"], sums=sums)
        tr.best_metric = float(ck.meta.get("best_metric", -math.inf))
        tr.history = tr.files.reconciled_history(ck, tr.start_epoch)
        return pending

    def load_weights(self, ck) -> None:
        try:
            self.saved_module().load_state_dict(ck.model_state)
        except RuntimeError as e:
            raise CheckpointError(
                f"{ck.path}: weights do not fit the model ({str(e).splitlines()[0]})"
            ) from None

    def load_optimizers(self, ck) -> None:
        opts = self.tr.optimizers
        try:
            st = ck.optimizer_state()
            if st is not None:
                opts[0].load_state_dict(st)
            for k, (opt, om) in enumerate(zip(opts[1:], ck.meta.get("optimizers", [])), 1):
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
