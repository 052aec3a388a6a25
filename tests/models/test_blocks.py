"""Activations and weight initialisations by name."""

import math

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models.layers import ACTIVATIONS, INITS, get_activation, init_weights

ISSUE_ACTIVATIONS = ["relu", "sigmoid", "tanh", "elu", "leaky_relu", "gelu", "lecun_tanh"]
ISSUE_INITS = [
    "default",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_normal",
]


def test_every_named_activation():
    x = torch.linspace(-3, 3, 61)
    ref = {
        "relu": torch.relu(x),
        "sigmoid": torch.sigmoid(x),
        "tanh": torch.tanh(x),
        "elu": torch.nn.functional.elu(x),
        "leaky_relu": torch.nn.functional.leaky_relu(x, 0.01),
        "gelu": torch.nn.functional.gelu(x),
        "lecun_tanh": 1.7159 * torch.tanh(2 * x / 3),
    }
    assert set(ISSUE_ACTIVATIONS) <= set(ACTIVATIONS)
    for name in ISSUE_ACTIVATIONS:
        torch.testing.assert_close(get_activation(name)(x.clone()), ref[name], msg=name)
    assert get_activation("Leaky-ReLU") is not None  # case and dash tolerant
    # LeCun's scaling makes f(±1) ≈ ±1
    assert abs(get_activation("lecun_tanh")(torch.tensor(1.0)).item() - 1.0) < 1e-3


def test_unknown_activation_lists_names():
    with pytest.raises(ConfigError, match="unknown activation 'swish'; choose one of: .*gelu"):
        get_activation("swish")


@pytest.mark.parametrize("name", ISSUE_INITS)
def test_every_named_init(name):
    torch.manual_seed(0)
    lin = torch.nn.Linear(400, 300)
    before = lin.weight.detach().clone()
    init_weights(lin, name, std=0.05)
    w = lin.weight.detach()
    if name == "default":
        torch.testing.assert_close(w, before)
        return
    assert not torch.equal(w, before) and (lin.bias == 0).all()
    fan_in, fan_out = 400, 300
    expected_std = {
        "normal": 0.05,
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "kaiming_normal": math.sqrt(2 / fan_in),
        "lecun_normal": math.sqrt(1 / fan_in),
    }[name]
    assert abs(w.std().item() / expected_std - 1) < 0.05, (name, w.std().item(), expected_std)
    assert abs(w.mean().item()) < 0.01


def test_unknown_init_lists_names():
    with pytest.raises(ConfigError, match="unknown weight init 'he'; choose one of: .*kaiming"):
        init_weights(torch.nn.Linear(2, 2), "he")
    assert set(ISSUE_INITS) <= set(INITS)
