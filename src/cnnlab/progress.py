"""Progress for any long step: a rich bar with what is being done and an ETA on a terminal,
a few plain lines when the output is piped or logged, nothing for a step that ends fast.

On the ground floor, so data downloads, analyses, evaluation and export use the same one::

    from cnnlab.progress import progress, track

    for batch in track(loader, "evaluating", total=len(loader)):
        ...
    with progress("corruptions", total=45) as bar:
        for c in corruptions:
            ...
            bar.advance()

Everything goes to stderr (stdout stays clean for ``--json``) unless a step names its
stream, as training does for its per-epoch bar; ``echo(line)`` prints a line above a bar
that is showing. Nested steps become extra rows of the same bar. ``CNNLAB_PROGRESS=0``
turns it off, ``=plain`` forces plain lines.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

PLAIN_AFTER_S = 2.0  # a piped step says nothing until it has run this long
PLAIN_EVERY_S = 10.0  # then a line at most this often

_live: dict = {"bar": None}


def _on_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def mode(stream=None) -> str:
    """``rich`` on a terminal, ``plain`` when piped, ``off`` by ``CNNLAB_PROGRESS=0``."""
    env = os.environ.get("CNNLAB_PROGRESS", "").strip().lower()
    if env in ("0", "off", "false", "no"):
        return "off"
    if env == "plain":
        return "plain"
    return "rich" if _on_terminal(stream or sys.stderr) else "plain"


def eta_text(done: float, total: float | None, elapsed: float) -> str:
    if not total or done <= 0:
        return ""
    left = elapsed * (total - done) / done
    return f", about {left:.0f}s left" if left >= 1 else ""


class Bar:
    """One step's progress: ``advance(n)``; ``describe(text)`` renames it."""

    def __init__(self, description: str, total: float | None, kind: str, stream):
        self.description, self.total, self.kind, self.stream = description, total, kind, stream
        self.done = 0.0
        self.t0 = self.last = time.perf_counter()
        self.said = False
        self.task = None
        if kind == "rich":
            self.task = _live["bar"].add_task(description, total=total)

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self.kind == "rich":
            _live["bar"].update(self.task, advance=n)
        elif self.kind == "plain":
            now = time.perf_counter()
            due = PLAIN_EVERY_S if self.said else PLAIN_AFTER_S
            if now - self.last >= due:
                self._say(now)

    def describe(self, description: str) -> None:
        self.description = description
        if self.kind == "rich":
            _live["bar"].update(self.task, description=description)

    def _say(self, now: float, end: str = "") -> None:
        of = f"/{self.total:,.0f}" if self.total else ""
        eta = "" if end else eta_text(self.done, self.total, now - self.t0)
        text = f"{self.description}: {self.done:,.0f}{of}{eta}{end}"
        print(text, file=self.stream, flush=True)
        self.said, self.last = True, now

    def close(self) -> None:
        if self.kind == "rich":
            _live["bar"].remove_task(self.task)
        elif self.kind == "plain" and self.said:
            now = time.perf_counter()
            self._say(now, f" done in {now - self.t0:.0f}s")


def echo(text: str, stream=None) -> None:
    """Print a line on ``stream`` (stdout by default); while a bar shows on the terminal,
    above the bar rather than through it."""
    stream = stream or sys.stdout
    if _live["bar"] is not None and _on_terminal(stream):
        _live["bar"].console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        print(text, file=stream, flush=True)


def _start_rich(stream):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=True,
        # lines printed while the bar shows go above it, but only from a stream on the
        # terminal: `cnnlab bench > log` keeps its lines in the log
        redirect_stdout=_on_terminal(sys.stdout),
        redirect_stderr=_on_terminal(sys.stderr),
    )
    bar.start()  # raises LiveError when another live display runs
    return bar


@contextmanager
def progress(
    description: str, total: float | None = None, stream=None, enabled: bool = True
) -> Iterator[Bar]:
    """A progress bar for a step of ``total`` units (None: unknown length); ``enabled=False``
    counts silently (where the step shows its own bar, as training does)."""
    stream = stream or sys.stderr
    kind = mode(stream) if enabled else "off"
    outer = False
    if kind == "rich" and _live["bar"] is None:
        try:
            _live["bar"] = _start_rich(stream)
            outer = True
        except Exception:  # noqa: BLE001 - another live display owns the terminal
            kind = "off"
    bar = Bar(description, total, kind, stream)
    try:
        yield bar
    finally:
        bar.close()
        if outer:
            _live["bar"].stop()
            _live["bar"] = None


def track(
    items: Iterable[T], description: str, total: float | None = None, stream=None
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, stream) as bar:
        for item in items:
            yield item
            bar.advance()


class Phases:
    """Several phases of one job, each a row of the same bar: ``with Phases() as bar:
    bar(phase, done, total, note="")``. A phase's row opens on its first call and closes
    when the next phase starts or the job ends; ``note`` (e.g. the current loss) follows
    the phase's name. ``quiet=True`` shows nothing."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet, self.stream = quiet, stream
        self.phase, self.ctx, self.bar = None, None, None

    def __enter__(self) -> Phases:
        return self

    def __call__(self, phase: str, done: float, total: float | None, note: str = "") -> None:
        if self.quiet:
            return
        if phase != self.phase:
            self._close()
            self.phase = phase
            self.ctx = progress(phase, total, self.stream)
            self.bar = self.ctx.__enter__()
        if note:
            self.bar.describe(f"{phase} {note}")
        self.bar.advance(done - self.bar.done)

    def _close(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            self.ctx = self.bar = None

    def __exit__(self, *exc) -> bool:
        self._close()
        return False
