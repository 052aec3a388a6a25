"""cnnlab serve"""

from __future__ import annotations

import os

from cnnlab.commands._common import add_checkpoint_arg, add_choice, add_command

ORDER = 61


# What the server allows, as flags: (flag, its ServeConfig field, type, default, help).
# fmt: off
LIMITS = (
    ("--max-batch", "max_batch", int, 64, "images per forward (1 = no batching)"),
    ("--max-wait-ms", "max_wait_ms", float, 0.0,
     "extra wait for a batch to fill (ms); 0 (default): batch only requests already waiting"),
    ("--max-body-mb", "max_body_mb", float, 8.0, "request body limit (MiB)"),
    ("--max-images", "max_images", int, 64, "images per request"),
    ("--max-pixels", "max_pixels", int, 4_000_000,
     "pixels decoded per image (a large JPEG counts at the reduced size it is decoded at: a "
     "12 MP photo is ~0.2 MP)"),
    ("--max-request-pixels", "max_request_pixels", int, 8_000_000,
     "pixels of all images in one request, read from their headers before decoding"),
    ("--max-json-values", "max_json_values", int, 262_144,
     "numbers in JSON pixel arrays per request"),
    ("--threads", "threads", int, 0, "torch/ORT threads (0 = default)"),
    ("--decode-workers", "decode_workers", int, 2, "threads decoding request bodies"),
    ("--decode-budget", "decode_budget_s", float, 2.0,
     "CPU seconds one request's images may take to decode; the rest of a request past it is "
     "refused with 413 (0 = no budget)"),
    ("--read-timeout", "read_timeout_s", float, 10.0, "seconds a request body may take to arrive"),
    ("--header-timeout", "header_timeout_s", float, 10.0,
     "seconds a connection may take to send its request headers (slow clients: 408)"),
    ("--max-header-kb", "max_header_kb", int, 32, "request header size limit"),
    ("--max-connections", "max_connections", int, 1000,
     "open connections (kept below the file-descriptor limit); at the limit a new one replaces "
     "the oldest still waiting for its headers"),
    ("--max-pending", "max_pending", int, 16,
     "requests waiting to be decoded; beyond this: 503 with Retry-After"),
    ("--max-inflight-mb", "max_inflight_mb", float, 256.0,
     "request bodies held in memory at once, all clients together (then 503)"),
)
# fmt: on


def register(sub) -> None:
    p = add_command(
        sub,
        "serve",
        run,
        "HTTP inference server (FastAPI) with micro-batching, metrics and a drawing page",
        "POST /v1/predict, POST /v1/saliency, GET /v1/model, /healthz, /metrics, "
        "/docs, and a web page at / to draw on. Binds 127.0.0.1 unless told otherwise.",
    )
    p.add_argument("run", help="run directory, .safetensors checkpoint or exported .onnx file")
    add_choice(
        p,
        "--backend",
        ["auto", "torch", "onnx"],
        "auto: torch for a run, onnx for a .onnx file; onnx on a run exports in memory",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    for flag, _, tp, default, text in LIMITS:
        p.add_argument(flag, type=tp, default=default, help=text)
    g = p.add_argument_group("access")
    g.add_argument(
        "--api-key",
        help="bearer token required on every endpoint but /healthz (default: $CNNLAB_API_KEY); "
        "needed to bind anything but loopback",
    )
    g.add_argument(
        "--insecure", action="store_true", help="bind a non-loopback --host without an API key"
    )
    g.add_argument("--public-metrics", action="store_true", help="/metrics without the token")
    g.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser pages from this origin (repeatable; default: no CORS)",
    )
    g.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="requests/s per client address on /v1/* (bursts of twice that; 0 = off)",
    )
    g.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="proxy addresses (comma-separated, or *) whose X-Forwarded-For names the client "
        "for the rate limit; default: none, the connection's address counts",
    )
    add_checkpoint_arg(p)
    p.add_argument("--log-level", default="warning")


def run(args) -> int:
    from cnnlab.deploy.serve import ServeConfig, serve

    if not 0 < args.port < 65536:
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"--port must be in 1..65535, got {args.port}")
    cfg = ServeConfig(
        **{field: getattr(args, flag[2:].replace("-", "_")) for flag, field, *_ in LIMITS},
        forwarded_allow_ips=args.forwarded_allow_ips,
        api_key=args.api_key or os.environ.get("CNNLAB_API_KEY") or None,
        public_metrics=args.public_metrics,
        cors_origins=tuple(args.cors_origin),
        rate_limit=args.rate_limit,
    )
    serve(
        args.run,
        args.backend,
        args.host,
        args.port,
        cfg,
        args.log_level,
        args.which,
        insecure=args.insecure,
    )
    return 0
