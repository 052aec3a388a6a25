"""Losses and optimisers by name."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import OptimConfig
from cnnlab.errors import ConfigError
from cnnlab.train.losses import LOSSES, build_loss
from cnnlab.train.optim import OPTIMIZERS, build_optimizer


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(8, 5, requires_grad=True), torch.randint(0, 5, (8,))


def test_loss_names():
    assert {"cross_entropy", "mse", "kl_div", "nll"} <= set(LOSSES.names())
    with pytest.raises(ConfigError, match="unknown loss 'hinge'; choose one of: .*kl_div"):
        build_loss("hinge", 5)


def test_losses_match_definitions(batch):
    z, y = batch
    onehot = F.one_hot(y, 5).float()
    smooth = onehot * 0.9 + 0.1 / 5
    p, logp = z.softmax(1), z.log_softmax(1)
    torch.testing.assert_close(build_loss("cross_entropy", 5)(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(
        build_loss("cross_entropy", 5, 0.1)(z, y), -(smooth * logp).sum(1).mean()
    )
    torch.testing.assert_close(build_loss("nll", 5)(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(build_loss("mse", 5)(z, y), ((p - onehot) ** 2).sum(1).mean())
    # KL to one-hot is the cross-entropy (the target's entropy is 0)
    torch.testing.assert_close(build_loss("kl_div", 5)(z, y), F.cross_entropy(z, y))
    kl = (smooth * (smooth.log() - logp)).sum(1).mean()
    torch.testing.assert_close(build_loss("kl_div", 5, 0.1)(z, y), kl)
    for name in ("cross_entropy", "mse", "kl_div", "nll"):
        z.grad = None
        build_loss(name, 5, 0.1)(z, y).backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_every_optimizer_lowers_a_quadratic(name):
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)
    x, t = torch.randn(64, 4), torch.randn(64, 1)
    opt = build_optimizer(m, OptimConfig(name=name, lr=0.05))
    first = None
    for _ in range(30):
        loss = F.mse_loss(m(x), t)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_sgd_options():
    m = torch.nn.Linear(2, 2)
    opt = build_optimizer(m, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True))
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and g["nesterov"] and g["momentum"] == 0.9
    assert isinstance(build_optimizer(m, OptimConfig(name="adamw")), torch.optim.AdamW)
    assert set(OPTIMIZERS.names()) >= {"sgd", "adam", "adamw", "adagrad", "rmsprop"}
    with pytest.raises(ConfigError, match="unknown optimizer 'lbfgs'; choose one of"):
        build_optimizer(m, OptimConfig(name="lbfgs"))
