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
    assert "BROKEN" not in p.stdout and p.stdout.count("KEPT") >= 4


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the checkout")
def test_every_module_of_the_package_stands_on_a_floor():
    """The layers contract is exhaustive (import-linter then refuses a module on no floor);
    checked here too, so the list and the folders cannot drift apart unnoticed."""
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c for c in cfg["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert layers["exhaustive"] and layers["containers"] == ["cnnlab"]
    floors = {m.strip() for floor in layers["layers"] for m in floor.split("|")}
    modules = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert modules == floors


def test_no_module_imports_the_root_package():
    """``cnnlab.fit``, ``cnnlab.evaluate`` ... load lazily (PEP 562): they are for users. A
    module of the package that used them would hide the import from import-linter."""
    submodules = {p.stem for p in PKG.glob("*.py")} | {p.name for p in PKG.iterdir() if p.is_dir()}
    bad = []
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                bad += [f"{p.relative_to(PKG)}: import cnnlab" for a in node.names
                        if a.name == "cnnlab"]  # fmt: skip
            elif isinstance(node, ast.ImportFrom) and node.module == "cnnlab" and not node.level:
                bad += [f"{p.relative_to(PKG)}: from cnnlab import {a.name}" for a in node.names
                        if a.name not in submodules]  # fmt: skip
    assert bad == []


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
