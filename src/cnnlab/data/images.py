"""Image files to model input: decoding any format Pillow reads (with the decompression-bomb
guards), grey/RGB conversion, resizing, and the white-on-black inversion check."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnlab.errors import CnnlabError

MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpx (8192 × 8192): above any photo, below a memory bomb
MAX_IMAGE_FILE = 256 << 20  # bytes
EXIF_ORIENTATION = 0x0112


def load_image(
    path, channels: int, size: int, max_pixels: int | None = None, name: str | None = None
) -> np.ndarray:
    """Decode any PNG/JPEG (any size or mode) → uint8 (C, size, size).

    ``path`` may be a file object (the server passes uploads as BytesIO, named ``name``).
    ``max_pixels`` refuses larger images from their header, before decoding a pixel.
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
        with Image.open(src) as im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise CnnlabError(
                    f"{label}: image has {w}×{h} pixels, more than the "
                    f"limit of {max_pixels}; send a smaller image"
                )
            # decided from the header, before the decoder allocates w*h pixels: an absolute
            # cap, and a cap against the file's size (deflate tops out near 1032:1, so a
            # 100-byte file that claims 8192 x 8192 pixels is lying)
            if w * h > MAX_IMAGE_PIXELS or (nbytes and w * h > max(1 << 20, 4096 * nbytes)):
                raise Image.DecompressionBombError(
                    f"header claims {w}x{h} pixels in a {nbytes:,}-byte file"
                )
            im.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode smaller
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


def maybe_invert(a: np.ndarray, mean, invert: str = "auto") -> tuple[np.ndarray, bool]:
    """Invert a gray uint8 image (C, H, W) on a light background when the training data
    was light-on-dark (mean < 0.5); ``invert``: auto | always | never."""
    if a.shape[0] != 1 or invert == "never":
        return a, False
    dark_data = float(np.mean(mean)) < 0.5
    flip = invert == "always"
    if not flip and dark_data:
        border = np.concatenate([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], axis=None)
        flip = bool(border.mean() > 127)
    return (255 - a if flip else a), flip
