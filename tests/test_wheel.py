"""The built wheel holds everything: installed into a fresh venv, `cnnlab` runs from any folder.

The venv has no network and no copy of the dependencies: a ``.pth`` file points it at this
interpreter's site-packages (torch & co.). The wheel's own ``cnnlab`` sits in the venv's
site-packages, which comes first on ``sys.path``; the checkout is never on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, src])
    (wheel,) = dist.glob("cnnlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("recipes/lenet5-mnist.yaml", "deploy/static/index.html", "studies/references.py"):
        assert f"cnnlab/{f}" in names, f"{f} is not in the wheel"

    env_dir = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    py = env_dir / "bin" / "python"
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(site.stdout.strip(), "deps.pth").write_text("\n".join(deps) + "\n")
    run([*pip, "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    return env_dir


def clean_env(tmp_path) -> dict:
    """No PYTHONPATH (it may name the checkout's src/), an isolated HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return dict(env, HOME=str(tmp_path))


def test_installed_wheel_trains_from_another_folder(venv, tmp_path):
    env = clean_env(tmp_path)
    py, cli = venv / "bin" / "python", venv / "bin" / "cnnlab"
    where = run([py, "-c", "import cnnlab; print(cnnlab.__file__)"], cwd=tmp_path, env=env)
    origin = Path(where.stdout.strip()).resolve()
    assert origin.is_relative_to(venv.resolve()) and not origin.is_relative_to(ROOT)

    runs = tmp_path / "runs"
    r = run(
        [cli, "train", "--recipe", "lenet5-mnist", "--dataset", "mnist-sample", "--epochs", "1",
         "--set", "train.device=cpu", "--runs-dir", runs, "--name", "w", "--quiet"],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert "test accuracy" in r.stdout
    assert list((runs / "w" / "checkpoints").glob("*.safetensors"))

    r = run([cli, "bench", "--help"], cwd=tmp_path, env=env)
    assert "cnnlab.studies.references" in r.stdout
    # the bench worker's entry point resolves inside the installed package
    w = subprocess.run(
        [py, "-m", "cnnlab.studies.bench"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert w.returncode == 2 and "--worker" in w.stderr, w.stderr[-2000:]
