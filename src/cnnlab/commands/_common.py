"""Helpers shared by the sub-commands: the flags several commands take, and output.

Nothing here imports torch: ``cnnlab --help`` builds every command's parser, so a flag
whose help lists a registry (models, methods, recipes) gets that text lazily, when the
help is printed (:func:`add_listing_arg`).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N"


def add_run_arg(p, help_text: str = "run directory (runs/<name>) or a checkpoint file") -> None:
    p.add_argument("run", help=help_text)


def add_data_args(
    p,
    dataset: str | None = None,
    data_dir: str = "folder holding the dataset files (or a <name>/ folder of them)",
) -> None:
    """``--data-dir`` and, given its help text, ``--dataset``."""
    if dataset:
        p.add_argument("--dataset", help=dataset)
    p.add_argument("--data-dir", help=data_dir)


def add_device_arg(p, default: str | None = "auto") -> None:
    """``--device``; ``default=None`` leaves the choice to the config."""
    p.add_argument("--device", default=default, help=DEVICE_HELP)


SET_HELP = "override a config key, e.g. --set optim.name=sgd (repeatable)"


def add_overrides_arg(
    p,
    help_text: str = SET_HELP,
    dest: str = "overrides",
    metavar: str = "KEY=VALUE",
) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.<dest>``, a list."""
    p.add_argument("--set", dest=dest, action="append", default=[], metavar=metavar, help=help_text)


def add_recipe_args(p, overrides_help: str = SET_HELP) -> None:
    """``--recipe`` (a shipped name or a YAML path; the names listed in the help) and ``--set``."""
    add_listing_arg(
        p,
        "--recipe",
        help="a shipped recipe (%(names)s) or a YAML file's path",
        names=recipe_names,
    )
    add_overrides_arg(p, overrides_help)


def recipe_names(spaces: bool = False) -> list[str]:
    """Shipped recipes (``spaces=True``: the sweep search spaces, ``space-*``)."""
    from cnnlab.config import shipped_recipes

    return [n for n in shipped_recipes() if n.startswith("space-") == spaces]


def add_output_args(
    p,
    name: str | None = "run name (default: <model>-<dataset>-<time>)",
    runs_dir_default: str | None = None,
) -> None:
    """``--name`` (given its help text) and ``--runs-dir``."""
    if name:
        p.add_argument("--name", help=name)
    p.add_argument(
        "--runs-dir",
        default=runs_dir_default,
        help="where run directories go (default ./runs)",
    )


def add_report_to_arg(p) -> None:
    """``--report-to``: the experiment trackers a training run logs to (run.report_to)."""
    p.add_argument(
        "--report-to",
        metavar="TRACKERS",
        help="log the run to experiment trackers: tensorboard, mlflow (comma-separated) or "
        "none (default); MLflow uses $MLFLOW_TRACKING_URI or <runs-dir>/mlflow.db",
    )


def add_analysis_args(p, dataset: str | None = None) -> None:
    """What every analysis of a run takes: ``--data-dir`` (and ``--dataset``), ``--device``
    and ``--json``."""
    add_data_args(p, dataset=dataset)
    add_device_arg(p)
    add_json_arg(p)


def add_checkpoint_arg(p, flag: str = "--which") -> None:
    p.add_argument(flag, default="best", choices=["best", "last"], help="checkpoint (default best)")


def add_json_arg(p) -> None:
    p.add_argument("--json", action="store_true", help="print the full result as JSON")


def add_listing_arg(p, *flags: str, names: str | Callable[[], Iterable[str]], **kw) -> None:
    """An option whose help shows ``%(names)s``, listed only when help is printed.

    ``names``: a function returning the names, or ``"module:ATTR"`` (a tuple or registry of
    that module, imported then)."""
    p.add_argument(*flags, action=_StoreWithListing, names=names, **kw)


class _Listing:
    """Text made on demand: argparse fills ``%(names)s`` in with ``str()`` of it."""

    def __init__(self, names: str | Callable[[], Iterable[str]]):
        self.names = names

    def __str__(self) -> str:
        if callable(self.names):
            return ", ".join(self.names())
        module, attr = self.names.split(":")
        return ", ".join(getattr(importlib.import_module(module), attr))


class _StoreWithListing(argparse.Action):
    """A plain store action carrying a lazily made ``names`` for its help text."""

    def __init__(self, option_strings, dest, names, **kw):
        super().__init__(option_strings, dest, **kw)
        self.names = _Listing(names)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def print_json_or(args, obj, fallback) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=1))
    else:
        fallback()


def table(rows: list[list], header: list[str], title: str | None = None) -> None:
    """Print a table with rich (plain text when not a terminal). The first column (a run,
    a class) is never wrapped: the other columns fold instead."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for i, h in enumerate(header):
        if i == 0:
            t.add_column(h, no_wrap=True, min_width=max([len(str(r[0])) for r in rows] + [1]))
        else:
            t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*[str(c) for c in r])
    con = Console()
    # piped or logged: the natural width, so a wide table (a sweep's trials) never folds
    con = con if con.is_terminal else Console(width=max(1000, con.width))
    con.print(t, crop=False)


def output_path(out: str | None, folder, name: str) -> tuple[Path, str]:
    """Where a command's output file goes: ``--out`` as given, else ``folder/name``, numbered
    (``name-2``, ``-3``, ...) rather than overwriting an earlier one. Returns the path and
    a note to print when ``--out`` replaces a file (no file is ever replaced silently)."""
    if out:
        p = Path(out)
        if p.is_dir():
            from cnnlab.errors import CnnlabError

            raise CnnlabError(f"--out {out!r} is a folder; give a file name")
        return p, (f" (replaced the earlier {p.name})" if p.exists() else "")
    p = Path(folder) / name
    i = 2
    while p.exists():
        p = Path(folder) / f"{Path(name).stem}-{i}{Path(name).suffix}"
        i += 1
    return p, ""
