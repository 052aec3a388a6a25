"""benchmarks/gpu_results.sh runs end to end in its tiny CPU mode and writes result files
that the results page would read (and, being smoke runs, ignores)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_gpu_results_script_tiny_on_cpu(tmp_path):
    pytest.importorskip("torchvision")  # the bench's reference loops use it
    out = tmp_path / "results"
    env = dict(
        os.environ,
        GPU_RESULTS_TINY="1",
        PYTHON=sys.executable,
        GPU_RESULTS_RUNS=str(tmp_path / "runs"),
        CUDA_VISIBLE_DEVICES="",
    )
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_results.sh"), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    names = {"alexnet-cifar10", "alexnet-fashion-mnist-224", "bench", "alexnet", "bench-tta"}
    assert set(files) == names
    for name, d in files.items():
        assert d["tiny"] is True
        for key in ("command", "commit", "date", "machine", "device", "torch", "seeds", "kind"):
            assert key in d, (name, key)
    assert 0.0 <= files["alexnet-fashion-mnist-224"]["test_acc"][0] <= 1.0
    assert {"naive", "resident", "cnnlab"} <= set(files["bench"]["loops"])
    spec = importlib.util.spec_from_file_location("rr", ROOT / "benchmarks" / "render_results.py")
    rr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rr)
    iso = tmp_path / "iso"  # the result files alone, as <folder>/<name>.json
    shutil.copytree(out, iso / "results")
    assert rr.load(iso) == []  # smoke results are never rendered


def test_without_cifar10_the_row_is_skipped_with_one_line(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    env.pop("CNNLAB_DATA", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_results.py"),
            "--parts",
            "cifar",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CIFAR-10 not found" in r.stdout and "row skipped" in r.stdout
    assert not (tmp_path / "out").exists()
