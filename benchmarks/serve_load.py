"""Load benchmark for ``cnnlab serve`` (a benchmark, not a test).

Starts the server on 127.0.0.1 (a subprocess, free port) for each configuration —
torch / ONNX backend × micro-batching on / off — drives it with N concurrent httpx
clients for a fixed number of requests and reports throughput, p50/p95/p99 latency and
errors, plus the batching/no-batching ratio in the same run.

    python benchmarks/serve_load.py --run runs/<name> [--concurrency 32] [--requests 4000]

Without a usable ``--run`` it trains a 1-epoch LeNet-5 on the synthetic dataset first
(serving speed does not depend on accuracy). The clients share the CPU with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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


def start_server(run, backend, port, max_batch, max_wait_ms, threads) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    cmd = [sys.executable, "-m", "cnnlab", "serve", run, "--backend", backend, "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    t0 = time.monotonic()
    async with httpx.AsyncClient() as c:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if (await c.get(url + "/healthz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("server did not become ready")


async def drive(url: str, png: bytes, concurrency: int, requests: int, payload: str) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(c):
        for _ in todo:
            t = time.perf_counter()
            try:
                if payload == "multipart":
                    r = await c.post("/v1/predict", files={"file": ("x.png", png, "image/png")})
                else:
                    r = await c.post(
                        "/v1/predict", content=png, headers={"content-type": "image/png"}
                    )
                ok = r.status_code == 200 and "predictions" in r.json()
                if not ok:
                    errors.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
                continue
            lat.append(time.perf_counter() - t)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return _summary(lat, errors, requests, wall)


def build_request(port: int, png: bytes, payload: str) -> bytes:
    """One complete HTTP/1.1 keep-alive request, built once and replayed by the raw client."""
    if payload == "multipart":
        b = "cnnlabboundary7f3a"
        body = (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + png
            + f"\r\n--{b}--\r\n".encode()
        )
        ctype = f"multipart/form-data; boundary={b}"
    else:
        body, ctype = png, "image/png"
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def drive_raw(port: int, png: bytes, concurrency: int, requests: int, payload: str) -> dict:
    """The same load as :func:`drive` from a minimal asyncio HTTP/1.1 client (one keep-alive
    connection per simulated client): it costs the shared CPU a fraction of what httpx does,
    so the figure measures the server rather than the load generator."""
    req = build_request(port, png, payload)
    lat: list[float] = []
    errors: list[str] = []
    todo = iter(range(requests))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in todo:
                t = time.perf_counter()
                try:
                    writer.write(req)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    n = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            n = int(line.split(b":")[1])
                    body = await reader.readexactly(n)
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    errors.append(type(e).__name__)
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if status != 200 or b'"predictions"' not in body:
                    errors.append(f"HTTP {status}")
                lat.append(time.perf_counter() - t)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(lat, errors, requests, time.perf_counter() - t0)


def _summary(lat, errors, requests, wall) -> dict:
    a = np.array(lat) * 1000
    ok = len(lat) - sum(1 for e in errors if e.startswith("HTTP"))
    return {
        "requests": requests,
        "ok": ok,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "seconds": wall,
        "throughput": ok / wall,
        "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
        "p95_ms": float(np.percentile(a, 95)) if len(a) else None,
        "p99_ms": float(np.percentile(a, 99)) if len(a) else None,
    }


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used: a figure other jobs barely move."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def scrape_batches(url: str) -> float | None:
    import httpx

    txt = httpx.get(url + "/metrics").text
    vals = {}
    for line in txt.splitlines():
        if line.startswith("cnnlab_batch_size_sum") or line.startswith("cnnlab_batch_size_count"):
            k, v = line.split()
            vals[k] = float(v)
    n = vals.get("cnnlab_batch_size_count", 0)
    return vals.get("cnnlab_batch_size_sum", 0) / n if n else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="trained run directory (default: train a tiny one)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4000, help="measured requests per config")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--backends", default="torch,onnx")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="model threads in the server")
    ap.add_argument("--payload", default="multipart", choices=["multipart", "raw"])
    ap.add_argument(
        "--client",
        default="raw",
        choices=["raw", "httpx"],
        help="load generator: raw asyncio HTTP/1.1 (cheap) or httpx.AsyncClient",
    )
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    run = ensure_run(args.run)
    png = sample_png(run)
    configs = []
    for be in args.backends.split(","):
        configs.append((be, "on", args.max_batch, args.max_wait_ms))
        configs.append((be, "off", 1, 0))
    rows = []
    for be, mb, max_batch, wait in configs:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(run, be, port, max_batch, wait, args.threads)
        try:
            asyncio.run(wait_ready(url, proc))
            load = (
                (drive_raw, port) if args.client == "raw" else (drive, url)
            )  # the same requests, a cheaper or a realistic client
            asyncio.run(load[0](load[1], png, args.concurrency, args.warmup, args.payload))
            s0, c0 = proc_cpu(proc.pid), time.process_time()
            r = asyncio.run(load[0](load[1], png, args.concurrency, args.requests, args.payload))
            r["server_cpu_ms_per_req"] = (proc_cpu(proc.pid) - s0) * 1000 / args.requests
            r["client_cpu_ms_per_req"] = (time.process_time() - c0) * 1000 / args.requests
            r["mean_batch"] = scrape_batches(url)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        r.update(backend=be, batching=mb, max_batch=max_batch, max_wait_ms=wait)
        rows.append(r)
        print(
            f"{be:5s} batching {mb:3s}: {r['throughput']:7.0f} pred/s  p50 {r['p50_ms']:6.1f} ms  "
            f"p95 {r['p95_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
            f"mean batch {r['mean_batch'] or 0:.1f}  CPU ms/req server "
            f"{r['server_cpu_ms_per_req']:.2f} client {r['client_cpu_ms_per_req']:.2f}",
            flush=True,
        )
    print(
        f"\n{args.concurrency} concurrent clients, {args.requests} requests per config, "
        f"1 image per request ({args.payload}, {args.client} client), {os.cpu_count()} CPUs, "
        f"server threads "
        f"{args.threads}; target ≥ 500 pred/s, p99 ≤ 100 ms, 0 errors; load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the CPU)"
    )
    print(
        f"{'backend':8s}{'batching':>9s}{'pred/s':>9s}{'p50':>8s}{'p95':>8s}{'p99':>8s}"
        f"{'errors':>8s}{'vs off':>8s}{'srv CPU ms':>11s}  target"
    )
    for r in rows:
        base = next(x for x in rows if x["backend"] == r["backend"] and x["batching"] == "off")
        meets = r["throughput"] >= 500 and r["p99_ms"] <= 100 and r["errors"] == 0
        print(
            f"{r['backend']:8s}{r['batching']:>9s}{r['throughput']:9.0f}{r['p50_ms']:8.1f}"
            f"{r['p95_ms']:8.1f}{r['p99_ms']:8.1f}{r['errors']:8d}"
            f"{r['throughput'] / base['throughput']:7.2f}x{r['server_cpu_ms_per_req']:11.2f}  "
            f"{'met' if meets else 'missed'}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "run": run, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
