"""A prediction, the server's way: request body → images (the decode pool, ``bodies.py``)
→ pixels (``inference.pixels``) → the TTA views when asked for → logits (the
micro-batcher, one model thread) → the answer (``inference.answer``: the same shape as
``cnnlab predict --json``). :class:`Service` holds what every request shares; the routes
(``routes.py``) and the fast path (``middleware.FastPredict``) call it."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np

from cnnlab.deploy.backends import Backend, served_input
from cnnlab.deploy.batching import DecodePool, MicroBatcher
from cnnlab.deploy.bodies import InputError
from cnnlab.errors import CnnlabError
from cnnlab.inference.answer import predictions, split_views, usable_ood, with_views
from cnnlab.inference.pixels import prepare
from cnnlab.inference.views import View, recorded_views


class Batch(NamedTuple):
    """A request decoded: the model's input (every TTA view of every image, view by view),
    and what its answer needs."""

    x: np.ndarray  # float32 (V·B, C, S, S) in [0, 1]
    inverted: list[bool]
    top_k: int
    views: list[View] | None
    names: list[str]


class Service:
    """What the server's requests share: the backend behind a :class:`MicroBatcher`, the
    :class:`DecodePool`, the model's input, classes, OOD detector and TTA views.
    ``parse`` reads a request body (``bodies.parse_request``)."""

    def __init__(self, backend: Backend, cfg, metrics: dict, parse):
        self.backend, self.cfg, self.m, self.parse = backend, cfg, metrics, parse
        self.limits = cfg.limits()
        md = self.md = backend.meta
        self.classes = md["classes"]
        self.c, self.s, self.graph_inverts = served_input(md)
        self.mean = md["normalization"]["mean"]
        self.ood = usable_ood(md.get("ood"))
        try:
            self.views, self.no_views = recorded_views(md), None
        except CnnlabError as e:
            self.views, self.no_views = None, str(e)
        if self.views and self.graph_inverts:  # its graph would invert each view apart
            self.views = None
            self.no_views = (
                "tta: this export inverts light backgrounds inside its graph, after the views "
                "would be taken; serve an export made without --invert for TTA"
            )
        self.batcher = MicroBatcher(
            lambda x: backend.predict(np.ascontiguousarray(x, np.float32)),
            cfg.max_batch,
            cfg.max_wait_ms,
            on_batch=lambda n: metrics["batch"].observe(n),
        )
        self.decode_pool = DecodePool(cfg.decode_workers, cfg.max_pending, metrics)

    def decode(self, body: bytes, ctype: str, query: dict) -> Batch:
        """A request body → the model's input (runs in the decode pool)."""
        p = self.parse(body, ctype, query, self.limits, self.c, self.s)
        views = None
        if p.tta:
            if self.views is None:
                raise InputError(self.no_views)
            views = self.views
        x, flags = prepare(p.images, self.mean, "never" if self.graph_inverts else p.invert)
        k = min(p.top_k or self.cfg.top_k, len(self.classes))
        return Batch(with_views(x, views), flags, k, views, p.names)

    async def decoded(self, body: bytes, ctype: str, query: dict, receive=None) -> Batch:
        """:meth:`decode` in the decode pool; with ``receive``, a client that hangs up while
        its request waits is dropped from the queue (ClientGone)."""
        return await self.decode_pool.run(self.decode, body, ctype, query, receive=receive)

    async def logits(self, b: Batch) -> np.ndarray:
        """The logits of the batch's model input: each view goes to the micro-batcher as a
        request of its own (as large as a request without TTA)."""
        if not b.views:
            return await self.batcher.submit(b.x)
        n = len(b.x) // len(b.views)
        parts = [b.x[i * n : (i + 1) * n] for i in range(len(b.views))]
        return np.concatenate(await asyncio.gather(*(self.batcher.submit(x) for x in parts)))

    async def classify(self, b: Batch) -> list[dict]:
        """The answers for a decoded request, one per image."""
        plain, probs = split_views(await self.logits(b), len(b.views or ()))
        self.m["images"].inc(len(plain))
        return predictions(
            plain, probs, self.classes, b.top_k, b.inverted, b.names, self.ood, b.views
        )

    async def answer(self, body: bytes, ctype: str, query: dict, receive=None) -> dict:
        """A ``POST /v1/predict`` answer: decoded, classified in the micro-batcher, described."""
        b = await self.decoded(body, ctype, query, receive)
        return {"predictions": await self.classify(b), "backend": self.backend.name}

    def model_info(self) -> dict:
        """``GET /v1/model``: the model, its classes and input, and the server's limits."""
        md, cfg = self.md, self.cfg
        return {
            **{k: md.get(k) for k in ("classes", "input", "normalization", "model", "dataset")},
            **{k: md.get(k) for k in ("source_run", "epoch", "test_acc", "cnnlab_version")},
            "backend": self.backend.name,
            "ood": self.ood,
            "tta": [v.name for v in self.views] if self.views else None,
            "saliency": self.backend.saliency_available,
            "serving": {
                "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms,
                "max_images": cfg.max_images,
                "max_pixels": cfg.max_pixels,
                "max_request_pixels": cfg.max_request_pixels,
                "max_json_values": cfg.max_json_values,
                "max_body_bytes": int(cfg.max_body_mb * 2**20),
                "read_timeout_s": cfg.read_timeout_s,
                "header_timeout_s": cfg.header_timeout_s,
                "max_header_bytes": cfg.max_header_kb * 1024,
                "max_pending": cfg.max_pending,
                "decode_budget_s": cfg.decode_budget_s,
                "decoded_to": [self.c, self.s, self.s],  # before the model, any export kind
                "rate_limit": cfg.rate_limit,
            },
        }
