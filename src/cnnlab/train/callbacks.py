"""Trainer callbacks: progress display, early stopping, NaN guard; and the run's report
and figures (``ReportOnEnd``, ``write_gan_figures``): the one module of ``train/`` that
reaches ``report/`` — everything else in ``train/`` goes through it."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from cnnlab.errors import CheckpointError, CnnlabError
from cnnlab.progress import echo, progress
from cnnlab.runs.files import atomic_write_bytes


class Callback:
    def on_fit_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_step(self, trainer, step: int, loss) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None: ...
    def on_fit_end(self, trainer) -> None: ...


# the epoch line: (label, ((metric, short name), ...)) for whichever metrics a task reports
EPOCH_LINE = (
    ("train", (("train_loss", "loss"), ("train_acc", "acc"))),
    ("val", (("val_acc", "acc"),)),
    ("test", (("test_loss", "loss"), ("test_acc", "acc"))),
    ("", (("loss_d", "loss D"), ("loss_g", "G"), ("d_real", "D(x)"), ("d_fake", "D(G(z))"))),
    ("", (("fd", "FD"), ("class_fidelity", "fidelity"))),
)


class Progress(Callback):
    """A progress bar per epoch (``cnnlab.progress``: step, loss, images/s, ETA) on a TTY;
    the run's line and one line per epoch either way.

    Reading the loss forces a host sync, so the bar refreshes the loss only every
    ``refresh`` steps.
    """

    def __init__(self, quiet: bool = False, refresh: int = 50, stream=None):
        self.quiet = quiet
        self.refresh = refresh
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = self.shown = None

    def on_fit_start(self, trainer) -> None:
        if self.quiet:
            return
        self.print(f"run {trainer.run_dir}  |  {trainer.describe()}")
        line = getattr(trainer.task, "class_line", None)  # train images per class
        if line is not None and line():
            self.print(line())

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.t0 = time.perf_counter()
        if self.quiet or not self.tty:
            return
        self.epoch = f"epoch {epoch}/{trainer.cfg.train.epochs}"
        self.shown = progress(self.epoch, trainer.steps_per_epoch, stream=self.stream)
        self.bar = self.shown.__enter__()

    def on_step(self, trainer, step: int, loss) -> None:
        if self.bar is None:
            return
        if step % self.refresh == 0:
            dt = time.perf_counter() - self.t0
            ips = step * trainer.cfg.train.batch_size / max(dt, 1e-9)
            self.bar.describe(f"{self.epoch} loss {float(loss):.4f} {ips:,.0f} img/s")
        self.bar.advance()

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        self.close()
        if self.quiet:
            return
        parts = [f"epoch {epoch:>3}/{trainer.cfg.train.epochs}"]
        for label, keys in EPOCH_LINE:
            shown = [f"{short} {m[k]:.4f}" for k, short in keys if k in m]
            if shown:
                parts.append(" ".join([label, *shown]) if label else " ".join(shown))
        parts.append(f"{m['seconds']:.1f}s {m['images_per_s']:,.0f} img/s lr {m['lr']:.2e}")
        self.print("  ".join(parts))

    def on_fit_end(self, trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.shown is not None:
            self.shown.__exit__(None, None, None)
            self.bar = self.shown = None

    def print(self, text: str) -> None:
        echo(text, self.stream)


class NonFiniteLoss(CnnlabError):
    pass


class NaNGuard(Callback):
    """Stops the run when the epoch's training loss is not finite (checked once per
    epoch, where the metrics are read anyway)."""

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        if not math.isfinite(m["train_loss"]):
            raise NonFiniteLoss(
                f"training loss became {m['train_loss']} in epoch {epoch}; the last good checkpoint "
                "is kept. Lower the learning rate (--lr) or enable gradient clipping "
                "(--set train.grad_clip=1.0)"
            )


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_acc", patience: int = 5, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best, self.bad = -math.inf, 0

    def on_epoch_end(self, trainer, epoch: int, m: dict) -> None:
        v = m.get(self.monitor)
        if v is None:
            return
        if v > self.best + self.min_delta:
            self.best, self.bad = v, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                trainer.stop_reason = (
                    f"early stop: {self.monitor} did not improve for {self.patience} epochs"
                )
                trainer.should_stop = True


class ReportOnEnd(Callback):
    """Write ``<run>/report.html`` when training ends. A failure to plot never fails the
    training run: it is one warning line on stderr; a disk that cannot take the file
    (full, read-only) adds nothing to the run's own one-line error about that disk."""

    def on_fit_end(self, trainer) -> None:
        if not getattr(trainer, "history", None) or not trainer.dist.main:  # rank 0 writes
            return
        try:
            from cnnlab.report.html import write_report

            path = write_report(trainer.run_dir, model=trainer.model, quiet=True)
            if not getattr(trainer, "quiet", False):
                print(f"report: {path}")
        except CheckpointError:  # the disk: said once by the run (cnnlab report RUN redoes it)
            pass
        except Exception as e:  # noqa: BLE001 - the run itself succeeded
            print(
                f"cnnlab: warning: run report not written ({type(e).__name__}: {e}); "
                f"cnnlab report {trainer.run_dir} retries",
                file=sys.stderr,
            )


def write_gan_figures(run_dir, epoch: int, samples, nrow: int | None, history, fd_real) -> None:
    """A GAN run's figures after epoch ``epoch``: the grid of ``samples`` (``nrow`` per
    row) as ``samples/epoch_NNN.png`` and, given the ``history`` up to this epoch, its
    curves (``losses.png``; with judge scores ``fid.png``, ``fd_real`` marked)."""
    from cnnlab.report.gan import grid_png, plot_gan_history

    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / "samples" / f"epoch_{epoch:03d}.png", grid_png(samples, nrow))
    if history:
        plot_gan_history(run_dir, history, fd_real)
