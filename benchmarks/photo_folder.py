"""A realistic folder of phone-camera-like photos, made offline: ``train/`` and ``val/``.

    python benchmarks/photo_folder.py OUT [--train 240 --val 160 --seed 0]

Two classes, ``ball`` and ``box``: a round or a box-shaped object photographed on a real
background. Every picture is built from the photographs shipped in scikit-image's
``skimage.data`` (astronaut, brick, camera, cat, coffee, coins, grass, gravel, Hubble deep
field, motorcycle, rocket, …; most are public domain or CC0 by their docstrings there, the
rest as scikit-image distributes them; nothing is downloaded): a random crop of one, scaled, flipped and colour-shifted, is the background; a
crop of another is the object's surface, shaded by a light from a random side, with a
soft shadow. Then what a phone adds: a lighting gradient and vignette, defocus blur,
sensor noise, JPEG compression at quality 70–95, and a size drawn from common camera
resolutions (640 × 480 up to 2592 × 1944, landscape or portrait, some of them stored
sideways with an EXIF orientation tag). The object's size and position vary (a small
object far off is hard at 64 px) and the classes' colours overlap, so from-scratch
models land well short of 100 %.

One junk file is added to ``train/box/``: a tiny "image not found" placeholder GIF, the
kind a scraper leaves behind (``cnnlab data check`` should name it).

Needs ``pip install scikit-image`` (for its sample photographs only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CLASSES = ("ball", "box")
SIZES = ((640, 480), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536), (2592, 1944))
SIZE_P = (0.15, 0.2, 0.2, 0.2, 0.1, 0.15)
TINT = {"ball": (0.85, 0.5, 0.25), "box": (0.45, 0.45, 0.6)}  # mean object colours
WORK = 512  # the scene is drawn at this width, then scaled to the camera's size
PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "motorcycle_left.png", "rocket.jpg",
    "retina.jpg", "page.png", "moon.png", "color.png",
)  # fmt: skip


def photos() -> list[np.ndarray]:
    """The sample photographs as float RGB arrays in [0, 1]."""
    try:
        from skimage import data
    except ImportError:
        sys.exit(
            "photo_folder.py needs scikit-image for its sample photos: pip install scikit-image"
        )
    here = Path(data.__file__).parent  # the photos shipped in the wheel (no download)
    out = []
    for name in PHOTOS:
        with Image.open(here / name) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)
    return out


def crop(rng, src: np.ndarray, w: int, h: int) -> np.ndarray:
    """A random crop of ``src`` resized to (h, w, 3), flipped and colour-shifted."""
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    cw, ch = max(8, int(sw * scale)), max(8, int(sh * scale))
    x0, y0 = rng.integers(0, sw - cw + 1), rng.integers(0, sh - ch + 1)
    im = Image.fromarray((src[y0 : y0 + ch, x0 : x0 + cw] * 255).astype(np.uint8))
    a = np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    if rng.random() < 0.5:
        a = a[:, ::-1]
    gain = rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    return np.clip(a * gain + rng.uniform(-0.1, 0.1), 0, 1)


def object_mask(rng, kind: str, w: int, h: int) -> tuple[np.ndarray, tuple]:
    """A soft mask of the object (a ball: an ellipse close to a circle; a box: a rotated
    rectangle) and its centre and size."""
    s = rng.uniform(0.25, 0.6) * min(w, h)
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    m = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(m)
    if kind == "ball":
        rx, ry = s / 2, s / 2 * rng.uniform(0.8, 1.2)
        d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    else:
        a = rng.uniform(0, np.pi)
        hw, hh = s / 2, s / 2 * rng.uniform(0.6, 1.3)
        pts = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
        c, si = np.cos(a), np.sin(a)
        d.polygon([(cx + x * c - y * si, cy + x * si + y * c) for x, y in pts], fill=255)
    m = m.filter(ImageFilter.GaussianBlur(1.0))
    return np.asarray(m, dtype=np.float32)[..., None] / 255, (cx, cy, s)


def scene(rng, pool: list[np.ndarray], kind: str, w: int, h: int) -> np.ndarray:
    bg_i, obj_i = rng.choice(len(pool), 2, replace=False)
    bg = crop(rng, pool[bg_i], w, h)
    surf = crop(rng, pool[obj_i], w, h)
    # the objects' colours overlap but differ on average (balls warmer, boxes cooler), as
    # real classes differ in more than shape
    tint = np.clip(np.asarray(TINT[kind]) + rng.normal(0, 0.12, size=3), 0, 1).astype(np.float32)
    surf = np.clip(surf * 0.5 + tint * 0.5, 0, 1)
    mask, (cx, cy, s) = object_mask(rng, kind, w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)  # light direction
    lx, ly = np.cos(ang), np.sin(ang)
    if kind == "ball":  # shading of a sphere: brighter towards the light
        r = np.clip(((xx - cx) * lx + (yy - cy) * ly) / (s / 2), -1, 1)
        shade = 0.75 + 0.35 * r
    else:  # a box: two faces, one lit
        side = ((xx - cx) * lx + (yy - cy) * ly) > 0
        shade = np.where(side, 1.05, 0.7)
    obj = np.clip(surf * shade[..., None], 0, 1)
    shadow = np.roll(mask, (int(ly * s * 0.08), int(lx * s * 0.08)), axis=(0, 1))
    shadow = (
        np.asarray(
            Image.fromarray((shadow[..., 0] * 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(s * 0.05)
            ),
            dtype=np.float32,
        )[..., None]
        / 255
    )
    img = bg * (1 - 0.45 * shadow)
    img = img * (1 - mask) + obj * mask
    # lighting: a gradient and a vignette
    gx, gy = rng.uniform(-0.3, 0.3, size=2)
    grad = 1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    vig = 1 - rng.uniform(0.1, 0.4) * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2)
    img = img * (grad * vig)[..., None] * rng.uniform(0.7, 1.2)
    return np.clip(img, 0, 1)


def photo(rng, pool, kind: str) -> tuple[Image.Image, int]:
    """One picture at a camera size (with the EXIF orientation to apply, 1 = none)."""
    W, H = SIZES[rng.choice(len(SIZES), p=SIZE_P)]
    if rng.random() < 0.3:  # portrait
        W, H = H, W
    wh = (WORK, int(WORK * H / W))
    img = scene(rng, pool, kind, *wh)
    im = Image.fromarray((img * 255).astype(np.uint8)).resize((W, H), Image.BICUBIC)
    if rng.random() < 0.5:  # defocus
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5) * W / 1000))
    a = np.asarray(im, dtype=np.int16)
    noise = rng.normal(0, rng.uniform(2, 8), size=(H, W, 1)).astype(np.int16)  # luminance noise
    im = Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8))
    orient = 1
    if rng.random() < 0.15:  # stored sideways, as phones do, with the tag that says so
        im, orient = im.transpose(Image.ROTATE_270), 6
    return im, orient


def placeholder() -> Image.Image:
    """A scraper's "image not found" placeholder: a flat grey box with a line of text."""
    im = Image.new("P", (160, 120), 0)
    im.putpalette([230, 230, 230, 120, 120, 120] + [0] * 762)
    d = ImageDraw.Draw(im)
    d.rectangle((4, 4, 155, 115), outline=1)
    d.text((22, 52), "image not found", fill=1, font=ImageFont.load_default())
    return im


def make(out: Path, n_train: int, n_val: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pool = photos()
    sizes: dict[str, int] = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            kind = CLASSES[i % len(CLASSES)]
            d = out / split / kind
            d.mkdir(parents=True, exist_ok=True)
            im, orient = photo(rng, pool, kind)
            exif = Image.Exif()
            if orient != 1:
                exif[0x0112] = orient
            im.save(
                d / f"IMG_{seed:02d}{i:04d}.jpg",
                quality=int(rng.integers(70, 96)),
                exif=exif.tobytes(),
            )
            sizes[f"{max(im.size)}"] = sizes.get(f"{max(im.size)}", 0) + 1
        print(f"{split}: {n} photos", flush=True)
    placeholder().save(out / "train" / "box" / "img_not_found.gif")
    return {"train": n_train, "val": n_val, "junk": 1, "long_sides": sizes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the folder to write (train/<class>/, val/<class>/)")
    p.add_argument("--train", type=int, default=240, help="photos in train/ (both classes)")
    p.add_argument("--val", type=int, default=160, help="photos in val/ (both classes)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty")
    print(make(out, a.train, a.val, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
