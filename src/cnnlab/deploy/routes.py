"""The server's endpoints: ``POST /v1/predict`` (documented here, answered by
``middleware.FastPredict`` where it is in front), ``POST /v1/saliency``, ``GET /v1/model``,
``GET /healthz``, ``GET /metrics`` and the web page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import Request

from cnnlab.deploy import schema as sc
from cnnlab.deploy.bodies import InputError

STATIC = Path(__file__).with_name("static")


async def parts(request: Request) -> tuple[bytes, str, dict]:
    """A request's body, content type and query (unknown names: 400, ``bodies.check_query``)."""
    query = dict(request.query_params.items())
    return await request.body(), request.headers.get("content-type", ""), query


def add_routes(app, service) -> None:
    """The endpoints of ``service`` (a ``service.Service``) on ``app``."""
    add_prediction_routes(app, service)
    add_info_routes(app, service)


def add_prediction_routes(app, service) -> None:
    from fastapi.responses import JSONResponse

    backend = service.backend
    body_doc = {
        "requestBody": sc.predict_body(service.cfg.max_images),
        "parameters": sc.QUERY_OPTIONS,
    }
    input_errors = sc.error_responses(400, 408, 413, 415)

    @app.post(
        "/v1/predict",
        summary="classify one or more images",
        response_model=sc.PredictResponse,
        responses=input_errors,
        openapi_extra=body_doc,
    )
    async def predict(request: Request):
        """Send images as multipart files (any field name), a raw ``image/*`` body, or JSON
        ``{"images": [base64...], "pixels": [[[0-255...]]], "top_k": 3, "invert": "auto",
        "tta": false}``. Images are decoded, converted to the model's channels and resized
        to its input; ``tta``: probabilities averaged over the flips and shifts the run was
        trained with (as ``cnnlab predict --tta``)."""
        # served by FastPredict ahead of the framework; this route documents it (and answers
        # the same way where nothing is in front of it)
        return JSONResponse(await service.answer(*await parts(request)))

    @app.post(
        "/v1/saliency",
        summary="prediction and saliency map for one image",
        response_model=sc.SaliencyResponse,
        responses={**input_errors, **sc.error_responses(501)},
        openapi_extra=body_doc,
        include_in_schema=backend.saliency_available,
    )
    async def saliency(request: Request):
        """Gradient of the top logit with respect to the input pixels (torch backend only)."""
        if not backend.saliency_available:
            backend.saliency(None, 0)  # raises the 501 explaining why
        b = await service.decoded(*await parts(request))
        if len(b.inverted) != 1:
            raise InputError(f"saliency takes exactly one image, got {len(b.inverted)}")
        pred = (await service.classify(b))[0]
        sal = await service.batcher.run_alone(backend.saliency, b.x[:1], pred["index"])
        sal = sal / max(float(sal.max()), 1e-12)
        return JSONResponse(
            {
                "prediction": pred,
                "saliency": np.round(sal, 4).tolist(),
                "size": service.s,
                "method": "saliency |d logit / d pixels| (Captum)",
            }
        )


def add_info_routes(app, service) -> None:
    from fastapi.responses import FileResponse, JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/v1/model", summary="model metadata", response_model=sc.ModelInfo)
    async def get_model_info():
        return JSONResponse(service.model_info())

    @app.get(
        "/healthz",
        summary="liveness: the model answers",
        response_model=sc.Health,
        responses=sc.error_responses(503),
    )
    async def healthz():
        x = np.zeros((1, service.c, service.s, service.s), np.float32)
        logits = await service.batcher.submit(x)
        ok = bool(np.isfinite(logits).all())
        return JSONResponse(
            {"status": "ok" if ok else "model output not finite"}, 200 if ok else 503
        )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses=sc.PROMETHEUS,
    )
    async def metrics():
        return Response(generate_latest(service.m["registry"]), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")
