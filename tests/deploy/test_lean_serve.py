"""Serving an exported .onnx file with no torch installed: the base install.

The venv below has every package of this interpreter except torch and what depends on
it (a filtered view of site-packages through a ``.pth`` file; no network, no copies), so
``import torch`` fails there for real. `cnnlab serve model.onnx` must start, answer the
same predictions as the ONNX backend here, and stay small."""

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.cli import main

SRC = Path(cnnlab.__file__).resolve().parents[1]
# torch and the packages that need it: none of them is in a serving-only install
HEAVY = ("torch", "functorch", "torchgen", "torchvision", "triton", "nvidia", "captum",
         "cuda", "safetensors", "mlxtend", "optuna", "cleanlab", "sklearn", "scikit_learn",
         "matplotlib", "onnxscript", "tensorboard", "mlflow")  # fmt: skip


@pytest.fixture(scope="module")
def lean_python(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lean")
    view = tmp / "site"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        base = entry.name.split("-")[0].split(".")[0].lower()
        if any(base.startswith(h) for h in HEAVY) or entry.name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "lean.pth").write_text(f"{SRC}\n{view}\n")
    return py


@pytest.fixture(scope="module")
def onnx_file(tiny_trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", str(tiny_trained_run), "--out", str(out)]) == 0
    return out


def lean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return dict(env, PYTHONNOUSERSITE="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_lean_venv_has_no_torch(lean_python):
    r = subprocess.run([lean_python, "-c", "import torch"], capture_output=True, text=True,
                       env=lean_env())  # fmt: skip
    assert r.returncode == 1 and "No module named 'torch'" in r.stderr


def test_serve_an_onnx_export_without_torch(lean_python, onnx_file):
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.Popen(
        [lean_python, "-m", "cnnlab", "serve", str(onnx_file), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lean_env(),
    )  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.loads(r.read())["status"] == "ok"
                    break
            except OSError:
                assert p.poll() is None, p.stderr.read()
                assert time.monotonic() - t0 < 120  # a hang, not a slow start
                time.sleep(0.1)
        rss_mb = (
            int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS")
                )
            )
            / 1024
        )
        pixels = np.random.default_rng(0).random((2, 1, 28, 28)).round(3).tolist()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=json.dumps({"pixels": pixels}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            got = json.loads(r.read())
    finally:
        p.terminate()
        p.wait(timeout=30)
    # the same request to the same export served here, where torch is installed
    from fastapi.testclient import TestClient

    from cnnlab.deploy.serve import ServeConfig, create_app, open_backend

    with TestClient(create_app(open_backend(str(onnx_file)), ServeConfig())) as c:
        want = c.post("/v1/predict", json={"pixels": pixels}).json()
    assert got == want and got["backend"] == "onnx" and len(got["predictions"]) == 2
    assert rss_mb < 200, f"{rss_mb:.0f} MB resident"


def test_training_without_torch_is_one_line(lean_python, tmp_path):
    r = subprocess.run([lean_python, "-m", "cnnlab", "train", "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True, env=lean_env())  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("cnnlab: error: `cnnlab train` needs torch")
    assert "pip install 'cnnlab[train]'" in r.stderr and not list(tmp_path.iterdir())
