"""Request bodies → model input, for the inference server.

Everything here is plain synchronous code that the server runs in its bounded decode pool,
never on the event loop. Each function refuses bad input with :class:`InputError` (a
CnnlabError carrying the HTTP status) and checks sizes *before* the work they bound:
the number of images and the total pixels a request will decode are read from the image
headers (or the nested-list shape of a JSON pixel array) before a single pixel is decoded
or converted. Nothing a client sends may raise anything else; :func:`parse_request` turns
any stray exception of a parser (RecursionError, OverflowError, ...) into a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from cnnlab.data.images import (
    StructureError,
    check_structure,
    decoded_size,
    load_image,
    pil_to_input,
)
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.inference.pixels import INVERT_MODES

OPTIONS = ("top_k", "invert", "tta")  # in the query string, a multipart field or the JSON
JSON_KEYS = ("images", "pixels", *OPTIONS)
MAX_TOP_K = 1000
_DIGITS = re.compile(r"[0-9]{1,7}")


class InputError(CnnlabError):
    """A bad request: ``status`` is the HTTP code it is answered with."""

    def __init__(self, msg: str, status: int = 400, retry_after: int | None = None):
        super().__init__(msg)
        self.status = status
        self.retry_after = retry_after  # seconds, sent as Retry-After (503: busy)


@dataclass(frozen=True)
class Limits:
    max_images: int = 64  # per request
    max_pixels: int = 4_000_000  # per image, from its header
    max_request_pixels: int = 16_000_000  # all images of a request together, from headers
    max_json_values: int = 262_144  # numbers in all JSON pixel arrays of a request
    decode_budget_s: float = 0.0  # CPU seconds to decode one request's images (0: no budget)


@dataclass
class Parsed:
    images: list[np.ndarray]  # uint8 (C, S, S) each
    top_k: int | None
    invert: str
    tta: bool = False
    names: list[str] = field(default_factory=list)  # each image's file name or request part


# --------------------------------------------------------------------------- options


def short(text: str, n: int = 80) -> str:
    """A client's value as error messages and logs quote it: at most ``n`` characters."""
    return text if len(text) <= n else text[: n - 1] + "…"


def parse_top_k(v) -> int:
    """An integer ≥ 1: a JSON integer (or an integral float such as 3.0) or a query string
    of digits. Booleans, 2.9, 1e999 and 5000-digit numbers are refused, not coerced."""
    if isinstance(v, bool):
        raise InputError("top_k must be an integer ≥ 1, not a boolean")
    if isinstance(v, str):
        if not _DIGITS.fullmatch(v.strip()):
            raise InputError(f"top_k must be an integer ≥ 1, got {v[:20]!r}")
        v = int(v)
    elif isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise InputError(f"top_k must be an integer ≥ 1, got {v!r}"[:80])
        v = int(v)
    elif not isinstance(v, int):
        raise InputError(f"top_k must be an integer ≥ 1, got a {type(v).__name__}")
    if v < 1:
        raise InputError("top_k must be ≥ 1")
    return min(v, MAX_TOP_K)


def parse_options(opts: dict) -> tuple[int | None, str, bool]:
    top_k = parse_top_k(opts["top_k"]) if "top_k" in opts else None
    return top_k, parse_invert(opts.get("invert", "auto")), parse_tta(opts.get("tta", False))


def parse_invert(v) -> str:
    if not isinstance(v, str) or v not in INVERT_MODES:
        raise InputError(choices_msg("invert mode", str(v)[:20], INVERT_MODES))
    return v


def parse_tta(v) -> bool:
    """A JSON boolean, or ``true``/``false`` in the query string or a form field."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("true", "false"):
        return v == "true"
    raise InputError(f"tta must be true or false, got {str(v)[:20]!r}")


# --------------------------------------------------------------------------- images


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise InputError("no image in the request")
    if n > limits.max_images:
        raise InputError(
            f"{n} images in one request; the limit is {limits.max_images} (--max-images)", 413
        )


def header_pixels(data: bytes, name: str, limits: Limits, channels: int = 3, size: int = 0) -> int:
    """The pixels an image will decode to, from its header (nothing decoded; a JPEG at its
    reduced draft size for a ``size`` × ``size`` model); refuses big ones and metadata
    floods (:func:`~cnnlab.data.images.check_structure`)."""
    if not data:
        raise InputError(f"{name}: empty image")
    try:
        check_structure(data, name)
    except StructureError as e:
        raise InputError(str(e), 413) from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            dw, dh = decoded_size(im, channels, size) if size else (w, h)
    except Image.DecompressionBombError as e:
        raise InputError(f"{name}: image too large ({e})", 413) from None
    except Exception as e:  # noqa: BLE001 - any failure of a parser fed untrusted bytes
        raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    if dw * dh > limits.max_pixels:
        raise InputError(
            f"{name}: image has {w}×{h} pixels ({dw}×{dh} decoded), more than the limit of "
            f"{limits.max_pixels}; send a smaller image (--max-pixels)",
            413,
        )
    return dw * dh


def decode_bytes(data: bytes, channels: int, size: int, limits: Limits, name: str) -> np.ndarray:
    try:
        return load_image(io.BytesIO(data), channels, size, max_pixels=limits.max_pixels, name=name)
    except CnnlabError as e:  # load_image's size refusals say "limit" / "too large"
        msg = str(e)
        raise InputError(msg, 413 if "limit" in msg or "too large" in msg else 400) from None


def b64_bytes(s, name: str) -> bytes:
    if not isinstance(s, str):
        raise InputError(f"{name}: expected a base64 string")
    if s.startswith("data:"):  # a data URL from a browser canvas
        s = s.partition(",")[2]
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: not valid base64") from None


def _nested_shape(obj, name: str) -> tuple[int, ...]:
    """The shape a nested list claims, read down its first elements (no conversion)."""
    shape = []
    while isinstance(obj, list):
        if not obj:
            raise InputError(f"{name}: empty list in the pixel array")
        shape.append(len(obj))
        if len(shape) > 3:
            break
        obj = obj[0]
    return tuple(shape)


def _has_bool(obj) -> bool:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, bool):
            return True
        if isinstance(o, list):
            stack.extend(o)
    return False


def check_pixel_shape(obj, name: str) -> tuple[int, ...]:
    if not isinstance(obj, list) or not obj:
        raise InputError(f"{name}: pixels must be a non-empty nested list (H, W) or (C, H, W)")
    shape = _nested_shape(obj, name)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise InputError(f"{name}: pixels must have shape (H, W) or (C, H, W) with C 1 or 3")
    return shape


def decode_pixels(obj, channels: int, size: int, limits: Limits, name: str) -> np.ndarray:
    """A nested list (H, W) or (C, H, W) of numbers 0–255 → uint8 (C, size, size).
    The shape is checked (by :func:`check_pixel_shape`) before this converts anything."""
    shape = check_pixel_shape(obj, name)
    if shape[1] * shape[2] > limits.max_pixels:
        raise InputError(
            f"{name}: {shape[1]}×{shape[2]} pixels exceed the limit {limits.max_pixels}", 413
        )
    try:
        a = np.asarray(obj)
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise InputError(f"{name}: pixels must be a rectangular array of numbers") from None
    if a.dtype.kind not in "iuf" or a.shape[-2:] != shape[1:]:
        raise InputError(
            f"{name}: pixels must be a rectangular array of numbers 0–255 "
            f"(not strings, booleans, huge integers or deeper lists)"
        )
    if a.ndim == 2:
        a = a[None]
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{name}: pixel values must be finite numbers in [0, 255]")
    if a.min() < 0 or a.max() > 255:
        raise InputError(f"{name}: pixel values must be finite numbers in [0, 255]")
    u8 = (np.rint(a) if a.dtype.kind == "f" else a).astype(np.uint8)
    if u8.shape[0] == channels and u8.shape[1:] == (size, size):
        return u8
    im = Image.fromarray(u8[0] if u8.shape[0] == 1 else np.ascontiguousarray(u8.transpose(1, 2, 0)))
    return pil_to_input(im, channels, size)


# --------------------------------------------------------------------------- bodies


def parse_multipart(body: bytes, content_type: str):
    """multipart/form-data already in memory (the body limit bounds it) → ([(filename, bytes)],
    {field: str}); the caller checks the count after the options (a 400 before a 413).
    python-multipart's parser with in-memory callbacks: a third of the cost of
    Starlette's form() (no spooled temp file per part), which matters on the hot path."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise InputError("multipart body without a boundary in its Content-Type")
    if not body:
        raise InputError("empty multipart body")
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    part: dict = {}
    name, value, data = [], [], []

    def on_part_begin():
        part.clear()
        data.clear()

    def on_header_end():
        part[b"".join(name).lower()] = b"".join(value)
        name.clear()
        value.clear()

    def on_part_end():
        disp = parse_options_header(part.get(b"content-disposition", b""))[1]
        key = short(disp.get(b"name", b"").decode("utf-8", "replace"))
        if b"filename" in disp:
            fname = short(disp[b"filename"].decode("utf-8", "replace"))
            files.append((fname or key, b"".join(data)))
        elif len(fields) < 16:
            fields[key] = b"".join(data)[:256].decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": lambda d, a, b: name.append(d[a:b]),
        "on_header_value": lambda d, a, b: value.append(d[a:b]),
        "on_header_end": on_header_end,
        "on_part_data": lambda d, a, b: data.append(d[a:b]),
        "on_part_end": on_part_end,
    }
    try:
        p = MultipartParser(boundary, callbacks)
        p.write(body)
        p.finalize()
    except MultipartParseError as e:
        raise InputError(f"bad multipart body ({str(e)[:100]})") from None
    return files, fields


def _parse_json(body: bytes, limits: Limits) -> dict:
    # a cheap upper bound on the numbers a pixel array holds, before any parsing
    if body.count(b",") > limits.max_json_values + 1024:
        raise InputError(
            f"JSON body holds more than {limits.max_json_values} values; send images as PNG "
            "files or raise --max-json-values",
            413,
        )
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise InputError(
            "body is not valid JSON (or nests deeper than JSON parsers allow)"
        ) from None
    if not isinstance(obj, dict) or not ({"images", "pixels"} & obj.keys()):
        raise InputError(
            'JSON must be an object with "images" (list of base64 PNG/JPEG) '
            'or "pixels" (list of (H, W) or (C, H, W) arrays, 0–255)'
        )
    unknown = sorted(set(obj) - set(JSON_KEYS))
    if unknown:
        raise InputError(
            f"unknown JSON key {unknown[0][:40]!r}; the keys are {', '.join(JSON_KEYS)}"
        )
    for key in ("images", "pixels"):
        if key in obj and not isinstance(obj[key], list):
            raise InputError(f'"{key}" must be a list')
    return obj


def parse_request(
    body: bytes, content_type: str, query: dict, limits: Limits, channels: int, size: int
) -> Parsed:
    """Any accepted request body → decoded images and options (runs in the decode pool)."""
    try:
        return _parse_request(body, content_type, query, limits, channels, size)
    except InputError:
        raise
    except CnnlabError as e:
        raise InputError(str(e)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as e:
        raise InputError(f"malformed request ({type(e).__name__})") from None


def check_query(query: dict) -> None:
    """The query string before the body: only the known options, with valid values."""
    unknown = sorted(k for k in query if k not in OPTIONS)
    if unknown:
        raise InputError(
            f"unknown query parameter {unknown[0][:40]!r}; the known ones are " + ", ".join(OPTIONS)
        )
    parse_options(query)


def _parse_request(body, content_type, query, limits, channels, size) -> Parsed:
    check_query(query)
    raw, pixels, opts = _gather(body, content_type, dict(query), limits)
    top_k, invert, tta = parse_options(opts)
    _check_count(len(raw) + len(pixels), limits)
    # sizes first, from headers and list shapes: refuse before decoding or converting anything
    _check_sizes(raw, pixels, limits, channels, size)
    if pixels and (b"true" in body or b"false" in body) and _has_bool(pixels):
        raise InputError("pixel values must be numbers 0–255, not booleans")
    images = _decode_all(raw, channels, size, limits)
    images += [
        decode_pixels(px, channels, size, limits, f"pixels[{i}]") for i, px in enumerate(pixels)
    ]
    names = [name for name, _ in raw] + [f"pixels[{i}]" for i in range(len(pixels))]
    return Parsed(images, top_k, invert, tta, names)


def _gather(body: bytes, content_type: str, opts: dict, limits: Limits):
    """(encoded images [(name, bytes)], JSON pixel arrays, options) of any accepted body;
    ``opts`` holds the query string's options, which win over a form's fields."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        files, fields = parse_multipart(body, content_type)
        parse_options({k: fields[k] for k in OPTIONS if k in fields})
        for k in OPTIONS:
            if k in fields:
                opts.setdefault(k, fields[k])  # the query string wins
        return files, [], opts
    if ctype in ("application/json", ""):
        if not body:
            raise InputError(
                "empty request body; send images as multipart files, a raw image or JSON "
                '{"images": [base64, ...]} / {"pixels": [[[...]]]}'
            )
        if ctype == "" and body.lstrip()[:1] not in (b"{", b"["):
            return [("body", body)], [], opts
        return _gather_json(body, opts, limits)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        if not body:
            raise InputError("empty image body")
        return [("body", body)], [], opts
    raise InputError(
        f"unsupported content type {ctype[:60]!r}; use multipart/form-data, "
        "application/json or image/*",
        415,
    )


def _gather_json(body: bytes, opts: dict, limits: Limits):
    obj = _parse_json(body, limits)
    if isinstance(obj.get("top_k"), str):  # JSON has numbers: "3" is a type error
        raise InputError("top_k must be a JSON integer ≥ 1, not a string")
    if "tta" in obj and not isinstance(obj["tta"], bool):  # and booleans: "true" is one too
        raise InputError("tta must be a JSON boolean, true or false")
    for k in OPTIONS:
        if k in obj:
            opts[k] = obj[k]
    images = obj.get("images", [])
    for i, im in enumerate(images):  # types first (400), sizes after (413)
        if not isinstance(im, str):
            raise InputError(f"images[{i}]: expected a base64 string")
    pixels = obj.get("pixels", [])
    for i, px in enumerate(pixels):
        check_pixel_shape(px, f"pixels[{i}]")
    parse_options(opts)
    _check_count(len(images) + len(pixels), limits)
    raw = [(f"images[{i}]", b64_bytes(im, f"images[{i}]")) for i, im in enumerate(images)]
    return raw, pixels, opts


def _check_sizes(raw, pixels, limits: Limits, channels: int, size: int) -> None:
    """The pixels a request will decode to, from image headers and list shapes, within the
    limits (413)."""
    total = sum(header_pixels(data, name, limits, channels, size) for name, data in raw)
    values = 0
    for i, px in enumerate(pixels):
        shp = check_pixel_shape(px, f"pixels[{i}]")
        values += shp[0] * shp[1] * shp[2]
        total += shp[1] * shp[2]
    if values > limits.max_json_values:
        raise InputError(
            f"the pixel arrays hold {values} values, more than the limit of "
            f"{limits.max_json_values} (--max-json-values); send PNG files instead",
            413,
        )
    if total > limits.max_request_pixels:
        raise InputError(
            f"the request's images hold {total} pixels in all, more than the limit of "
            f"{limits.max_request_pixels} (--max-request-pixels); send fewer or smaller images",
            413,
        )


def _decode_all(raw, channels: int, size: int, limits: Limits) -> list[np.ndarray]:
    """The encoded images decoded, within the request's CPU budget for decoding."""
    budget = limits.decode_budget_s
    t0 = time.thread_time()  # this decode thread's CPU: other requests' work does not count
    images = []
    for name, data in raw:
        images.append(decode_bytes(data, channels, size, limits, name))
        if budget and time.thread_time() - t0 > budget and len(images) < len(raw):
            raise InputError(
                f"decoding this request's images took more than {budget:g} s of CPU after "
                f"{len(images)} of {len(raw)} (--decode-budget); send fewer or smaller images",
                413,
            )
    return images
