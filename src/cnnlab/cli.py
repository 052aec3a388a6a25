"""The ``cnnlab`` command. Thin: parse arguments, call the API, print.

Each sub-command lives in ``cnnlab/commands/<name>.py`` with ``ORDER``, ``register(sub)``
(adds its parser and ``func``); they are discovered, so adding one touches no other file.
Every parser is built at each start, so a command module imports nothing heavy at module
level or in ``register``: torch loads inside ``func`` (``cnnlab --help`` stays well under a
second; tests/test_cli.py checks it).
A user mistake (CnnlabError) prints one line and exits with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys

from cnnlab._version import __version__
from cnnlab.errors import CnnlabError


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported as every other one is: one ``cnnlab: error:`` line
    (and exit code 2), naming the command's ``--help``; a float option must be finite."""

    def error(self, message: str):
        self.exit(2, f"cnnlab: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        for dest, v in vars(ns).items():
            if isinstance(v, float) and not math.isfinite(v):
                self.error(f"argument --{dest.replace('_', '-')}: must be a finite number, got {v}")
        return ns, rest


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="cnnlab",
        description="Train, understand, stress-test and ship a classic image classifier.",
    )
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from cnnlab import commands

    mods = [
        importlib.import_module(f"{commands.__name__}.{m.name}")
        for m in pkgutil.iter_modules(commands.__path__)
        if not m.name.startswith("_")
    ]
    for mod in sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        mod.register(sub)
    return p


# what `pip install cnnlab[train]` adds to the serving-only install
TRAIN_EXTRA = ("torch", "torchvision", "safetensors", "matplotlib", "mlxtend", "captum", "onnx",
               "onnxscript", "optuna", "cleanlab", "sklearn")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except CnnlabError as e:
        print(f"cnnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise  # a broken install of something else: its traceback is the report
        print(
            f"cnnlab: error: `cnnlab {args.command}` needs {e.name.split('.')[0]}, which this "
            "install lacks (a serving-only install serves exported .onnx files); install "
            "the rest with: pip install 'cnnlab[train]'",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # `cnnlab runs | head`: the reader left; not an error
        sys.stdout = None  # nothing more to flush into the closed pipe at exit
        return 0
    except OSError as e:  # the file system said no (permissions, a full disk, ...)
        where = f" ({e.filename})" if e.filename else ""
        print(f"cnnlab: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
