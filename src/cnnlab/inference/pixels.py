"""Image → model input: one way for ``cnnlab predict``, the server and the uint8 export's
graph. No torch here (the server runs it without torch on an ONNX export).

The steps, in order (an export's ``preprocessing`` metadata lists the same):

1. decode, EXIF orientation, transparency onto white, grey (luma, :data:`LUMA`) or RGB,
   resize — :func:`cnnlab.data.images.load_image` (:func:`read_image`);
2. the light-on-dark check and inversion (:func:`maybe_invert`): a grey image on a light
   background is inverted for a model trained on light-on-dark images (MNIST);
3. scaling to float32 in [0, 1] (:func:`prepare`);
4. the normalisation the model saw (:func:`norm_stats`), folded into the model
   (``model.PixelModel``, and every export).

:func:`border_mean` and :func:`light_background` take numpy arrays and torch tensors
alike: the uint8 export computes its in-graph inversion with them.
"""

from __future__ import annotations

import os

import numpy as np

from cnnlab.data.images import load_image

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 grey, as Pillow's convert("L")
INVERT_MODES = ("auto", "always", "never")
LIGHT_BORDER = 127  # a border brighter than this on average (of 255) is a light background


def norm_stats(meta: dict) -> tuple[list[float], list[float]]:
    """The normalisation the model saw: the loader's, after an optional RGB→grey fold."""
    inp = meta["input"]
    mean, std = list(inp["mean"]), list(inp["std"])
    if inp.get("grayscale") and len(mean) == 3:
        mean = [sum(a * b for a, b in zip(mean, LUMA))]
        std = [sum(a * b for a, b in zip(std, LUMA))]
    return mean, std


def light_on_dark(mean) -> bool:
    """Whether the training images were light on a dark background (MNIST-like)."""
    return float(np.mean(mean)) < 0.5


def border_mean(x, cat=np.concatenate):
    """The mean of each image's border pixels: (..., C, H, W) → (...). ``cat`` joins arrays
    along a dimension: ``np.concatenate``, or ``torch.cat`` for tensors."""
    edges = cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)  # (..., C, E)
    return edges.mean(-1).mean(-1)


def light_background(x, cat=np.concatenate):
    """Whether each image (..., C, H, W) of pixels 0–255 has a light background: its
    border's mean is above :data:`LIGHT_BORDER`."""
    return border_mean(x, cat) > LIGHT_BORDER


def maybe_invert(a: np.ndarray, mean, invert: str = "auto") -> tuple[np.ndarray, bool]:
    """Invert a grey uint8 image (C, H, W) on a light background when the training data
    was light-on-dark (``mean`` < 0.5); ``invert``: auto | always | never."""
    if a.shape[0] != 1 or invert == "never":
        return a, False
    flip = invert == "always" or (light_on_dark(mean) and bool(light_background(a)))
    return (255 - a if flip else a), flip


def read_image(image, channels: int, size: int) -> np.ndarray:
    """An image file (path) decoded to uint8 (C, size, size); an array is taken as such."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, channels, size)
    return np.asarray(image, np.uint8)


def prepare(images: list[np.ndarray], mean, invert: str) -> tuple[np.ndarray, list[bool]]:
    """uint8 images (C, S, S) → float32 pixels (B, C, S, S) in [0, 1] and which of them were
    inverted (:func:`maybe_invert`; ``mean``: the normalisation mean)."""
    out, flags = [], []
    for a in images:
        a, f = maybe_invert(a, mean, invert)
        out.append(a)
        flags.append(f)
    return np.stack(out).astype(np.float32) / np.float32(255.0), flags
