"""Load benchmark for ``cnnlab serve`` with an external load generator (a benchmark, not a test).

For each backend (torch, ONNX) × batching (adaptive on, off) it starts the server on
127.0.0.1 (a subprocess, free port) and drives it with Debian's ``hey`` at 1, 8, 32 and 64
concurrent keep-alive clients, one 28 × 28 PNG per request (raw ``image/png`` body), for a
fixed time per point. It records predictions/s, p50/p99 latency and errors, and writes a
JSON result file (command, commit, machine, device, load average) for docs/results.md.

    python benchmarks/serve_load.py [--run runs/<name>] [--seconds 5] [--out FILE.json]

``hey`` (or ``apt-get install hey``) must be on PATH. Without a usable ``--run`` it trains a
1-epoch LeNet-5 on the synthetic dataset first (serving speed does not depend on accuracy).
The load generator shares the CPU with the server: on a 2-core machine it takes a share.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_png(run: str) -> bytes:
    """A real test image of the run's dataset as PNG (random pixels if it is unavailable)."""
    from PIL import Image

    from cnnlab.runs.load import load_run_checkpoint, load_run_dataset

    meta = load_run_checkpoint(run).meta
    try:
        ds = load_run_dataset(meta, os.environ.get("CNNLAB_DATA"))
        a = ds.test_x[0].numpy()
    except Exception:
        c, s = meta["input"]["channels"], meta["input"]["size"]
        a = np.random.default_rng(0).integers(0, 256, (c, s, s), dtype=np.uint8)
    im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def ensure_run(run: str | None) -> str:
    if run and Path(run).exists():
        return run
    import cnnlab

    out = tempfile.mkdtemp(prefix="cnnlab-bench-")
    print(f"no run given/found: training a 1-epoch lenet5 on synthetic data in {out}", flush=True)
    res = cnnlab.fit(
        model="lenet5", dataset="synthetic", epochs=1, runs_dir=out, name="bench", quiet=True
    )
    return str(res.run_dir)


def start_server(run, backend, port, max_batch, threads) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    cmd = [sys.executable, "-m", "cnnlab", "serve", run, "--backend", backend, "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not become ready")


def hey(url: str, body: Path, clients: int, seconds: float) -> dict:
    """One load point: ``hey -z`` for ``seconds`` with ``clients`` keep-alive connections."""
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-T", "image/png"]
    cmd += ["-D", str(body), "-o", "csv", url + "/v1/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    lat, errors = [], 0
    for row in csv.DictReader(io.StringIO(out)):
        if row.get("status-code") == "200":
            lat.append(float(row["response-time"]) * 1000)
        else:
            errors += 1
    a = np.array(lat) if lat else np.array([np.nan])
    return {
        "clients": clients,
        "pred_per_s": round(len(lat) / seconds),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "errors": errors,
        "requests": len(lat) + errors,
    }


def machine() -> str:
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {model} ({platform.system()})"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="trained run directory (default: train a tiny one)")
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each load point")
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--batching", default="on,off", help="adaptive micro-batching on, off or both")
    ap.add_argument(
        "--threads", type=int, default=0, help="model threads in the server (0: its default)"
    )
    ap.add_argument("--note", default="", help="what else ran on the machine")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args(argv)
    if not shutil.which("hey"):
        print("error: hey not found; apt-get install hey", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT / "src"))
    import torch

    run = ensure_run(args.run)
    body = Path(tempfile.mkdtemp(prefix="cnnlab-serve-load-")) / "x.png"
    body.write_bytes(sample_png(run))
    clients = [int(c) for c in args.clients.split(",")]
    rows = []
    load = []
    for be in args.backends.split(","):
        for mb in args.batching.split(","):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_server(run, be, port, 64 if mb == "on" else 1, args.threads)
            try:
                wait_ready(url, proc)
                hey(url, body, 8, 1.0)  # warm-up
                for n in clients:
                    load.append(os.getloadavg()[0])
                    r = hey(url, body, n, args.seconds)
                    r.update(backend=be, batching=mb)
                    rows.append(r)
                    print(
                        f"{be:5s} batching {mb:3s} {n:3d} clients: {r['pred_per_s']:6d} pred/s  "
                        f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                        f"errors {r['errors']}",
                        flush=True,
                    )
            finally:
                stop_server(proc)
    note = (
        f"load generator hey on the same machine; load average {min(load):.1f}-{max(load):.1f} "
        f"during the run ({os.cpu_count()} CPUs)" + (f"; {args.note}" if args.note else "")
    )
    result = {
        "kind": "serve-load",
        "command": f"python benchmarks/serve_load.py --run RUN --seconds {args.seconds:g} "
        f"--clients {args.clients} --backends {args.backends} --batching {args.batching} "
        f"--threads {args.threads}",
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "device": "cpu",
        "torch": torch.__version__,
        "seeds": [0],
        "model": "lenet5",
        "seconds_per_point": args.seconds,
        "server_threads": args.threads,
        "note": note,
        "rows": rows,
    }
    print(note)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
