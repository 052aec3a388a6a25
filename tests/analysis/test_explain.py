"""Attribution methods: trust checks (completeness, model randomisation) and the command."""

import json
import shutil

import pytest
import torch
from torch import nn

from cnnlab.analysis.attacks import Normalized
from cnnlab.analysis.explain import (
    METHODS,
    attribute,
    explainable_copy,
    feature_maps,
    last_conv,
    plot_attention,
    select_indices,
)
from cnnlab.analysis.explain_page import explain_html
from cnnlab.analysis.explain_plots import attention_maps
from cnnlab.cli import main
from cnnlab.data.datasets import load_dataset
from cnnlab.models import create_model, list_models
from cnnlab.models.base import MODELS
from cnnlab.runs.load import load_model


def _setup(run, n=8):
    model, meta = load_model(run)
    ds = load_dataset("synthetic", num_train=512, num_test=128)
    x01 = ds.test_x[:n].float() / 255
    m01 = Normalized(explainable_copy(model), meta["input"]["mean"], meta["input"]["std"])
    return model, m01, x01, ds.test_y[:n], meta


def _rank(v):
    return v.argsort().argsort().double()


def _spearman(a, b):
    ra, rb = _rank(a.flatten()), _rank(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_integrated_gradients_completeness(tiny_trained_run):
    _, m01, x01, _, _ = _setup(tiny_trained_run)
    with torch.no_grad():
        pred = m01(x01).argmax(1)
        gap = (
            m01(x01).gather(1, pred[:, None])[:, 0]
            - m01(torch.zeros_like(x01)).gather(1, pred[:, None])[:, 0]
        )
    attr, delta = attribute(m01, x01, pred, "integrated_gradients", ig_steps=64, return_delta=True)
    total = attr.sum((1, 2, 3))
    # attributions add up to F(x) − F(black) (the axiom), checked independently of Captum's delta
    # (ReLU kinks make the Riemann/Gauss-Legendre sum inexact: within 1% of the output scale)
    scale = gap.abs().max()
    assert (total - gap).abs().max() < 0.01 * scale, (total, gap)
    assert delta.abs().max() < 0.01 * scale
    assert gap.abs().min() > 0.1  # the check is not vacuous


def test_internal_batching_gives_the_same_attributions(tiny_trained_run):
    _, m01, x01, _, _ = _setup(tiny_trained_run, n=3)
    t = torch.zeros(3, dtype=torch.long)
    a = attribute(m01, x01, t, "integrated_gradients", ig_steps=20, internal_batch_size=7)
    b = attribute(m01, x01, t, "integrated_gradients", ig_steps=20, internal_batch_size=1000)
    assert torch.allclose(a, b, atol=1e-5)
    a = attribute(m01, x01, t, "occlusion", perturbations_per_eval=3)
    b = attribute(m01, x01, t, "occlusion", perturbations_per_eval=500)
    assert torch.allclose(a, b, atol=1e-5)


def test_model_randomisation_changes_attributions(tiny_trained_run):
    """Adebayo et al. 2018: a method whose maps survive re-initialising the weights explains
    the input, not the model. The trained model's maps must differ clearly."""
    model, m01, x01, _, meta = _setup(tiny_trained_run)
    args = dict(meta["model"])
    torch.manual_seed(1234)
    rnd = create_model(args.pop("name"), **args).eval()
    r01 = Normalized(explainable_copy(rnd), meta["input"]["mean"], meta["input"]["std"])
    with torch.no_grad():
        pred = m01(x01).argmax(1)
    for method in ("saliency", "integrated_gradients", "gradcam"):
        a = attribute(m01, x01, pred, method).abs().sum(1)
        b = attribute(r01, x01, pred, method).abs().sum(1)
        same = attribute(m01, x01, pred, method).abs().sum(1)
        corr = sum(_spearman(a[i], b[i]) for i in range(len(a))) / len(a)
        assert corr < 0.6, (method, corr)
        assert _spearman(a[0], same[0]) > 0.99  # deterministic for the same weights


def test_all_methods_on_inplace_relu_model_leave_it_untouched(tiny_trained_run):
    model, m01, x01, _, _ = _setup(tiny_trained_run, n=2)
    inplace = [m for m in model.modules() if getattr(m, "inplace", False)]
    assert inplace  # the run's LeNet-5 uses nn.ReLU(inplace=True)
    t = torch.tensor([0, 1])
    for method in METHODS:
        a = attribute(m01, x01, t, method)
        assert a.shape == x01.shape and torch.isfinite(a).all(), method
    assert all(m.inplace for m in inplace)
    assert not any(getattr(m, "inplace", False) for m in m01.modules())
    assert isinstance(last_conv(m01), nn.Conv2d)
    maps = feature_maps(m01, x01[:1])
    assert [tuple(m.shape) for _, m in maps] == [(6, 28, 28), (16, 10, 10)]


class _ToyAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.q = nn.Conv2d(c, c, 1)
        self.last_attention = None

    def forward(self, x):
        b, c, h, w = x.shape
        f = self.q(x).reshape(b, 1, c, h * w).transpose(2, 3)  # (B, 1, HW, C)
        a = (f @ f.transpose(2, 3)).softmax(-1)  # (B, 1, HW, HW)
        self.last_attention = a.detach()
        return x + (a @ f).transpose(2, 3).reshape(b, c, h, w)


def test_attention_maps_when_the_model_has_an_attention_block():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        _ToyAttention(4),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 3),
    )
    m = explainable_copy(net)
    x = torch.rand(1, 1, 14, 14)
    png = plot_attention(m, x)
    assert png is not None and png[:4] == b"\x89PNG"
    assert last_conv(m) is m[0]  # convs inside the attention block are not "the last conv"
    (name, att), *more = attention_maps(m, x)
    assert name == "3" and more == [] and att.shape == (1, 7, 7)  # (heads, side, side)
    assert torch.allclose(att.sum(), torch.tensor(1.0))  # each query's weights sum to 1
    plain = explainable_copy(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    assert plot_attention(plain, x) is None and attention_maps(plain, x) == []


def test_explain_command_end_to_end(tiny_trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    assert main(["explain", str(run), "-n", "4", "--select", "first", "--ig-steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "Grad-CAM" in out and "explain.html" in out
    for f in ("attributions.png", "filters.png", "feature_maps.png", "explain.json"):
        assert (run / "explain" / f).read_bytes()[:1]
    assert (run / "explain" / "attributions.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((run / "explain" / "explain.json").read_text())
    assert res["indices"] == [0, 1, 2, 3] and res["methods"] == list(METHODS)
    # the synthetic images are noise, with no plain background: no share on the object
    assert res["object_area"] is None and res["on_object_fraction"] == {}
    assert "attribution on object: not measured" in out
    page = (run / "explain.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<img" in page
    assert main(["explain", str(run), "--indices", "5,7", "--methods", "saliency", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["indices"] == [5, 7] and res["methods"] == ["saliency"]


def test_most_confidently_wrong_selection():
    x = torch.zeros(5, 1, 4, 4)
    y = torch.tensor([0, 0, 1, 1, 0])
    logits = torch.tensor([[5.0, 0], [0, 1], [9, 0], [0, 3], [0, 7]])  # wrong: 1, 2, 4
    model = lambda xb: logits[: len(xb)]  # noqa: E731
    assert select_indices(model, x, y, 2, "wrong", None, 0) == [2, 4]
    assert select_indices(model, x, y, 9, "wrong", None, 0) == [2, 4, 1]
    assert select_indices(model, x, y, 3, "first", None, 0) == [0, 1, 2]
    r = select_indices(model, x, y, 3, "random", None, 7)
    assert r == select_indices(model, x, y, 3, "random", None, 7) and len(set(r)) == 3


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--methods", "lime"], "unknown attribution method 'lime'"),
        (["--select", "best"], "unknown selection 'best'"),
        (["--indices", "99999"], "out of range"),
        (["--indices", "a,b"], "--indices needs"),
        (["-n", "0"], "-n must be"),
    ],
)
def test_explain_bad_input_is_one_line_exit_2(tiny_trained_run, capsys, argv, needle):
    assert main(["explain", str(tiny_trained_run), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_explain_run_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


SMALL_MODELS = [n for n in list_models() if MODELS.get(n).default_input[1] <= 64]


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_every_registered_model_can_be_explained(name):
    c, s = MODELS.get(name).default_input
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    m01 = Normalized(explainable_copy(model), [0.5] * c, [0.25] * c)
    x = torch.rand(2, c, s, s)
    t = torch.tensor([1, 3])
    for method in METHODS:
        if method == "gradcam" and last_conv(m01) is None:
            continue
        a = attribute(m01, x, t, method, ig_steps=4)
        assert a.shape == x.shape and torch.isfinite(a).all(), (name, method)
    png = plot_attention(m01, x[:1])
    has_attention = any(hasattr(m, "last_attention") for m in model.modules())
    assert (png is not None) == has_attention


def test_attribution_on_object_only_on_a_plain_background():
    """Digits and garments lie on a plain background; a photo does not, and there the
    "attribution on object" share would measure nothing."""
    from cnnlab.analysis.explain import plain_background

    digits = load_dataset("mnist-sample").test_x[:32].float() / 255
    assert plain_background(digits, dark_background=True)
    assert plain_background(1 - digits, dark_background=False)  # dark ink on white
    photos = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert not plain_background(photos, dark_background=True)
    assert not plain_background(photos, dark_background=False)
    ramp = torch.linspace(0, 1, 64).expand(4, 3, 64, 64)  # a smooth scene, no plain border
    assert not plain_background(ramp, dark_background=True)


def test_explain_page_says_whether_the_share_on_the_object_was_measured():
    res = dict(run="/r/x", dataset="mnist", select="first", indices=[3], true=["1"], pred=["7"])
    res.update(prob=[0.9], methods=["saliency"], seconds=1.0, device="cpu")
    measured = {**res, "on_object_fraction": {"saliency": 0.75}, "object_area": 0.2}
    page = explain_html(measured, {"Attribution maps": b"png"})
    assert "<li>saliency: 0.75</li>" in page and "object covers 0.20" in page
    assert page.count("data:image/png;base64,") == 1 and "plain background" not in page
    assert "<tr><td>3</td><td>1</td><td>7</td><td>0.900</td></tr>" in page
    page = explain_html({**res, "on_object_fraction": {}, "object_area": None}, {})
    assert "no plain background" in page and "<li>" not in page and "<img" not in page


def test_the_old_import_path_keeps_the_public_names():
    from cnnlab.analysis import attribution, explain, explain_plots

    for name in explain.__all__:
        assert hasattr(explain, name), name
    assert explain.attribute is attribution.attribute
    assert explain.feature_maps is explain_plots.feature_maps
