"""The explore page in a real browser (Debian's chromium, headless, driven by Playwright):
the numbers it shows for a unit are PyTorch's numbers for that unit."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.explore import attribution_maps, trace
from cnnlab.deploy import explore as ex
from cnnlab.models.base import Classifier
from cnnlab.models.layers import LeCunTanh
from cnnlab.runs.load import load_model
from cnnlab.runs.snapshots import read_snapshots

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOL = 1e-4  # float32 in torch, float64 sums in JavaScript


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # a fresh, empty profile
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector('body[data-ready="1"]', timeout=30000)
    return page, errors


def settle(page):
    """Two animation frames: a stroke's update has run and painted."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def draw_stroke(page):
    n0 = page.evaluate("explore.updates")
    box = page.locator("#pad").bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 120, y0 + 50)
    page.mouse.down()
    for i in range(20):  # a slanted stroke, drawn with mouse events
        page.mouse.move(x0 + 120 + 3 * i, y0 + 50 + 9 * i)
    page.mouse.up()
    page.wait_for_function(f"explore.updates > {n0} && explore.sample === null")
    settle(page)


def click_unit(page, layer: int, unit: int):
    page.locator(f'#layers canvas[data-layer="{layer}"]').scroll_into_view_if_needed()
    x, y = page.evaluate(f"explore.unitCenter({layer}, {unit})")
    page.mouse.click(x, y)
    page.wait_for_selector(f'#unit[data-layer="{layer}"][data-unit="{unit}"]')


def values(page, selector: str) -> np.ndarray:
    return np.array(page.eval_on_selector_all(selector, "els => els.map(e => +e.dataset.v)"))


def value(page, id_: str) -> float:
    return page.evaluate(f"+document.getElementById('{id_}').dataset.v")


def page_input(page, c=1, s=28) -> torch.Tensor:
    return torch.tensor(page.evaluate("explore.input"), dtype=torch.float32).view(1, c, s, s)


def assert_layers_match(page, outs):
    acts = page.evaluate("explore.acts.map(a => Array.from(a))")
    assert len(acts) == len(outs)
    for i, (a, o) in enumerate(zip(acts, outs, strict=True)):
        ref = o[0].flatten().numpy()
        err = np.abs(np.array(a) - ref).max()
        assert err <= TOL * max(1.0, np.abs(ref).max()), f"operation {i}: off by {err}"


@pytest.fixture(scope="module")
def exported(tiny_trained_run, tmp_path_factory):
    """The tiny run's page (written outside the shared run directory)."""
    return ex.export_page(tiny_trained_run, tmp_path_factory.mktemp("page") / "e.html", images=3)


def test_draw_then_click_a_conv_unit_and_an_fc_unit(browser, exported, tiny_run, tmp_path):
    path, _ = exported
    model, _ = load_model(tiny_run)
    page, errors = open_page(browser, path.as_uri())
    draw_stroke(page)
    x = page_input(page)
    assert x.abs().sum() > 0
    outs = trace(model, x)
    assert_layers_match(page, outs)  # every layer, computed in the page

    # conv1: the unit of channel 2 with the largest output
    ch = 2
    u = ch * 28 * 28 + int(outs[0][0, ch].abs().flatten().argmax())
    y, xx = divmod(u - ch * 28 * 28, 28)
    click_unit(page, 0, u)
    w, b = model.features[0].weight.detach()[ch, 0], float(model.features[0].bias[ch].detach())
    patch = F.pad(x, (2, 2, 2, 2))[0, 0, y : y + 5, xx : xx + 5]
    assert np.array_equal(values(page, "#unit td.k"), w.flatten().numpy())
    assert np.allclose(values(page, "#unit td.x"), patch.flatten().numpy(), atol=1e-6)
    assert np.allclose(values(page, "#unit td.prod"), (w * patch).flatten().numpy(), atol=1e-6)
    assert value(page, "u-bias") == pytest.approx(b, abs=1e-7)
    assert value(page, "u-sum") == pytest.approx(float((w * patch).sum()), abs=TOL)
    assert value(page, "u-z") == pytest.approx(float(outs[0][0, ch, y, xx]), abs=TOL)
    assert value(page, "u-act") == pytest.approx(float(outs[1][0, ch, y, xx]), abs=TOL)
    page.screenshot(path=str(tmp_path / "conv1-unit.png"), full_page=True)

    # conv2: six input channels, each with its partial sum
    o, y, xx = 7, 4, 5
    u = (o * 10 + y) * 10 + xx
    click_unit(page, 3, u)
    parts = values(page, "#unit .chan .part")
    assert len(parts) == 6
    w2 = model.features[3].weight.detach()[o]  # (6, 5, 5)
    pin = outs[2][0, :, y : y + 5, xx : xx + 5]  # conv2 has no padding
    ref = (w2 * pin).sum((1, 2))
    cis = page.eval_on_selector_all("#unit .chan", "els => els.map(e => +e.dataset.ci)")
    assert np.allclose(parts, ref[cis].numpy(), atol=TOL)
    assert value(page, "u-z") == pytest.approx(float(outs[3][0, o, y, xx]), abs=TOL)

    # fc1: the largest contributions w_ji · x_i and the whole sum
    j = int(outs[7][0].argmax())
    click_unit(page, 7, j)
    rows = page.eval_on_selector_all(
        "#unit tr.contrib",
        "els => els.map(e => [+e.dataset.i, +e.dataset.w, +e.dataset.x, +e.dataset.prod])",
    )
    assert len(rows) == 12
    W, h = model.head[1].weight.detach()[j], outs[6][0]
    for i, wi, xi, p in rows:
        assert wi == float(W[int(i)]) and xi == pytest.approx(float(h[int(i)]), abs=TOL)
        assert p == pytest.approx(wi * xi, rel=1e-9)
    top = (W * h).abs().topk(12).indices.tolist()
    assert [int(r[0]) for r in rows] == top
    assert value(page, "u-z") == pytest.approx(float(outs[7][0, j]), abs=TOL)

    # softmax: the page's probabilities are torch's
    probs = page.eval_on_selector_all(
        "tr.prob-row", "els => els.map(e => [+e.dataset.class, +e.dataset.prob])"
    )
    ref = outs[-1][0].softmax(0)
    assert len(probs) == 10
    for k, p in probs:
        assert p == pytest.approx(float(ref[int(k)]), abs=1e-6)
    page.screenshot(path=str(tmp_path / "fc-unit.png"), full_page=True)
    assert not errors, errors


def test_upload_a_photo(browser, exported, tiny_run, tmp_path):
    from PIL import Image

    a = np.zeros((90, 60), np.uint8)
    a[10:80, 25:35] = 255  # a bright bar on black, taller than wide
    Image.fromarray(a).save(tmp_path / "bar.png")
    path, _ = exported
    page, errors = open_page(browser, path.as_uri())
    n0 = page.evaluate("explore.updates")
    page.set_input_files("#file", str(tmp_path / "bar.png"))
    page.wait_for_function(f"explore.updates > {n0} && explore.sample === null")
    settle(page)
    px = np.array(page.evaluate("explore.pixels")).reshape(28, 28)
    cols = px.mean(0)
    assert px.max() > 200 and cols[12:16].mean() > 5 * max(cols[:6].mean(), 1)  # centred bar
    model, _ = load_model(tiny_run)
    assert_layers_match(page, trace(model, page_input(page)))
    assert not errors, errors


def test_attribution_of_a_drawing_is_captums(browser, exported, tiny_run):
    """Saliency and Grad-CAM of a drawn image, computed in the page by back-propagation,
    equal cnnlab explain's (Captum) maps."""
    path, bundle = exported
    model, _ = load_model(tiny_run)
    page, errors = open_page(browser, path.as_uri())
    draw_stroke(page)
    x01 = torch.tensor(page.evaluate("explore.pixels"), dtype=torch.float32).view(1, 1, 28, 28)
    x01 = x01 / 255
    mean, std = bundle["input"]["mean"], bundle["input"]["std"]
    for method, k in (("saliency", 3), ("gradcam", 6), ("saliency", 0)):
        page.select_option("#attr-method", method)
        page.select_option("#attr-class", str(k))
        page.wait_for_function(
            f"document.getElementById('attr-note').textContent.includes('“class{k}”')"
        )
        got = np.array(page.evaluate("explore.attrMap"))
        ref = attribution_maps(model, mean, std, x01, [k], method)[0].flatten().numpy()
        assert np.abs(got - ref).max() < 1e-4, method
        assert "computed in this page" in page.inner_text("#attr-note")
    assert not errors, errors


def test_pick_a_test_image_see_its_maps_and_slide_the_epochs(browser, exported, tiny_run, tmp_path):
    path, bundle = exported
    model, _ = load_model(tiny_run)
    page, errors = open_page(browser, path.as_uri())
    page.click('#samples figure[data-sample="1"]')
    page.wait_for_function("explore.sample === 1")
    settle(page)
    rec = bundle["samples"][1]
    assert bundle["classes"][rec["label"]] in page.inner_text("#input-note")
    x = page_input(page)
    outs = trace(model, x)
    assert_layers_match(page, outs)
    assert np.allclose(page.evaluate("explore.logits"), rec["logits"], atol=TOL)
    lit = page.evaluate(
        "(() => { const d = document.getElementById('attr').getContext('2d')"
        ".getImageData(0, 0, 224, 224).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] > 100 && d[i + 2] < 60) n++; return n; })()"
    )
    assert lit > 50  # the saliency overlay is painted in red
    page.select_option("#attr-method", "gradcam")
    assert "Grad-CAM" in page.inner_text("#attr-note")

    snaps = read_snapshots(tiny_run)
    page.evaluate(
        "() => { const e = document.getElementById('epoch'); e.value = '0';"
        " e.dispatchEvent(new Event('input')); }"
    )
    assert "after epoch 1" in page.inner_text("#epoch-label")
    first = snaps[0][2]
    got = page.evaluate("explore.epochActs.map(a => Array.from(a))")
    ref1 = F.conv2d(x, first["features.0.weight"], first["features.0.bias"], padding=2)
    assert np.allclose(got[0], ref1.flatten().numpy(), atol=TOL)
    ref4 = F.conv2d(
        F.max_pool2d(F.relu(ref1), 2), first["features.3.weight"], first["features.3.bias"]
    )
    assert np.allclose(got[3], ref4.flatten().numpy(), atol=TOL)
    assert not np.allclose(got[0], outs[0].flatten().numpy(), atol=1e-3)  # training moved them
    page.screenshot(path=str(tmp_path / "sample-epoch1.png"), full_page=True)
    assert not errors, errors


class Zoo(Classifier):
    """Every operation the page computes: padding, strides, dilation, groups, batch norm,
    LRN, both pools with padding, adaptive pooling and each activation."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.ZeroPad2d((1, 2, 0, 1)),
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.LeakyReLU(0.1),
            nn.LocalResponseNorm(3, alpha=0.01, beta=0.75, k=2.0),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
            nn.ELU(),
            nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
            nn.Conv2d(8, 6, 1),
            LeCunTanh(),
            nn.AvgPool2d(2, 1, padding=1),
            nn.MaxPool2d(3, 2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(3),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(54, 12),
            nn.BatchNorm1d(12),
            nn.Sigmoid(),
            nn.Dropout(0.5),
            nn.Linear(12, 9),
            nn.Tanh(),
        )
        self.classifier = nn.Linear(9, 5)


def test_every_operation_matches_torch(browser, tmp_path):
    torch.manual_seed(0)
    model = Zoo().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    meta = {
        "model": {"name": "zoo"},
        "classes": list("abcde"),
        "dataset": "none",
        "input": {"channels": 3, "size": 20, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
    }
    bundle = ex.model_bundle(model, meta, "weights")
    assert bundle["mode"] == "weights"
    path = tmp_path / "zoo.html"
    path.write_text(ex.page_html(bundle))
    page, errors = open_page(browser, path.as_uri())
    px = np.random.default_rng(0).integers(0, 256, 3 * 20 * 20)
    page.evaluate("a => explore.setPixels(a)", px.tolist())
    x = page_input(page, 3, 20)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    ref_x = (
        torch.from_numpy(px).float().view(1, 3, 20, 20) / 255 - mean.view(1, 3, 1, 1)
    ) / std.view(1, 3, 1, 1)
    assert torch.allclose(x, ref_x, atol=1e-6)
    assert_layers_match(page, trace(model, x))
    assert not errors, errors


def test_served_page_of_a_large_model_asks_the_server(
    browser, tiny_run, served, monkeypatch, tmp_path
):
    """A model over the size limit is served in 'server' mode: drawn images go through
    /v1/explore/trace, a unit's weights come from /v1/explore/weights."""
    from cnnlab.deploy.serve import create_app, open_backend

    monkeypatch.setattr(ex, "WEIGHTS_LIMIT", 0)
    monkeypatch.setattr(ex, "LAYER_LIMIT", 100)  # conv1's 156 weights and bias: from the server
    model, _ = load_model(tiny_run)
    with served(create_app(open_backend(tiny_run))) as (host, port):
        page, errors = open_page(browser, f"http://{host}:{port}/explore")
        assert page.evaluate("explore.bundle.mode") == "server"
        assert "params" not in page.evaluate("explore.bundle.layers[0]")
        draw_stroke(page)
        page.wait_for_function("explore.acts.length > 0")
        x = page_input(page)
        outs = trace(model, x)
        u = 3 * 28 * 28 + int(outs[0][0, 3].abs().flatten().argmax())
        click_unit(page, 0, u)
        page.wait_for_selector("#u-z")
        c, r = divmod(u, 28 * 28)
        assert value(page, "u-z") == pytest.approx(float(outs[0][0, c].flatten()[r]), abs=TOL)
        k = page.evaluate("+document.getElementById('attr-class').value")
        page.wait_for_function(
            "document.getElementById('attr-note').textContent.includes('saliency')"
        )
        assert int(outs[-1][0].argmax()) == k
        page.screenshot(path=str(tmp_path / "served.png"), full_page=True)
        assert not errors, errors


@pytest.fixture(scope="module")
def alexnet_run(tmp_path_factory):
    """An AlexNet for 32×32 colour images (7.5 M parameters), one epoch on a tiny CIFAR."""
    import cnnlab
    from cnnlab.data.formats import write_cifar_batch

    root = tmp_path_factory.mktemp("alex")
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 8) for i in range(1, 6)), ("test_batch", 12)]:
        write_cifar_batch(
            folder / name, rng.integers(0, 256, (n, 3, 32, 32)), rng.integers(0, 10, n)
        )
    return cnnlab.fit(
        overrides=[
            "model.name=alexnet-cifar",
            "data.name=cifar10",
            f"data.data_dir={root}",
            "data.val_fraction=0",
            "train.batch_size=8",
            "train.device=cpu",
            "train.diagnostics=false",
        ],
        epochs=1,
        runs_dir=str(root / "runs"),
        name="alex",
        quiet=True,
    ).run_dir


@pytest.mark.slow
def test_alexnet_static_page_uses_precomputed_activations(browser, alexnet_run, tmp_path):
    model, _ = load_model(alexnet_run)
    path, bundle = ex.export_page(alexnet_run, tmp_path / "alex.html", images=2)
    assert bundle["mode"] == "activations" and bundle["input"]["channels"] == 3
    page, errors = open_page(browser, path.as_uri())
    assert "pick a test image" in page.inner_text("#draw-note")  # no drawing without weights
    page.click('#samples figure[data-sample="1"]')
    page.wait_for_function("explore.sample === 1")
    settle(page)
    x = page_input(page, 3, 32)
    outs = trace(model, x)
    acts = page.evaluate("explore.acts.map(a => Array.from(a))")
    for a, o in zip(acts, outs, strict=True):  # stored as float16
        ref = o[0].flatten().numpy()
        assert np.abs(np.array(a) - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())
    convs = [i for i, layer in enumerate(bundle["layers"]) if layer["spec"]["type"] == "conv2d"]
    i = convs[1]  # conv2: 64 input channels; the 8 largest partial sums are shown
    shape = bundle["layers"][i]["shape"]
    u = 5 * shape[1] * shape[2] + 3 * shape[2] + 4
    click_unit(page, i, u)
    assert len(values(page, "#unit .chan .part")) == 8
    assert "56 more input channels" in page.inner_text("#unit")
    z = float(outs[i][0].flatten()[u])
    assert value(page, "u-z") == pytest.approx(z, abs=2e-2 * max(1.0, abs(z)))
    fc = [i for i, layer in enumerate(bundle["layers"]) if layer["spec"]["type"] == "linear"][0]
    assert "params" not in bundle["layers"][fc]  # 4 M weights: not in the page
    click_unit(page, fc, 17)
    rows = page.eval_on_selector_all(
        "#unit tr.contrib", "els => els.map(e => [+e.dataset.i, +e.dataset.prod])"
    )
    W = model.head[np.argmax([isinstance(m, nn.Linear) for m in model.head])].weight.detach()
    prods = W[17] * outs[fc - 1][0].flatten()
    assert [int(r[0]) for r in rows] == prods.abs().topk(8).indices.tolist()
    assert np.allclose([r[1] for r in rows], prods[[int(r[0]) for r in rows]].numpy(), atol=1e-5)
    page.screenshot(path=str(tmp_path / "alexnet.png"), full_page=True)
    assert not errors, errors
