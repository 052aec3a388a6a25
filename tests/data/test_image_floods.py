"""Images whose structure, not their pixels, is the attack: metadata floods that cost
seconds of CPU in a few bytes each, and the decompression-bomb guard beside the photo rule
(a large JPEG is decoded at reduced size and accepted)."""

import functools
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.images import (
    MAX_JPEG_MARKERS,
    MAX_PNG_ANCILLARY,
    StructureError,
    check_structure,
    load_image,
)
from cnnlab.errors import CnnlabError


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def small_png(side: int = 28) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 90, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_flood(extra: bytes, n: int) -> bytes:
    b = small_png()
    return b[:33] + extra * n + b[33:]  # after the signature and IHDR


ICCP = chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * (1 << 20), 9))  # 1 KiB → 1 MiB


def small_jpeg(side: int = 28) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def jpeg_com_flood(n: int) -> bytes:
    j = small_jpeg()
    return j[:2] + b"\xff\xfe\x00\x02" * n + j[2:]


def gif_comment_flood(n: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(buf, "GIF")
    g = buf.getvalue()
    i = 13 + (3 * 2 ** ((g[10] & 7) + 1) if g[10] & 0x80 else 0)
    return g[:i] + b"\x21\xfe\x01a\x00" * n + g[i:]


FLOODS = {
    "iCCP chunks": lambda n: png_flood(ICCP, n),
    "tiny ancillary chunks": lambda n: png_flood(chunk(b"abCd", b""), n),
    "empty IDAT chunks": lambda n: (lambda b: b[:33] + chunk(b"IDAT", b"") * n + b[33:])(
        small_png()
    ),
    "JPEG COM markers": jpeg_com_flood,
    "GIF comments": gif_comment_flood,
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_flood_refused_fast_before_decoding(kind):
    """Each flood is a valid image that Pillow decodes (slowly: `benchmarks/serve_hostile.py`
    measures it); the guard refuses it from its structure, before Pillow sees it."""
    n = {"iCCP chunks": 300, "JPEG COM markers": 200_000, "GIF comments": 100_000}.get(kind, 60_000)
    data = FLOODS[kind](n)
    with Image.open(io.BytesIO(data)) as im:  # a valid image: the decoder takes it
        im.load()
        assert im.size == (28, 28)
    with pytest.raises(StructureError, match="limit"):
        check_structure(data, "x")
    with pytest.raises(CnnlabError, match="limit"):  # predict / eval / serve all decode here
        load_image(io.BytesIO(data), 1, 28)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FLOODS))
def test_flood_refused_at_full_scale(kind):
    """The sizes of the reported attack: ~8,000 iCCP chunks, 441k ancillary, 2M COM."""
    n = {"iCCP chunks": 8000, "JPEG COM markers": 2_000_000, "GIF comments": 1_000_000}.get(
        kind, 441_000
    )
    data = FLOODS[kind](n)
    t = time.process_time()  # this process's CPU: the machine's load does not move it
    with pytest.raises(StructureError):
        check_structure(data, "x")
    assert time.process_time() - t < 1.0  # it stops at the limit: milliseconds


def test_real_images_pass_the_structure_guard():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 400, 3), np.uint8)
    for fmt, kw in [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {})]:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, **kw)
        check_structure(buf.getvalue())
    # some metadata is fine: a few text chunks and one ICC profile, COM and EXIF in a JPEG
    check_structure(png_flood(chunk(b"tEXt", b"k\0v"), MAX_PNG_ANCILLARY - 2))
    check_structure(jpeg_com_flood(MAX_JPEG_MARKERS - 20))
    check_structure(gif_comment_flood(100))
    assert load_image(io.BytesIO(png_flood(ICCP, 1)), 1, 28).shape == (1, 28, 28)


@functools.cache
def photo_jpeg(w: int, h: int) -> bytes:
    """A smooth (photo-like) JPEG: a few MB at 12 MP, as a phone writes."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (w + h))], -1)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_large_jpeg_decodes_at_reduced_size_within_the_pixel_guard():
    """A 12 MP photo is accepted under a 4 MP guard (decoded at 1/8: 504 × 378); a PNG of
    the same size is not (it has no reduced decode), nor is a bomb."""
    photo = photo_jpeg(4032, 3024)
    a = load_image(io.BytesIO(photo), 3, 28, max_pixels=4_000_000)
    assert a.shape == (3, 28, 28) and a.std() > 0
    with pytest.raises(CnnlabError, match="limit of 4000000"):  # a 224 model: 1/4 → 1008 × 756
        load_image(io.BytesIO(photo), 3, 2100, max_pixels=4_000_000)
    big_png = io.BytesIO()
    Image.new("L", (4032, 3024)).save(big_png, "PNG")
    with pytest.raises(CnnlabError, match="limit"):
        load_image(io.BytesIO(big_png.getvalue()), 1, 28, max_pixels=4_000_000)
    bomb = photo_jpeg(64, 64)
    bomb = bomb.replace(
        b"\xff\xc0\x00\x11\x08\x00\x40\x00\x40", b"\xff\xc0\x00\x11\x08\xff\xf0\xff\xf0"
    )
    with pytest.raises(CnnlabError, match="too large"):  # 65520² claimed in a few KB
        load_image(io.BytesIO(bomb), 3, 28)
