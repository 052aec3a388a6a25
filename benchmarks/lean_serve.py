"""Serving without PyTorch, measured as a user gets it: a fresh venv with the base install
(`pip install .`, no extras: onnxruntime, numpy, Pillow and the web stack, from the package
index), then `cnnlab serve model.onnx` started N times — seconds from launch to the first
200 from /healthz, and resident memory after a prediction.

    python benchmarks/lean_serve.py --onnx runs/NAME/export/model.onnx [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _record import ROOT, record, write_result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(py: Path, onnx: Path) -> tuple[float, float]:
    port = free_port()
    t0 = time.perf_counter()
    p = subprocess.Popen([py, "-m", "cnnlab", "serve", str(onnx), "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if p.poll() is not None or time.perf_counter() - t0 > 120:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.02)
        started = time.perf_counter() - t0
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=json.dumps({"pixels": [[[0.5] * 28] * 28]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=30).read()
        status = Path(f"/proc/{p.pid}/status").read_text().splitlines()
        rss = int(next(x.split()[1] for x in status if x.startswith("VmRSS"))) / 1024
        return started, rss
    finally:
        p.terminate()
        p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    res = record("lean-serve", "lean_serve.py", None, [], None)
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", env], check=True)
        py = env / "bin" / "python"
        t = time.perf_counter()
        subprocess.run([py, "-m", "pip", "install", "-q", str(ROOT)], check=True)
        install_s = time.perf_counter() - t
        has_torch = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0
        size_mb = sum(f.stat().st_size for f in env.rglob("*") if f.is_file()) / 2**20
        runs = [one_start(py, Path(args.onnx).resolve()) for _ in range(args.starts)]
    res.update(
        torch_installed=has_torch,
        venv_mb=round(size_mb, 1),
        install_seconds=round(install_s, 1),
        start_seconds=[round(s, 3) for s, _ in runs],
        median_start_seconds=round(statistics.median(s for s, _ in runs), 3),
        rss_mb=[round(r, 1) for _, r in runs],
        median_rss_mb=round(statistics.median(r for _, r in runs), 1),
    )
    print(json.dumps({k: v for k, v in res.items() if k not in ("command",)}, indent=1))
    write_result(res, args.out, "lean-serve.json")


if __name__ == "__main__":
    main()
