"""The 224/227-pixel AlexNets (kept out of the registry-wide tests for speed), torchvision
parity, the MLP, and the named building blocks (batch norm, dropout, attention)."""

import pytest
import torch
import torchvision

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.models import MODELS, count_params, create_model
from cnnlab.models.alexnet import to_torchvision_keys
from cnnlab.models.attention import SelfAttention2d

BIG = [n for n in MODELS.names() if MODELS.get(n).default_input[1] > 64]


def test_big_models_are_the_alexnets():
    assert set(BIG) == {"alexnet", "alexnet-2012", "alexnet-torchvision"}


@pytest.mark.parametrize("name", BIG)
def test_big_model_shape_and_gradients(name):
    c, s = MODELS.get(name).default_input
    torch.manual_seed(0)
    m = create_model(name, num_classes=5)
    x = torch.randn(2, c, s, s)
    out = m(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    h = m.forward_head(m.forward_features(x), pre_logits=True)
    assert h.shape == (2, m.num_features)
    m.eval()
    torch.testing.assert_close(m(x), m(x))


def test_article_alexnet_geometry():
    m = create_model("alexnet")
    f = m.forward_features(torch.zeros(1, 3, 227, 227))
    assert f.shape == (1, 256, 6, 6)  # 227 → 57 → 28 → 13 → 6 ('same' convs)
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.features) == 3
    assert sum(isinstance(x, torch.nn.Dropout) for x in m.head) == 2
    assert create_model("alexnet", input_size=224)(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_alexnet_2012_towers_and_lrn():
    one = create_model("alexnet-2012")
    two = create_model("alexnet-2012", groups=2)
    assert any(isinstance(x, torch.nn.LocalResponseNorm) for x in one.features)
    assert count_params(two) < count_params(one)  # conv2/4/5 see half the channels
    assert [c.groups for c in two.features if isinstance(c, torch.nn.Conv2d)] == [1, 2, 1, 2, 2]
    with pytest.raises(ConfigError, match="groups must be 1 or 2"):
        create_model("alexnet-2012", groups=3)


def test_torchvision_parity(tmp_path):
    tv = torchvision.models.alexnet(weights=None).eval()
    assert count_params(tv) == 61_100_840
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    m = create_model("alexnet-torchvision", num_classes=1000, weights=str(tmp_path / "alexnet.pth"))
    assert count_params(m) == 61_100_840
    assert "weights" not in m.cnnlab_args  # the file is not needed to rebuild a checkpoint
    m.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv(x))
    assert to_torchvision_keys(m.state_dict()).keys() == tv.state_dict().keys()
    # another class count: everything but the last layer is loaded (fine-tuning)
    m10 = create_model("alexnet-torchvision", num_classes=10, weights=str(tmp_path / "alexnet.pth"))
    torch.testing.assert_close(m10.features[0].weight, tv.features[0].weight)


def test_torchvision_bad_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_model("alexnet-torchvision", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        create_model("alexnet-torchvision", weights=str(tmp_path / "junk.pth"))
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an AlexNet state dict"):
        create_model("alexnet-torchvision", weights=str(tmp_path / "other.pth"))


def test_mlp_hidden_widths():
    m = create_model("mlp", hidden="64,32,16", batch_norm="fc", dropout=0.2)
    assert [x.out_features for x in m.modules() if isinstance(x, torch.nn.Linear)] == [
        64,
        32,
        16,
        10,
    ]
    assert m.num_features == 16
    with pytest.raises(ConfigError, match="hidden must be"):
        create_model("mlp", hidden="a,b")


@pytest.mark.parametrize(
    "bn,n2d,n1d", [("none", 0, 0), ("conv", 2, 0), ("fc", 0, 2), ("both", 2, 2)]
)
def test_batch_norm_placement(bn, n2d, n1d):
    m = create_model("lenet5", batch_norm=bn)
    mods = list(m.modules())
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in mods) == n2d
    assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in mods) == n1d


def test_dropout_placement_and_errors():
    m = create_model("lenet5", dropout=0.3, dropout_at="both")
    assert sum(isinstance(x, torch.nn.Dropout2d) for x in m.features) == 2
    assert sum(isinstance(x, torch.nn.Dropout) for x in m.head) == 2
    assert not any(isinstance(x, torch.nn.Dropout) for x in create_model("lenet5").modules())
    with pytest.raises(ConfigError, match="unknown dropout placement 'head'; choose one of"):
        create_model("lenet5", dropout=0.3, dropout_at="head")
    with pytest.raises(ConfigError, match="unknown batch_norm placement"):
        create_model("lenet5", batch_norm="everywhere")
    with pytest.raises(ConfigError, match="dropout must be in"):
        create_model("lenet5", dropout=1.5)


@pytest.mark.parametrize("join", ["concat", "residual"])
def test_attention_block(join):
    torch.manual_seed(0)
    a = SelfAttention2d(8, join, heads=2, dim=4)
    x = torch.randn(3, 8, 5, 6)
    y = a(x)
    assert y.shape == x.shape
    w = a.last_attention
    assert w.shape == (3, 2, 30, 30)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 30))
    # the four steps written out for head 0 of image 0
    q = a.q(x)[0, :4].flatten(1).T  # (HW, d)
    k = a.k(x)[0, :4].flatten(1).T
    torch.testing.assert_close(w[0, 0], (q @ k.T / 2.0).softmax(-1))
    y.sum().backward()
    assert a.q.weight.grad is not None and torch.isfinite(a.q.weight.grad).all()


@pytest.mark.parametrize("name,size", [("lenet5", 28), ("lenet5-1998", 32), ("alexnet", 67)])
def test_attention_inserted(name, size):
    c = MODELS.get(name).default_input[0]
    m = create_model(
        name, input_size=size, attention="residual", attention_heads=2, attention_dim=8
    )
    att = [x for x in m.modules() if isinstance(x, SelfAttention2d)]
    assert len(att) == 1
    out = m(torch.randn(2, c, size, size))
    assert out.shape[0] == 2 and att[0].last_attention.shape[:2] == (2, 2)
    with pytest.raises(ConfigError, match="unknown attention 'sum'; choose one of"):
        create_model(name, input_size=size, attention="sum")
