"""What a handful of hostile clients do to ``cnnlab serve`` (a benchmark, not a test).

Starts ``cnnlab serve`` (a subprocess on 127.0.0.1, a free port, its file-descriptor
limit set to ``--fd-limit``) and, for each scenario, drives it with four normal keep-alive
clients (one 28 × 28 PNG a request) for ``--seconds`` while the attack runs:

- ``quiet``: no attack (the reference);
- ``junk``: two clients sending 7.9 MB bodies that are no image (what receiving that
  many bytes costs, with nothing to decode: the floor for the floods below);
- ``iccp``/``com``/``chunks``: two clients sending, back to back, a valid 28 × 28 image
  with 7,500 ``iCCP`` chunks (~8 MB), 1.9 M JPEG ``COM`` markers, or 441k tiny ancillary
  chunks;
- ``slowloris``: ``--slowloris`` connections opened first, each sending half a request
  header and never the rest;
- ``abandoned``: 20 uploads of two 2000 × 2000 noise PNGs whose clients hang up at once
  (then one normal request is timed, and the server's peak memory read);
- ``header``: one connection sending a 64 MiB header (the server's memory read while it
  is held open).

Each scenario records the normal clients' answers/s, non-200 answers, p50/p99 latency, what
the attackers got, and the server's resident memory (VmRSS, VmHWM). ``--src`` serves
another checkout's code (e.g. the main branch) for a before/after comparison; bounded
loops, loopback only.

    python benchmarks/serve_hostile.py [--seconds 5] [--scenarios quiet,iccp,...] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from _record import record, write_result
from serve_load import ensure_run, free_port, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("quiet", "junk", "iccp", "com", "chunks", "slowloris", "abandoned", "header")


def png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def attack_bodies() -> dict[str, tuple[str, bytes]]:
    from PIL import Image

    small = png(np.full((28, 28), 90, np.uint8))
    iccp = chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * (1 << 20), 9))
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28, 3), 90, np.uint8)).save(buf, "JPEG")
    j = buf.getvalue()
    return {
        "iccp": ("image/png", small[:33] + iccp * 7500 + small[33:]),
        "com": ("image/jpeg", j[:2] + b"\xff\xfe\x00\x02" * 1_900_000 + j[2:]),
        "chunks": ("image/png", small[:33] + chunk(b"abCd", b"") * 441_000 + small[33:]),
        "junk": ("image/png", b"\0" * 7_900_000),  # the cost of receiving 8 MB, refused at once
    }


def request(port: int, body: bytes, ctype: str = "image/png") -> bytes:
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    body = await reader.readexactly(n)
    return int(head.split(b" ", 2)[1]), body


async def normal_clients(port: int, req: bytes, seconds: float, n: int = 4) -> dict:
    lat, bad = [], 0
    stop = time.perf_counter() + seconds

    async def one():
        nonlocal bad
        while time.perf_counter() < stop:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5
                )
            except (OSError, asyncio.TimeoutError):
                bad += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    writer.write(req)
                    left = max(0.1, stop - time.perf_counter() + 5)
                    status, _ = await asyncio.wait_for(read_response(reader), left)
                    if status == 200:
                        lat.append(time.perf_counter() - t)
                    else:
                        bad += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                bad += 1
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    a = np.array(lat) * 1000
    return {
        "answers_per_s": round(len(lat) / seconds, 1),
        "answers": len(lat),
        "failed": bad,
        "p50_ms": round(float(np.percentile(a, 50)), 1) if lat else None,  # none answered
        "p99_ms": round(float(np.percentile(a, 99)), 1) if lat else None,
    }


def blocking_post(port: int, raw: bytes, timeout: float = 60) -> tuple[int | str, float]:
    t = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(raw)
            head = s.recv(65536)
        status: int | str = int(head.split(b" ", 2)[1]) if head else "closed"
    except (OSError, ValueError, IndexError) as e:
        status = type(e).__name__
    return status, round(time.perf_counter() - t, 3)


def memory(pid: int) -> dict:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = round(int(v.split()[0]) / 1024, 1)  # MiB
    return out


def scenario(name: str, port: int, pid: int, seconds: float, normal: bytes, args) -> dict:
    res: dict = {"scenario": name}
    stop = threading.Event()
    threads, attacks = [], []
    held: list[socket.socket] = []
    if name in ("junk", "iccp", "com", "chunks"):
        ctype, body = attack_bodies()[name]
        raw = request(port, body, ctype)
        res["attack_bytes"] = len(body)

        def flood():
            while not stop.is_set():
                attacks.append(blocking_post(port, raw))

        threads = [threading.Thread(target=flood) for _ in range(2)]
    elif name == "slowloris":
        for _ in range(args.slowloris):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
                held.append(s)
            except OSError:
                break
        res["half_open_opened"] = len(held)
    elif name == "abandoned":
        rng = np.random.default_rng(0)
        two = [png(rng.integers(0, 256, (2000, 2000), np.uint8)) for _ in range(2)]
        b = b"cnnlabbench"
        body = b"".join(
            b"--" + b + b'\r\nContent-Disposition: form-data; name="f"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + f + b"\r\n"
            for f in two
        )
        body += b"--" + b + b"--\r\n"
        raw = request(port, body, f"multipart/form-data; boundary={b.decode()}")
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(raw)
        t = time.perf_counter()
        res["next_predict_status"] = blocking_post(port, normal)[0]
        res["next_predict_s"] = round(time.perf_counter() - t, 3)
    elif name == "header":
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        sent = 0
        with contextlib.suppress(OSError):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-big: ")
            while sent < 64 << 20:
                s.sendall(b"a" * (1 << 20))
                sent += 1 << 20
        res["header_bytes_sent"] = sent
        res["memory_while_held"] = memory(pid)
        held.append(s)
    for t in threads:
        t.start()
    res["normal"] = asyncio.run(normal_clients(port, normal, seconds))
    stop.set()
    for t in threads:
        t.join(120)
    if held:
        import select

        poller = select.poll()
        for s in held:
            poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        res["held_closed_by_server"] = len(poller.poll(100))
        for s in held:
            s.close()
    if attacks:
        statuses = sorted({str(a[0]) for a in attacks})
        res["attack_requests"] = len(attacks)
        res["attack_statuses"] = statuses
        res["attack_median_s"] = float(np.median([a[1] for a in attacks]))
    res["memory"] = memory(pid)
    return res


def start(run: str, port: int, src: str, fd_limit: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=src)

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    cmd = [sys.executable, "-m", "cnnlab", "serve", run, "--port", str(port)]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="trained run directory (default: train a tiny one)")
    ap.add_argument("--seconds", type=float, default=5.0, help="normal load per scenario")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--slowloris", type=int, default=1100, help="half-open connections")
    ap.add_argument("--fd-limit", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    ap.add_argument("--src", default=str(ROOT / "src"), help="the code to serve (a src folder)")
    ap.add_argument("--label", default="after", help="what --src is: names the result file")
    ap.add_argument("--src-commit", help="the commit --src was taken from, for the result")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    for value, word in ((args.src, "SRC"), (args.run, "RUN"), (args.out, "OUT")):
        if value in shown:  # no path of this machine in the result
            shown[shown.index(value)] = word
    code = {"label": args.label, "src_commit": args.src_commit or "this checkout"}
    head = record("serve-hostile", "serve_hostile.py", shown, [0], code=code)
    run = ensure_run(args.run)
    from PIL import Image  # noqa: F401 - fail early without Pillow

    normal = request(0, png(np.random.default_rng(1).integers(0, 256, (28, 28), np.uint8)))
    rows = []
    for name in args.scenarios.split(","):
        port = free_port()
        normal_req = normal.replace(b"127.0.0.1:0", f"127.0.0.1:{port}".encode())
        proc = start(run, port, args.src, args.fd_limit)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            r = scenario(name, port, proc.pid, args.seconds, normal_req, args)
            r["server_alive"] = proc.poll() is None
        finally:
            stop_server(proc)
        print(r, flush=True)
        rows.append(r)
    result = {
        **head,
        "seconds_per_scenario": args.seconds,
        "server_fd_limit": args.fd_limit,
        "note": f"load average {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs, "
        "shared with other work); loopback only; 4 normal keep-alive clients",
        "rows": rows,
    }
    write_result(result, args.out, f"serve-hostile-{args.label}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
