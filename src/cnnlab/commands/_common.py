"""Helpers shared by the sub-commands."""

from __future__ import annotations

import json


def add_run_arg(p, help_text: str = "run directory (runs/<name>) or a checkpoint file") -> None:
    p.add_argument("run", help=help_text)


def print_json_or(args, obj, fallback) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=1))
    else:
        fallback()


def table(rows: list[list], header: list[str], title: str | None = None) -> None:
    """Print a table with rich (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for h in header:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*[str(c) for c in r])
    Console(width=max(100, Console().width)).print(t)
