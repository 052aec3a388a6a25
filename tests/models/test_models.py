"""Every registered model: shapes, gradients, class counts, eval determinism."""

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import MODELS, count_macs, count_params, create_model, list_models

SMALL = [n for n in list_models() if MODELS.get(n).default_input[1] <= 64]


@pytest.mark.parametrize("name", SMALL)
def test_forward_backward(name):
    c, s = MODELS.get(name).default_input
    torch.manual_seed(0)
    m = create_model(name, num_classes=7)
    x = torch.randn(3, c, s, s)
    out = m(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    m.eval()
    torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize("name", SMALL)
def test_contract(name):
    m = create_model(name, num_classes=10)
    c, s = MODELS.get(name).default_input
    f = m.forward_features(torch.randn(2, c, s, s))
    h = m.forward_head(f, pre_logits=True)
    assert h.shape == (2, m.num_features)
    m.reset_classifier(3)
    assert m(torch.randn(2, c, s, s)).shape == (2, 3)


@pytest.mark.parametrize("name", ["lenet5", "lenet5-1998"])
@pytest.mark.parametrize("c,s", [(1, 28), (1, 32), (3, 32), (3, 28)])
def test_lenet_geometries(name, c, s):
    m = create_model(name, in_channels=c, input_size=s, num_classes=5)
    assert m(torch.randn(2, c, s, s)).shape == (2, 5)


def test_lenet_1998_parameter_count():
    assert count_params(create_model("lenet5-1998", in_channels=1, input_size=32)) == 61_706


def test_lenet_article_structure():
    m = create_model("lenet5")
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [6, 16] and convs[0].padding == (2, 2)
    fcs = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [256, 128, 10]
    assert isinstance(m.features[1], torch.nn.Tanh) and any(
        isinstance(x, torch.nn.ReLU) for x in m.head
    )


def test_macs_counted():
    # conv1 of the article's LeNet-5 alone: 28·28·6·25 = 117,600 MACs
    assert count_macs(create_model("lenet5"), 1, 28) > 117_600


def test_unknown_names_list_choices():
    with pytest.raises(ConfigError, match="unknown model 'lenet6'; choose one of: .*lenet5"):
        create_model("lenet6")
    with pytest.raises(ConfigError, match="unknown activation 'rellu'; choose one of: .*relu"):
        create_model("lenet5", activation="rellu")
    with pytest.raises(ConfigError, match="has no option 'dropoutt'"):
        create_model("lenet5", dropoutt=0.5)


def test_list_models_glob():
    assert list_models("lenet*") == ["lenet5", "lenet5-1998"]
