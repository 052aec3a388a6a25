"""The server's OpenAPI description: response models and request-body schemas.

The endpoints read their bodies themselves (in the decode pool, see ``bodies.py``), so the
request bodies are described here by hand — multipart files, a raw image, or JSON — and the
handlers answer with ``JSONResponse`` directly (no second validation on the hot path); the
models below only say what those answers hold. Every error, whatever its status, is
``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cnnlab.inference.pixels import INVERT_MODES


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and what to do")


class TopClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class")
    probability: float = Field(ge=0, le=1)


class Ood(BaseModel):
    method: str
    score: float
    threshold: float
    flag: bool = Field(description="true: the image looks unlike the training data")


class Prediction(BaseModel):
    """One image's answer: the same shape as ``cnnlab predict --json``
    (``inference/answer.py``)."""

    model_config = ConfigDict(populate_by_name=True)
    image: str = Field(
        description="where the image came from: its file name (multipart), images[i] or "
        "pixels[i] (JSON), or body (a raw image)"
    )
    class_: str = Field(alias="class", description="the top-1 class name")
    index: int = Field(ge=0, description="the top-1 class's index in the model's classes")
    probability: float = Field(ge=0, le=1)
    top: list[TopClass] = Field(description="the top-k classes, most probable first")
    inverted: bool = Field(description="the image was inverted to light-on-dark first")
    ood: Ood | None = Field(
        None, description="only when the run has an OOD threshold; the plain image's score"
    )
    tta: list[str] | None = Field(
        None, description="only with tta: the views the probabilities are averaged over"
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    backend: str


class SaliencyResponse(BaseModel):
    prediction: Prediction
    saliency: list[list[float]] = Field(description="(S, S), normalised to [0, 1]")
    size: int
    method: str


class ModelInfo(BaseModel):
    classes: list[str]
    input: dict[str, Any]
    normalization: dict[str, Any]
    model: dict[str, Any]
    dataset: str | None = None
    source_run: str | None = Field(None, description="the run's name (no local path)")
    epoch: int | None = None
    test_acc: float | None = None
    cnnlab_version: str | None = None
    backend: str
    ood: dict[str, Any] | None = None
    tta: list[str] | None = Field(None, description="the TTA views; null: no TTA for it")
    saliency: bool
    serving: dict[str, Any]


class Health(BaseModel):
    status: str


def error_responses(*codes: int) -> dict:
    text = {
        400: "bad input (not an image, malformed JSON or pixel array, bad option, tta for a "
        "model without TTA views)",
        401: "missing or wrong API key",
        408: "the request body did not arrive in time (--read-timeout)",
        413: "too large: body, image count, pixels per image or per request",
        415: "unsupported content type",
        429: "rate limit exceeded (see the Retry-After header)",
        501: "saliency needs the torch backend",
        503: "the model answered with non-finite numbers",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


TTA_DOC = (
    "test-time augmentation: average the probabilities over the flips and shifts the run "
    "was trained with (GET /v1/model lists them; 400 for a model without)"
)


def predict_body(max_images: int) -> dict:
    """The three ways of sending images, as an OpenAPI requestBody."""
    binary = {"type": "string", "format": "binary"}
    options = {
        "top_k": {"type": "integer", "minimum": 1, "description": "classes to return"},
        "invert": {"type": "string", "enum": list(INVERT_MODES), "default": "auto"},
        "tta": {"type": "boolean", "default": False, "description": TTA_DOC},
    }
    as_json = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "images": {
                "type": "array",
                "description": f"at most {max_images} images in all",
                "items": {"type": "string", "description": "base64 PNG/JPEG, or a data: URL"},
            },
            "pixels": {
                "type": "array",
                "description": "(H, W) or (C, H, W) arrays of numbers 0–255, C 1 or 3",
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "minItems": 1},
                },
            },
            **options,
        },
        "anyOf": [{"required": ["images"]}, {"required": ["pixels"]}],
    }
    multipart = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {
                "type": "array",
                "items": binary,
                "description": f"image files (any field name; at most {max_images})",
            },
            **options,
        },
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": multipart},
            "image/png": {"schema": binary},
            "image/jpeg": {"schema": binary},
            "application/octet-stream": {"schema": binary},
            "application/json": {"schema": as_json},
        },
    }


QUERY_OPTIONS = [
    {
        "name": "top_k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "classes to return (default: the server's --top-k)",
    },
    {
        "name": "invert",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(INVERT_MODES), "default": "auto"},
        "description": "invert dark-on-light images for light-on-dark models",
    },
    {
        "name": "tta",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": TTA_DOC,
    },
]

PROMETHEUS = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
