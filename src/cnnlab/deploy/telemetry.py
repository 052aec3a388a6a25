"""What the server counts, for ``GET /metrics`` (Prometheus): requests by endpoint and
status, latency, batch sizes, images, errors, the decode queue and client hang-ups."""

from __future__ import annotations


def server_metrics() -> dict:
    """The server's Prometheus counters and histograms, in a registry of its own."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()
    return {
        "registry": reg,
        "requests": Counter(
            "cnnlab_requests",
            "HTTP requests by status (499: client hung up)",
            ["endpoint", "status"],
            registry=reg,
        ),
        "latency": Histogram(
            "cnnlab_request_latency_seconds",
            "request latency",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=reg,
        ),
        "batch": Histogram(
            "cnnlab_batch_size",
            "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=reg,
        ),
        "images": Counter("cnnlab_images", "images classified", registry=reg),
        "errors": Counter(
            "cnnlab_errors", "requests answered with an error", ["endpoint", "kind"], registry=reg
        ),
        "pending": Gauge(
            "cnnlab_decode_pending",
            "requests waiting for or in the decode pool (at --max-pending: 503)",
            registry=reg,
        ),
        "abandoned": Counter(
            "cnnlab_abandoned_decodes",
            "requests dropped from the decode queue because their client hung up",
            registry=reg,
        ),
        "disconnects": Counter(
            "cnnlab_client_disconnects",
            "requests whose client hung up before sending its body (not errors)",
            ["endpoint"],
            registry=reg,
        ),
    }
