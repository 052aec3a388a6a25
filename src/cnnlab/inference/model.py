"""A run's model as inference uses it (torch): taking float pixels in [0, 1] with the
normalisation folded in (:class:`PixelModel` — what ``cnnlab predict``, the torch backend
of the server and every export run), numpy in and out for the answer code, and TTA on a
device for whole datasets."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from cnnlab.inference.pixels import norm_stats
from cnnlab.inference.views import View, apply_view
from cnnlab.runs.load import load_model


class PixelModel(nn.Module):
    """``logits = model((pixels - mean) / std)`` with pixels float in [0, 1], (B, C, S, S)."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        c = model.cnnlab_args["in_channels"] if hasattr(model, "cnnlab_args") else len(mean)
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        self.register_buffer("mean", mean.expand(c).reshape(1, c, 1, 1).clone())
        self.register_buffer("std", std.expand(c).reshape(1, c, 1, 1).clone())

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels → what the model takes."""
        return (pixels - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # a no-op on float32 input; in a torch.export graph it asserts the dtype, so a .pt2
        # refuses uint8 pixels as ONNX Runtime does instead of mis-scaling them
        pixels = pixels.to(torch.float32)
        return self.model(self.normalize(pixels))


def pixel_model(run, which: str = "best", device="cpu") -> tuple[PixelModel, dict]:
    """The run's model on ``device`` taking [0, 1] pixels (eval mode), and its metadata."""
    model, meta = load_model(run, which, device)
    mean, std = norm_stats(meta)
    return PixelModel(model, mean, std).to(device).eval(), meta


def numpy_logits(model: nn.Module, x: np.ndarray, device="cpu") -> np.ndarray:
    """float32 pixels (B, C, S, S) → float32 logits (B, K), both numpy."""
    with torch.inference_mode():
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()


@torch.no_grad()
def average_views(model, x01: torch.Tensor, views: list[View], normalize) -> torch.Tensor:
    """Softmax probabilities (B, K) averaged over ``views`` of the batch ``x01`` (pixels in
    [0, 1]): all views go through the model as one batch. The device-side twin of
    ``answer.with_views``/``split_views``, for whole datasets (``eval --tta``)."""
    b = x01.shape[0]
    xs = torch.cat([apply_view(x01, v) for v in views])
    p = torch.softmax(model(normalize(xs)).float(), 1)
    return p.view(len(views), b, -1).mean(0)


@contextmanager
def strict_fp32():
    """Plain float32 on CUDA (no TF32, no benchmarked cuDNN algorithms) while evaluating:
    a training process turns TF32 on, a fresh ``cnnlab eval`` has it off, and the two must
    score a checkpoint alike."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = b.cudnn.benchmark = False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = saved
