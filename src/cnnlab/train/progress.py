"""A rich progress bar with one row per phase (a sweep, reading files, k folds), each
with its count and an ETA; nothing at all when quiet."""

from __future__ import annotations


class PhaseBar:
    """``with PhaseBar() as bar: bar(phase, done, total, note=...)``. A phase's row is
    made on its first call; ``note`` (e.g. the current loss) is shown after the count."""

    def __init__(self, quiet: bool = False):
        self.quiet, self.bar, self.rows = quiet, None, {}

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
        return self

    def __call__(self, phase: str, done: int, total: int, note: str = "") -> None:
        if self.bar is None:
            return
        if phase not in self.rows:
            self.rows[phase] = self.bar.add_task(phase, total=total, note=note)
        self.bar.update(self.rows[phase], completed=done, note=note)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
