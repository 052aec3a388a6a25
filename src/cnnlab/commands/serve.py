"""cnnlab serve"""

from __future__ import annotations

import os

from cnnlab.commands._common import add_checkpoint_arg

ORDER = 61


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP inference server (FastAPI) with micro-batching, metrics and a drawing page",
        description="POST /v1/predict, POST /v1/saliency, GET /v1/model, /healthz, /metrics, "
        "/docs, and a web page at / to draw on. Binds 127.0.0.1 unless told otherwise.",
    )
    p.add_argument("run", help="run directory, .safetensors checkpoint or exported .onnx file")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help="auto: torch for a run, onnx for a .onnx file; onnx on a run exports in memory",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=64, help="images per forward (1 = no batching)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="extra wait for a batch to fill (ms); 0 (default): batch only requests already waiting",
    )
    p.add_argument("--max-body-mb", type=float, default=8.0, help="request body limit (MiB)")
    p.add_argument("--max-images", type=int, default=64, help="images per request")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=4_000_000,
        help="pixels decoded per image (a large JPEG counts at the reduced size it is decoded "
        "at: a 12 MP photo is ~0.2 MP)",
    )
    p.add_argument(
        "--max-request-pixels",
        type=int,
        default=8_000_000,
        help="pixels of all images in one request, read from their headers before decoding",
    )
    p.add_argument(
        "--max-json-values",
        type=int,
        default=262_144,
        help="numbers in JSON pixel arrays per request",
    )
    p.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0 = default)")
    p.add_argument("--decode-workers", type=int, default=2, help="threads decoding request bodies")
    p.add_argument(
        "--decode-budget",
        type=float,
        default=2.0,
        help="CPU seconds one request's images may take to decode; the rest of a request "
        "past it is refused with 413 (0 = no budget)",
    )
    p.add_argument(
        "--read-timeout", type=float, default=10.0, help="seconds a request body may take to arrive"
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send its request headers (slow clients: 408)",
    )
    p.add_argument("--max-header-kb", type=int, default=32, help="request header size limit")
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections (kept below the file-descriptor limit); at the limit a new "
        "one replaces the oldest still waiting for its headers",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=16,
        help="requests waiting to be decoded; beyond this: 503 with Retry-After",
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=256.0,
        help="request bodies held in memory at once, all clients together (then 503)",
    )
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
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.deploy.serve import ServeConfig, serve

    if not 0 < args.port < 65536:
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"--port must be in 1..65535, got {args.port}")
    cfg = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_mb=args.max_body_mb,
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        max_json_values=args.max_json_values,
        threads=args.threads,
        decode_workers=args.decode_workers,
        decode_budget_s=args.decode_budget,
        read_timeout_s=args.read_timeout,
        header_timeout_s=args.header_timeout,
        max_header_kb=args.max_header_kb,
        max_connections=args.max_connections,
        max_pending=args.max_pending,
        max_inflight_mb=args.max_inflight_mb,
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
