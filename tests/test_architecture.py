"""The house rules, checked: imports point down the floors (import-linter), no cycles, no
private name used across modules, nothing found through ``__file__`` paths."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab

PKG = Path(cnnlab.__file__).resolve().parent
ROOT = PKG.parents[1]


def sources():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the checkout")
def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (pip install -e '.[dev]')"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "BROKEN" not in p.stdout and p.stdout.count("KEPT") >= 2


def test_no_private_name_is_imported_across_modules():
    bad = []
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnlab"):
                bad += [
                    f"{p.relative_to(PKG)}: {a.name}"
                    for a in node.names
                    if a.name[:1] == "_" and a.name != "__version__"
                ]
    assert bad == []


def test_nothing_is_found_through_file_paths():
    bad = [
        str(p.relative_to(PKG))
        for p in sources()
        if "parents[" in p.read_text(encoding="utf-8")
        and "__file__" in p.read_text(encoding="utf-8")
    ]
    assert bad == []
