"""Helpers shared by the sub-commands: the parser of a command, the flags several commands
take, and output.

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


def add_command(
    sub, name: str, func: Callable, help: str, description: str | None = None, raw: bool = False
) -> argparse.ArgumentParser:
    """The parser of ``cnnlab <name>``, which runs ``func(args)``: ``help`` is its line in
    ``cnnlab --help``, ``description`` heads its own ``--help`` (``raw``: printed as
    written, line breaks and all — for the commands whose description lists examples)."""
    kw = {"formatter_class": argparse.RawDescriptionHelpFormatter} if raw else {}
    p = sub.add_parser(name, help=help, description=description, **kw)
    p.set_defaults(func=func)
    return p


def add_choice(p, flag: str, choices, help: str | None = None, **kw) -> None:
    """An option taking one of ``choices``; the first is the default unless ``default=``."""
    p.add_argument(flag, choices=choices, default=kw.pop("default", choices[0]), help=help, **kw)


# -- a run to read -------------------------------------------------------------------------


def add_run_arg(p, help_text: str = "run directory (runs/<name>) or a checkpoint file") -> None:
    p.add_argument("run", help=help_text)


def add_checkpoint_arg(p, flag: str = "--which", help: str = "checkpoint (default best)") -> None:
    add_choice(p, flag, ["best", "last"], help)


def add_analysis_args(p, dataset: str | None = None) -> None:
    """What every analysis of a run takes: ``--data-dir`` (and ``--dataset``), ``--device``
    and ``--json``."""
    add_data_args(p, dataset=dataset)
    add_device_arg(p)
    add_json_arg(p)


# -- what a training run is made of ---------------------------------------------------------


def add_model_arg(p) -> None:
    p.add_argument("--model", help="model name (see `cnnlab models`); default lenet5")


def add_data_args(
    p,
    dataset: str | None = None,
    data_dir: str = "folder holding the dataset files (or a <name>/ folder of them)",
) -> None:
    """``--data-dir`` and, given its help text, ``--dataset``."""
    if dataset:
        p.add_argument("--dataset", help=dataset)
    p.add_argument("--data-dir", help=data_dir)


def add_training_args(
    p, epochs: str | None = None, batch_size: str | None = None, lr: str | None = None
) -> None:
    """Of ``--epochs``, ``--batch-size`` and ``--lr``, those given a help text."""
    for flag, tp, text in (("--epochs", int, epochs), ("--batch-size", int, batch_size),
                           ("--lr", float, lr)):  # fmt: skip
        if text:
            p.add_argument(flag, type=tp, help=text)


def add_device_arg(p, default: str | None = "auto") -> None:
    """``--device``; ``default=None`` leaves the choice to the config."""
    p.add_argument("--device", default=default, help=DEVICE_HELP)


def add_seed_arg(p, help: str | None = None, default: int | None = None) -> None:
    p.add_argument("--seed", type=int, default=default, help=help)


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


RUNS_DIR_HELP = "where run directories go (default ./runs)"


def add_output_args(
    p,
    name: str | None = "run name (default: <model>-<dataset>-<time>)",
    runs_dir_default: str | None = None,
    report_to: bool = False,
) -> None:
    """``--name`` (given its help text), ``--runs-dir`` and, for a training run,
    ``--report-to``: the experiment trackers it logs to (run.report_to)."""
    if name:
        p.add_argument("--name", help=name)
    p.add_argument("--runs-dir", default=runs_dir_default, help=RUNS_DIR_HELP)
    if report_to:
        p.add_argument(
            "--report-to",
            metavar="TRACKERS",
            help="log the run to experiment trackers: tensorboard, mlflow (comma-separated) or "
            "none (default); MLflow uses $MLFLOW_TRACKING_URI or <runs-dir>/mlflow.db",
        )


def add_resume_arg(p, help: str) -> None:
    p.add_argument("--resume", metavar="RUN", help=help)


def add_quiet_arg(p, help: str = "print only the final result") -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def shortcut_args(args) -> dict:
    """The training shortcuts a command took (``--model``, ``--epochs``, ...: the keyword
    arguments of ``cnnlab.fit``), by name; None where a flag was not given."""
    from cnnlab.train.api import SHORTCUTS

    return {k: getattr(args, k) for k in SHORTCUTS if hasattr(args, k)}


def kwargs_of(args, *names: str) -> dict:
    """``{name: args.<name>}``: the flags a library function takes under their own names."""
    return {n: getattr(args, n) for n in names}


def resolved_config(args, quiet: bool):
    """The config a training command's flags make — defaults → ``--recipe`` → ``--set`` →
    the flags, then what an image folder chooses (printed unless ``quiet``) — validated."""
    from cnnlab.train.api import build_config, flag_keys
    from cnnlab.train.auto import apply
    from cnnlab.train.validate import validate

    shortcuts = shortcut_args(args)
    cfg = build_config(None, args.recipe, args.overrides, **shortcuts)
    apply(cfg, None, args.recipe, args.overrides, flag_keys(shortcuts), quiet)
    return validate(cfg)


# -- output ---------------------------------------------------------------------------------


def add_json_arg(p) -> None:
    p.add_argument("--json", action="store_true", help="print the full result as JSON")


def add_listing_arg(p, *flags: str, names: str | Callable[[], Iterable[str]], **kw) -> None:
    """An option whose help shows ``%(names)s``, listed only when help is printed.

    ``names``: a function returning the names, or ``"module:ATTR"`` (a tuple or registry of
    that module, imported then)."""
    p.add_argument(*flags, action=_StoreWithListing, names=names, **kw)


def add_names_arg(p, flag: str, names: str, more: str) -> None:
    """An option taking a comma list of names: those of ``names`` (``"module:ATTR"``, listed
    in the help when it is printed), then ``more`` in the help (the default, ...)."""
    add_listing_arg(p, flag, help=f"comma list of %(names)s {more}", names=names)


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
