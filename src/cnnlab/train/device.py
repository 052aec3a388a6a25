"""Device, precision, memory format and compile: decided here, once, and passed in."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = fp32
    channels_last: bool
    compile: bool

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        prec = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        extra = ", channels_last" if self.channels_last else ""
        extra += ", compiled" if self.compile else ""
        name = self.device.type
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "cpu":
            name = f"cpu ({torch.get_num_threads()} threads)"
        return f"{name}, {prec}{extra}"


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu")
    return torch.device(name)


def make_runtime(t: TrainConfig) -> Runtime:
    dev = resolve_device(t.device)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    elif dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    prec = t.precision
    if prec == "auto":
        prec = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    if amp is torch.float16 and dev.type != "cuda":
        raise ConfigError("fp16 autocast needs CUDA; use --set train.precision=bf16 or fp32")
    cl = t.channels_last.lower()
    channels_last = dev.type == "cuda" if cl == "auto" else cl == "true"
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, amp, channels_last, bool(t.compile))
