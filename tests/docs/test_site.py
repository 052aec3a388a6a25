"""The documentation site builds with ``mkdocs build --strict`` (a broken link fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_site_builds_strict(tmp_path):
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter"):
        pytest.importorskip(mod)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    site = tmp_path / "site"
    cli = (site / "cli" / "index.html").read_text()
    assert "cnnlab train" in cli and "--recipe" in cli  # generated from the parsers
    api = (site / "api" / "index.html").read_text()
    assert "build_config" in api and "load_dataset" in api  # generated from docstrings
    assert (site / "tutorials" / "01-workflow" / "index.html").is_file()
