"""The graphs an export holds: the run's model wrapped to take pixels.

- :class:`~cnnlab.inference.model.PixelModel` (the default, ``--input float``): float32
  pixels in [0, 1], (B, C, S, S), B dynamic; the normalisation folded in.
- :class:`Uint8Model` (``--input uint8``): decoded uint8 images of any size in (N, H, W, C)
  or (N, C, H, W); the conversion to float, to grey, the resize, the scaling and
  (optionally) the auto-invert run inside the graph — with the same luma weights and the
  same light-background test as ``inference.pixels`` — and logits and probabilities come
  out.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.deploy.metadata import MAX_SIDE
from cnnlab.inference.model import PixelModel
from cnnlab.inference.pixels import LUMA, light_background


class Uint8Model(nn.Module):
    """Preprocessing in the graph: uint8 images (N, H, W, C) or (N, C, H, W), any H, W →
    (logits, probabilities). float → grey (if RGB comes into a grey model) → bilinear
    antialiased resize to the model's size → optional auto-invert → /255 → PixelModel."""

    def __init__(self, pixels: PixelModel, size: int, in_channels: int, layout: str, invert: bool):
        super().__init__()
        self.pixels = pixels
        self.size, self.layout, self.invert = size, layout, invert
        c = pixels.mean.shape[1]
        self.to_grey = in_channels == 3 and c == 1
        self.register_buffer("grey", torch.tensor(LUMA).reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.to(torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.to_grey:
            x = (x * self.grey).sum(1, keepdim=True)
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
        flip = light_background(x, torch.cat) if self.invert else None  # pixels 0-255
        x = x / 255.0
        if flip is not None:  # a light background on a light-on-dark model: 1 - x, per image
            x = x + flip.to(x.dtype).reshape(-1, 1, 1, 1) * (1 - 2 * x)
        logits = self.pixels(x)
        return logits, torch.softmax(logits, dim=1)


class DtypeGuard(nn.Module):
    """TorchScript refuses a wrong dtype the way ONNX Runtime does (a trace alone would
    silently take uint8 pixels into a float model and mis-scale them)."""

    def __init__(self, inner, uint8: bool):
        super().__init__()
        self.inner = inner
        self.uint8 = uint8

    def forward(self, x: torch.Tensor):
        if self.uint8 and x.dtype != torch.uint8:
            raise RuntimeError("cnnlab export: expected uint8 images, 0-255")
        if not self.uint8 and x.dtype != torch.float32:
            raise RuntimeError("cnnlab export: expected float32 pixels in [0, 1], (B, C, S, S)")
        return self.inner(x)


def example_pixels(meta: dict, n: int = 2) -> torch.Tensor:
    """A random batch in the run's input shape, to trace or export the model with."""
    inp = meta["input"]
    return torch.rand(n, inp["channels"], inp["size"], inp["size"])


def example_images(meta: dict, layout: str, in_channels: int, n: int = 2) -> torch.Tensor:
    """A random uint8 batch, of another size than the model's, to export a Uint8Model with."""
    s = meta["input"]["size"] + 3
    shape = (n, s + 1, s, in_channels) if layout == "NHWC" else (n, in_channels, s + 1, s)
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def io_spec(wrapper: nn.Module) -> tuple[str, list[str], dict]:
    """(input name, output names, dynamic axes) of a PixelModel or Uint8Model."""
    if isinstance(wrapper, Uint8Model):
        hw = (1, 2) if wrapper.layout == "NHWC" else (2, 3)
        return "images", ["logits", "probabilities"], {0: "batch", hw[0]: "height", hw[1]: "width"}
    return "pixels", ["logits"], {0: "batch"}


def export_dims(axes: dict) -> dict:
    """torch.export's dynamic dimensions for :func:`io_spec`'s axes."""
    return {
        i: torch.export.Dim(name, min=1, max=65536 if name == "batch" else MAX_SIDE)
        for i, name in axes.items()
    }
