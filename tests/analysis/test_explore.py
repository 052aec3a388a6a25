"""The forward pass taken apart into operations: run one after another they give model(x)."""

import pytest
import torch

from cnnlab.analysis.attacks import Normalized
from cnnlab.analysis.explain import attribute, explainable_copy, heat
from cnnlab.analysis.explore import attribution_maps, fc_contributions, operations, trace
from cnnlab.models import create_model

CASES = [
    ("lenet5", 1, 28, {}),
    ("lenet5", 1, 28, {"batch_norm": "both", "activation": "elu"}),
    ("lenet5-1998", 3, 32, {}),
    ("alexnet-cifar", 3, 32, {"hidden": 64}),
    ("alexnet-2012", 3, 67, {"groups": 2}),
    ("alexnet", 1, 67, {"activation": "leaky_relu"}),
]


@pytest.mark.parametrize(("name", "c", "s", "kw"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_operations_in_order_give_the_model_output(name, c, s, kw):
    torch.manual_seed(0)
    model = create_model(name, in_channels=c, num_classes=7, input_size=s, **kw).eval()
    with torch.no_grad():  # running statistics that are not 0/1, so BN does something
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ops = operations(model)
    assert all(spec["type"] not in ("opaque", "skip") for _, _, spec in ops)
    x = torch.randn(2, c, s, s)
    outs = trace(model, x, ops)
    assert len(outs) == len(ops)
    with torch.no_grad():
        assert torch.allclose(outs[-1], model(x), atol=1e-5)
    assert outs[-1].shape == (2, 7)
    types = [spec["type"] for _, _, spec in ops]
    assert types.count("linear") >= 2 and "conv2d" in types and "flatten" in types


def test_specs_carry_what_the_page_needs():
    model = create_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    ops = operations(model)
    names = [n for n, _, _ in ops]
    assert names[0] == "features.0" and names[-1] == "classifier"
    conv = ops[0][2]
    assert conv == {
        "type": "conv2d",
        "in": 1,
        "out": 6,
        "kernel": [5, 5],
        "stride": [1, 1],
        "padding": [2, 2],
        "dilation": [1, 1],
        "groups": 1,
        "bias": True,
    }
    assert ops[1][2] == {"type": "act", "fn": "tanh"}
    assert ops[2][2] == {"type": "maxpool2d", "kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}


def test_an_attention_block_is_opaque():
    model = create_model(
        "lenet5", in_channels=1, num_classes=10, input_size=28, attention="residual"
    )
    kinds = [spec["type"] for _, _, spec in operations(model)]
    assert "opaque" in kinds
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(trace(model.eval(), x)[-1], model(x), atol=1e-5)


def test_fc_contributions_are_the_largest_products():
    torch.manual_seed(1)
    w, x = torch.randn(5, 40), torch.randn(40)
    idx, prod = fc_contributions(w, x, 8)
    assert idx.shape == prod.shape == (5, 8)
    full = w * x
    for j in range(5):
        assert torch.allclose(prod[j], full[j, idx[j]])
        assert prod[j].abs().min() >= full[j].abs().sort(descending=True).values[7] - 1e-7


def test_attribution_maps_are_explain_maps_per_class():
    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1, num_classes=4, input_size=28).eval()
    x01 = torch.rand(1, 1, 28, 28)
    maps = attribution_maps(model, [0.5], [0.25], x01, [0, 3], "saliency")
    assert maps.shape == (2, 28, 28) and 0 <= maps.min() and maps.max() <= 1
    m01 = explainable_copy(Normalized(model, [0.5], [0.25]))
    ref = heat(attribute(m01, x01, torch.tensor([3]), "saliency")[0], "saliency")
    assert torch.allclose(maps[1], torch.from_numpy(ref), atol=1e-6)
    cam = attribution_maps(model, [0.5], [0.25], x01, [1], "gradcam", size=7)
    assert cam.shape == (1, 7, 7)
