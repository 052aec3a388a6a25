"""The multilayer perceptron baseline of the article's neural-network section: the image
flattened into a vector, hidden fully connected layers, no convolution."""

from __future__ import annotations

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import Classifier, register_model
from cnnlab.models.layers import dropout_places, fc_block, init_weights, norm_places


def _widths(hidden) -> list[int]:
    if isinstance(hidden, int):
        parts = [hidden]
    elif isinstance(hidden, str):
        parts = [p for p in hidden.replace("-", ",").split(",") if p.strip()]
    else:
        parts = list(hidden)
    try:
        widths = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"hidden must be widths like '256,128', got {hidden!r}") from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"hidden must be positive widths like '256,128', got {hidden!r}")
    return widths


@register_model("mlp", (1, 28), "multilayer perceptron baseline (hidden 256-128, no convolutions)")
class MLP(Classifier):
    """Flatten → [Linear → (BN) → act → (dropout)] × len(hidden) → Linear(classes)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        hidden: str = "256,128",
        activation: str = "relu",
        init: str = "default",
        init_std: float = 0.01,
        batch_norm: str = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = _widths(hidden)
        _, bn_fc = norm_places(batch_norm)
        _, rate = dropout_places(dropout, "fc")
        self.features = nn.Flatten()  # no feature extractor: the pixels are the features
        n_in = in_channels * input_size * input_size
        layers: list[nn.Module] = []
        for w in widths:
            layers += fc_block(n_in, w, activation, bn_fc, rate)
            n_in = w
        self.head = nn.Sequential(*layers)
        self.num_features = n_in
        self.classifier = nn.Linear(n_in, num_classes)
        init_weights(self, init, init_std)
