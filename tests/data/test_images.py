import io

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.images import load_image


def encode(a: np.ndarray, mode: str | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    (Image.fromarray(a, mode) if mode else Image.fromarray(a)).save(buf, "PNG")
    buf.seek(0)
    return buf


@pytest.mark.parametrize("value,expected", [(0, 0), (32768, 128), (65535, 255), (257 * 60, 60)])
def test_16bit_png_is_scaled_not_clipped(value, expected):
    """A mid-grey 16-bit PNG stays mid-grey (convert("L") used to clip it to white)."""
    src = encode(np.full((8, 8), value, np.uint16))
    assert Image.open(src).mode.startswith("I")
    src.seek(0)
    out = load_image(src, 1, 8)
    assert out.shape == (1, 8, 8) and int(out[0, 0, 0]) == expected


def test_16bit_gradient_keeps_its_order():
    a = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    row = load_image(encode(a), 1, 16)[0, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()


def test_8bit_and_rgba_unchanged():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    assert (load_image(encode(grey), 1, 8)[0] == grey).all()
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent: white after compositing
    assert (load_image(encode(rgba, "RGBA"), 1, 8) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((8, 16), np.uint8)
    a[:, :4] = 255  # a bright left edge, in a landscape image
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "side.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "side.jpg", 1, 16)[0]
    assert x[:4].mean() > 200 and x[-4:].mean() < 50  # the edge is now on top
