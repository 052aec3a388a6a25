"""cnnlab serve"""

from __future__ import annotations

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
        "--max-wait-ms", type=float, default=2.0, help="how long a batch waits to fill (ms)"
    )
    p.add_argument("--max-body-mb", type=float, default=8.0, help="request body limit (MiB)")
    p.add_argument("--max-images", type=int, default=64, help="images per request")
    p.add_argument(
        "--max-pixels", type=int, default=4_000_000, help="pixels per image (decompression bombs)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0 = default)")
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
        threads=args.threads,
    )
    serve(args.run, args.backend, args.host, args.port, cfg, args.log_level, args.which)
    return 0
