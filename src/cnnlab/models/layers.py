"""Building blocks chosen by name: activations, weight initialisation, normalisation.

Every lookup fails with the list of valid names:
``unknown activation 'rellu'; choose one of: elu, gelu, ...``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, choices_msg


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


def _lecun_normal(w: torch.Tensor) -> None:
    fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
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
