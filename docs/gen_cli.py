"""Render the CLI reference (``cli.md``) from cnnlab's argparse parsers.

The mkdocs hook (``docs/hooks.py``) calls :func:`render` at build time, so the page never
goes stale; ``python docs/gen_cli.py`` prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    from cnnlab.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help text to the terminal width
    parser = build_parser()
    subs = subparsers(parser)
    lines = [
        "# CLI reference",
        "",
        "<!-- generated at build time by docs/gen_cli.py from cnnlab's argparse parsers -->",
        "",
        "Every command prints this text with `--help`. A user mistake prints one line "
        "starting `cnnlab: error:` and exits with code 2.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for name, sub in subs.items():
        lines += [f"## cnnlab {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
