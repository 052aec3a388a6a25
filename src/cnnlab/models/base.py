"""The model contract and the model registry.

Every classifier has ``features`` (conv part), ``head`` (flatten + hidden FC layers),
``classifier`` (the last linear layer), ``forward_features``, ``forward_head``,
``num_features`` and ``reset_classifier(num_classes)`` (timm / torchvision style).
Builders know nothing about devices or precision.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.errors import ConfigError
from cnnlab.models.layers import fc_block
from cnnlab.registry import Registry, accepted_kwargs, check_kwargs


def conv_out(size: int, k: int, s: int = 1, p: int = 0) -> int:
    return (size + 2 * p - k) // s + 1


class Classifier(nn.Module):
    features: nn.Module
    head: nn.Module
    classifier: nn.Module
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.head(f)
        return h if pre_logits else self.classifier(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)

    def set_head(
        self,
        flat_features: int,
        widths: tuple[int, ...],
        num_classes: int,
        activation: str,
        bn: bool = False,
        dropout: float = 0.0,
        dropout_first: bool = False,
    ) -> None:
        """``head`` = flatten → one FC block per width; ``classifier`` = the last linear
        layer, from the last width to ``num_classes``."""
        self.flat_features = flat_features
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = flat_features
        for w in widths:
            layers += fc_block(n_in, w, activation, bn, dropout, dropout_first)
            n_in = w
        self.num_features = n_in
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(n_in, num_classes)


@dataclass
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    default_input: tuple[int, int]  # (channels, size)
    description: str = ""

    def options(self) -> list[str]:
        return [
            k
            for k in accepted_kwargs(self.builder)
            if k not in ("in_channels", "num_classes", "input_size")
        ]


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, default_input=(1, 28), description: str = ""):
    """Class (or builder function) decorator: registers it as model ``name`` for
    ``default_input`` = (channels, size) images."""

    def deco(builder: Callable[..., nn.Module]):
        MODELS.register(name, ModelEntry(name, builder, tuple(default_input), description))
        return builder

    return deco


def option_default(model: str, key: str, default=None):
    """The default a model builder gives option ``key`` (``default`` when it has none)."""
    p = inspect.signature(MODELS.get(model).builder).parameters.get(key)
    if p is None or p.default is inspect.Parameter.empty:
        return default
    return p.default


def list_models(pattern: str | None = None) -> list[str]:
    return MODELS.names(pattern)


def create_model(
    name: str,
    in_channels: int | None = None,
    num_classes: int = 10,
    input_size: int | None = None,
    **blocks,
) -> nn.Module:
    """Build a registered model; ``blocks`` are its named options (activation, init, ...)."""
    entry = MODELS.get(name)
    check_kwargs(
        "model",
        entry.name,
        entry.builder,
        blocks,
        skip=("in_channels", "num_classes", "input_size"),
    )
    c, s = entry.default_input
    in_channels = c if in_channels is None else int(in_channels)
    input_size = s if input_size is None else int(input_size)
    if in_channels < 1 or num_classes < 1 or input_size < 1:
        raise ConfigError("in_channels, num_classes and input_size must be positive")
    try:
        model = entry.builder(
            in_channels=in_channels, num_classes=num_classes, input_size=input_size, **blocks
        )
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"cannot build {entry.name} for {in_channels}×{input_size}×{input_size} inputs: {e}"
        ) from None
    # options a builder marks transient (a weights file to start from) are not rebuild args
    transient = getattr(model, "cnnlab_transient_args", ())
    model.cnnlab_args = dict(
        name=entry.name,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        **{k: v for k, v in blocks.items() if k not in transient},
    )
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_channels: int, input_size: int) -> int:
    """Multiply-accumulates for one image, counted by torch's FlopCounterMode (flops/2)."""
    was = model.training
    model.eval()
    x = torch.zeros(1, in_channels, input_size, input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was)
    return fc.get_total_flops() // 2
