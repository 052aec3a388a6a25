"""Image files to model input: decoding any format Pillow reads (with the decompression-bomb
guards), grey/RGB conversion, resizing, and the white-on-black inversion check.

Two kinds of guard run before a pixel is decoded. The pixel guard reads the size from the
header: an absolute cap and a cap against the file's size refuse decompression bombs, and a
caller's ``max_pixels`` bounds the pixels actually decoded — a JPEG is decoded at the
reduced size its DCT allows (draft mode: 1/2, 1/4 or 1/8, never below the model's input),
so a 12 MP phone photo costs a 0.2 MP decode. The structure guard
(:func:`check_structure`) walks a PNG's chunks and a JPEG's markers with a byte search and
refuses floods of metadata (thousands of ``iCCP`` or ancillary chunks, millions of ``COM``
markers, hundreds of scans, a million GIF comments) whose decoding costs seconds of CPU in a
few bytes each."""

from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnlab.errors import CnnlabError

MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpx (8192 × 8192): above any photo, below a memory bomb
MAX_IMAGE_FILE = 256 << 20  # bytes
EXIF_ORIENTATION = 0x0112
# the structure guard: far above what any encoder writes, far below a flood
MAX_PNG_ANCILLARY = 256  # chunks other than IHDR, PLTE, IDAT, IEND
MAX_PNG_COMPRESSED_META = 16  # iCCP (one at most, by the PNG spec), zTXt, iTXt
MAX_JPEG_MARKERS = 1024  # segments (APPn, COM, DQT, DHT, SOS, ...); restart markers not counted
MAX_JPEG_SCANS = 128  # progressive scans, each a pass over the whole image
MAX_GIF_EXTENSIONS = 1024  # extension blocks (comments, application data) before the image
MAX_GIF_SUBBLOCKS = 1 << 16  # their data sub-blocks, each a step of the decoder's Python loop
PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
_PNG_DEFLATED = (b"iCCP", b"zTXt", b"iTXt")
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker in entropy-coded data


class StructureError(CnnlabError):
    """An image whose metadata or scan structure would cost more to parse than any real
    image: refused before decoding (a "limit", like the pixel guard)."""


def _png_chunks(data) -> None:
    n = len(data)
    i, chunks, ancillary, deflated = 8, 0, 0, 0
    chunk_cap = 1024 + n // 1024  # empty IDAT floods: a real encoder writes ≥ 1 KiB each
    while i + 8 <= n:
        length, ctype = struct.unpack_from(">I4s", data, i)
        chunks += 1
        if ctype not in _PNG_CRITICAL:
            ancillary += 1
            deflated += ctype in _PNG_DEFLATED
        if (
            ancillary > MAX_PNG_ANCILLARY
            or deflated > MAX_PNG_COMPRESSED_META
            or chunks > chunk_cap
        ):
            what = (
                f"more than {MAX_PNG_ANCILLARY} metadata chunks"
                if ancillary > MAX_PNG_ANCILLARY
                else f"more than {MAX_PNG_COMPRESSED_META} compressed metadata chunks (iCCP, zTXt, "
                "iTXt)"
                if deflated > MAX_PNG_COMPRESSED_META
                else f"more than {chunk_cap} chunks for {n:,} bytes"
            )
            raise StructureError(f"PNG holds {what}, over the limit for one image")
        if ctype == b"IEND":
            return
        i += 12 + length


def _jpeg_markers(data) -> None:
    n = len(data)
    i, markers, scans = 2, 0, 0
    while i + 1 < n:
        if data[i] != 0xFF:  # garbage between segments: the decoder's problem, not a flood
            return
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        i += 2
        if m == 0xD9:  # EOI
            return
        if 0xD0 <= m <= 0xD7 or m in (0x01, 0x00):
            continue
        markers += 1
        scans += m == 0xDA
        if markers > MAX_JPEG_MARKERS or scans > MAX_JPEG_SCANS:
            what = (
                f"more than {MAX_JPEG_SCANS} scans"
                if scans > MAX_JPEG_SCANS
                else f"more than {MAX_JPEG_MARKERS} segments (APPn, COM, tables)"
            )
            raise StructureError(f"JPEG holds {what}, over the limit for one image")
        if i + 2 > n:
            return
        i += struct.unpack_from(">H", data, i)[0]
        if m == 0xDA:  # entropy-coded data follows: jump to the next real marker
            found = _JPEG_MARKER.search(data, i)
            if found is None:
                return
            i = found.start()


def _gif_blocks(data) -> None:
    n = len(data)
    flags = data[10]
    i = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)  # past the colour table
    extensions = subblocks = 0
    while i < n and data[i] == 0x21:  # extensions before the first image descriptor
        extensions += 1
        i += 2
        while i < n and data[i]:
            subblocks += 1
            i += data[i] + 1
            if subblocks > MAX_GIF_SUBBLOCKS:
                raise StructureError(
                    f"GIF holds more than {MAX_GIF_SUBBLOCKS} metadata sub-blocks, over the "
                    "limit for one image"
                )
        i += 1
        if extensions > MAX_GIF_EXTENSIONS:
            raise StructureError(
                f"GIF holds more than {MAX_GIF_EXTENSIONS} extension blocks before its image, "
                "over the limit for one image"
            )


def check_structure(data, label="image") -> None:
    """Refuse a PNG or JPEG whose chunk or marker structure is a flood (see the module
    docstring); other formats and malformed files pass through to the decoder. Walks
    the bytes with ``struct`` and one regular-expression search per scan: microseconds
    for a real photo, and it stops at the limit for a flood."""
    head = bytes(data[:8])
    try:
        if head == PNG_SIG:
            _png_chunks(data)
        elif head[:3] == b"\xff\xd8\xff":
            _jpeg_markers(data)
        elif head[:6] in (b"GIF87a", b"GIF89a") and len(data) > 13:
            _gif_blocks(data)
    except StructureError as e:
        raise StructureError(f"{label}: {e}; re-encode it without the extra metadata") from None
    except struct.error:
        return  # truncated: Pillow says what is wrong with it


def decoded_size(im, channels: int, size: int) -> tuple[int, int]:
    """Ask the decoder for the smallest size that still covers ``size`` × ``size`` (JPEG's
    DCT scaling; other formats decode whole) and return the size it will decode at."""
    im.draft("L" if channels == 1 else "RGB", (size, size))
    return im.size


def load_image(
    path, channels: int, size: int, max_pixels: int | None = None, name: str | None = None
) -> np.ndarray:
    """Decode any PNG/JPEG (any size or mode) → uint8 (C, size, size).

    ``path`` may be a file object (the server passes uploads as BytesIO, named ``name``).
    ``max_pixels`` refuses images that would decode to more pixels (a JPEG's at its reduced
    draft size), before decoding a pixel.
    """
    label = name or path
    try:
        src, nbytes = path, 0
        if isinstance(path, (str, os.PathLike)):
            # decode from memory: a chunk length that lies (b"\x04\x00\x00\x0cIDAT") makes
            # a buffered file's read(n) allocate n bytes up front; BytesIO.read does not
            nbytes = os.path.getsize(path)
            if nbytes > MAX_IMAGE_FILE:
                raise Image.DecompressionBombError(f"a {nbytes:,}-byte file")
            src = io.BytesIO(Path(path).read_bytes())
        elif hasattr(path, "getbuffer"):
            nbytes = path.getbuffer().nbytes
        if hasattr(src, "getbuffer"):
            with src.getbuffer() as view:
                check_structure(view, label)
        with Image.open(src) as im:
            w, h = im.size
            # decided from the header, before the decoder allocates w*h pixels: an absolute
            # cap, and a cap against the file's size (deflate tops out near 1032:1, so a
            # 100-byte file that claims 8192 x 8192 pixels is lying)
            if w * h > MAX_IMAGE_PIXELS or (nbytes and w * h > max(1 << 20, 4096 * nbytes)):
                raise Image.DecompressionBombError(
                    f"header claims {w}x{h} pixels in a {nbytes:,}-byte file"
                )
            dw, dh = decoded_size(im, channels, size)  # JPEG: decode smaller
            if max_pixels and dw * dh > max_pixels:
                raise CnnlabError(
                    f"{label}: image has {w}×{h} pixels ({dw}×{dh} decoded), more than the "
                    f"limit of {max_pixels}; send a smaller image"
                )
            im.load()
            if im.getexif().get(EXIF_ORIENTATION, 1) != 1:  # a phone photo taken sideways
                im = ImageOps.exif_transpose(im)
            return pil_to_input(im, channels, size)
    except CnnlabError:
        raise
    except FileNotFoundError:
        raise CnnlabError(f"{label}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise CnnlabError(
            f"{label}: image too large ({e}); the limit is {MAX_IMAGE_PIXELS:,} pixels "
            f"(8192×8192) in at most {MAX_IMAGE_FILE >> 20} MiB: resize it first"
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure of a decoder fed untrusted bytes
        raise CnnlabError(f"{label}: not a readable image ({type(e).__name__})") from None


def to_8bit(im):
    """16-bit and 32-bit grey images scaled to 8 bits (Pillow's convert("L") clips them:
    every 16-bit value above 255 would turn white). Other modes pass through."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im, dtype=np.int64)
        if im.mode == "I" and a.size and 0 <= a.min() and a.max() <= 255:
            return Image.fromarray(a.astype(np.uint8), "L")  # 8-bit content in a 32-bit mode
        a = np.clip(a, 0, 65535)
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0  # [0, 1] floats or 0-255 floats
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    return im


def pil_to_input(im, channels: int, size: int) -> np.ndarray:
    """A decoded PIL image → uint8 (C, size, size): bit depth, transparency on white, mode,
    resize."""
    im = to_8bit(im)
    if im.mode in ("RGBA", "LA", "P", "PA", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("L" if channels == 1 else "RGB")
    im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
