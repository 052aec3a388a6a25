"""Building blocks chosen by name: activations, weight initialisation, normalisation.

Every lookup fails with the list of valid names:
``unknown activation 'rellu'; choose one of: elu, gelu, ...``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.errors import ConfigError, choices_msg


class LeCunTanh(nn.Module):
    """LeCun's scaled tanh, 1.7159·tanh(2x/3) (LeCun et al. 1998, appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": lambda: nn.ELU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "lecun_tanh": LeCunTanh,
    "identity": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    key = str(name).lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ConfigError(choices_msg("activation", name, ACTIVATIONS))
    return ACTIVATIONS[key]()


NORM_PLACES = {
    "none": (False, False),
    "conv": (True, False),
    "fc": (False, True),
    "both": (True, True),
}
DROPOUT_PLACES = {"fc": (False, True), "conv": (True, False), "both": (True, True)}


def _place(kind: str, value, table: dict) -> tuple[bool, bool]:
    if value is True:
        value = "both"
    elif value is False or value is None:
        value = "none"
    key = str(value).lower()
    if key not in table:
        raise ConfigError(choices_msg(kind, value, table))
    return table[key]


def norm_places(batch_norm) -> tuple[bool, bool]:
    """``batch_norm`` option → (after conv, after FC): none, conv, fc, both (true = both)."""
    return _place("batch_norm placement", batch_norm, NORM_PLACES)


def dropout_places(dropout: float, dropout_at) -> tuple[float, float]:
    """(dropout rate in the conv part, rate in the FC part) from rate + placement."""
    rate = float(dropout)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    conv, fc = _place("dropout placement", dropout_at, DROPOUT_PLACES)
    return (rate if conv else 0.0, rate if fc else 0.0)


def conv_block(
    conv: nn.Conv2d, activation: str, bn: bool, pool: nn.Module | None = None, dropout: float = 0.0
) -> list[nn.Module]:
    """conv → [BN] → act → [pool] → [dropout]; BN sits before the non-linearity
    (Ioffe & Szegedy), and nothing is added when an option is off, so the default
    layout (and checkpoints of it) stays unchanged."""
    layers: list[nn.Module] = [conv]
    if bn:
        layers.append(nn.BatchNorm2d(conv.out_channels))
    layers.append(get_activation(activation))
    if pool is not None:
        layers.append(pool)
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return layers


def fc_block(
    n_in: int,
    n_out: int,
    activation: str,
    bn: bool = False,
    dropout: float = 0.0,
    dropout_first: bool = False,
) -> list[nn.Module]:
    """[dropout] → linear → [BN] → act → [dropout]. AlexNet drops *before* each hidden FC
    (``dropout_first``); the default places dropout after the activation."""
    layers: list[nn.Module] = []
    if dropout > 0 and dropout_first:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(n_in, n_out))
    if bn:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(get_activation(activation))
    if dropout > 0 and not dropout_first:
        layers.append(nn.Dropout(dropout))
    return layers


def _lecun_normal(w: torch.Tensor) -> None:
    fan_in = w[0].numel()  # inputs per output unit: in_features, or in/groups · k · k
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in))


INITS = {
    "default": None,  # PyTorch's own per-layer initialisation
    "normal": lambda w, std: nn.init.normal_(w, 0.0, std),
    "xavier_uniform": lambda w, std: nn.init.xavier_uniform_(w),
    "xavier_normal": lambda w, std: nn.init.xavier_normal_(w),
    "kaiming_uniform": lambda w, std: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w, std: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "lecun_normal": lambda w, std: _lecun_normal(w),
}


def init_weights(module: nn.Module, name: str = "default", std: float = 0.01) -> nn.Module:
    """Initialise every conv/linear weight by ``name``; biases to zero (except 'default')."""
    key = str(name).lower().replace("-", "_")
    if key not in INITS:
        raise ConfigError(choices_msg("weight init", name, INITS))
    fn = INITS[key]
    if fn is None:
        return module
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fn(m.weight, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
