"""MkDocs hook: adds the CLI reference page, generated from the argparse parsers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", Path(__file__).with_name("gen_cli.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def on_files(files, config):
    files.append(File.generated(config, "cli.md", content=_gen_cli().render()))
    return files
