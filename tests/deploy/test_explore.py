"""The explore page's export and its server endpoints (the browser tests are in
test_explore_web.py)."""

import base64

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from cnnlab.analysis.explore import fc_contributions, operations, trace
from cnnlab.cli import main
from cnnlab.deploy import explore as ex
from cnnlab.deploy.serve import create_app, open_backend
from cnnlab.runs.load import load_model
from cnnlab.runs.snapshots import read_snapshots


def decode(t: dict) -> torch.Tensor:
    raw = base64.b64decode(t["data"])
    a = np.frombuffer(raw, "<f2" if t["dtype"] == "f16" else "<f4").astype(np.float32)
    return torch.from_numpy(a.copy()).view(t["shape"])


def normalised(bundle: dict, u8: torch.Tensor) -> torch.Tensor:
    inp = bundle["input"]
    mean = torch.tensor(inp["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"]).view(1, -1, 1, 1)
    return (u8.float().view(1, inp["channels"], inp["size"], inp["size"]) / 255 - mean) / std


def sample_pixels(rec: dict, c: int = 1, s: int = 28) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(rec["pixels"]), np.uint8).copy()).view(
        1, c, s, s
    )


@pytest.fixture(scope="module")
def bundle(tiny_trained_run):
    return ex.build_bundle(tiny_trained_run, images=4)


def test_bundle_embeds_the_weights_exactly(bundle, tiny_trained_run):
    model, meta = load_model(tiny_trained_run)
    assert bundle["mode"] == "weights" and bundle["format"] == ex.FORMAT
    assert bundle["classes"] == meta["classes"]
    state = model.state_dict()
    ops = operations(model)
    assert [layer["name"] for layer in bundle["layers"]] == [n for n, _, _ in ops]
    outs = trace(model, torch.zeros(1, 1, 28, 28), ops)
    for layer, out in zip(bundle["layers"], outs, strict=True):
        assert layer["shape"] == list(out.shape[1:])
        for k, t in layer.get("params", {}).items():
            assert torch.equal(decode(t), state[f"{layer['name']}.{k}"])
    n_params = sum(len(layer.get("params", {})) for layer in bundle["layers"])
    assert n_params == len(state)  # every tensor of LeNet-5 is in the page


def test_bundle_samples_are_test_images_with_their_labels(bundle, tiny_trained_run):
    from cnnlab.runs.load import load_run_dataset

    model, meta = load_model(tiny_trained_run)
    ds = load_run_dataset(meta, download=False, split="test")
    assert len(bundle["samples"]) == 4
    assert len({r["label"] for r in bundle["samples"]}) == 4  # one per class first
    for rec in bundle["samples"]:
        u8 = sample_pixels(rec)
        assert torch.equal(u8[0], ds.test_x[rec["index"]])  # 28×28 already: no resampling
        assert rec["label"] == int(ds.test_y[rec["index"]])
        with torch.no_grad():
            logits = model(normalised(bundle, u8))[0]
        assert np.allclose(rec["logits"], logits.numpy(), atol=1e-5)
        sal = rec["attribution"]["saliency"]
        assert sal["classes"] == list(range(10)) and sal["size"] == 28
        assert len(base64.b64decode(sal["maps"])) == 10 * 28 * 28


def test_bundle_carries_the_runs_snapshots(bundle, tiny_trained_run):
    snaps = read_snapshots(tiny_trained_run)
    assert [s["epoch"] for s in bundle["snapshots"]] == [e for e, _, _ in snaps] == [1, 2, 3]
    first = bundle["snapshots"][0]["params"]["features.0"]["weight"]
    assert torch.equal(decode(first), snaps[0][2]["features.0.weight"])


def test_activations_mode_stores_every_output(tiny_trained_run, monkeypatch):
    monkeypatch.setattr(ex, "LAYER_LIMIT", 50_000)  # fc1 (102,400 weights) is then left out
    b = ex.build_bundle(tiny_trained_run, images=2, mode="activations", attribution=False)
    model, _ = load_model(tiny_trained_run)
    assert b["mode"] == "activations" and "params" not in b["layers"][7]  # fc1
    assert "params" in b["layers"][0]
    rec = b["samples"][0]
    outs = trace(model, normalised(b, sample_pixels(rec)))
    for enc, out in zip(rec["activations"]["outputs"], outs, strict=True):
        got = np.frombuffer(base64.b64decode(enc), "<f2").astype(np.float32)
        assert np.allclose(got, out[0].flatten().numpy(), rtol=2e-3, atol=2e-3)
    top = rec["activations"]["fc_top"]["7"]
    idx = torch.from_numpy(np.frombuffer(base64.b64decode(top["index"]), "<i4").copy())
    w = model.head[1].weight.detach()
    ref_idx, ref_prod = fc_contributions(w, outs[6][0], 8)
    assert torch.equal(idx.view(-1, 8), ref_idx)
    prod = np.frombuffer(base64.b64decode(top["product"]), "<f4").reshape(-1, 8)
    assert np.allclose(prod, ref_prod.numpy())


def test_activations_mode_caps_the_number_of_images(tiny_trained_run, monkeypatch):
    per = 6 * 28 * 28 * 2 + 6 * 14 * 14 + 16 * 10 * 10 * 2 + 16 * 5 * 5 + 400
    per += 256 * 2 + 128 * 2 + 10
    monkeypatch.setattr(ex, "ACTIVATIONS_BUDGET", 3 * per + 5)
    b = ex.build_bundle(tiny_trained_run, images=8, mode="activations", attribution=False)
    assert len(b["samples"]) == 3 and "3 test images" in b["samples_note"]


def test_exported_page_is_self_contained(tiny_run, capsys):
    assert main(["explore", str(tiny_run), "--images", "2", "--no-attribution"]) == 0
    out = capsys.readouterr().out
    assert "weights mode" in out and "2 test images" in out and "3 epoch snapshots" in out
    html = (tiny_run / "explore.html").read_text()
    for needle in ("http://", "https://", "<script src", "<link"):
        assert needle not in html
    assert "window.EXPLORE_BUNDLE = {" in html and "/*EXPLORE_" not in html


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["explore", "no/such/run"], "not found"),
        (["explore", "RUN", "--images", "-1"], "--images"),
    ],
)
def test_user_mistakes_are_one_line(argv, msg, tiny_run, capsys):
    argv = [str(tiny_run) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and msg in err and err.count("\n") == 1
    assert not (tiny_run / "explore.html").exists()


def test_a_model_the_page_cannot_run_needs_activations_mode(tmp_path):
    import cnnlab

    run = cnnlab.fit(
        overrides=[
            "data.name=synthetic",
            "data.num_train=64",
            "data.num_test=16",
            "train.batch_size=32",
            "train.device=cpu",
            "train.diagnostics=false",
            "model.attention=residual",
        ],
        epochs=1,
        runs_dir=str(tmp_path),
        name="att",
        quiet=True,
    ).run_dir
    with pytest.raises(ex.CnnlabError, match="activations"):
        ex.build_bundle(run, images=0, mode="weights")
    b = ex.build_bundle(run, images=1, attribution=False)
    assert b["mode"] == "activations" and b["opaque"]
    assert len(b["samples"][0]["activations"]["outputs"]) == len(b["layers"])


# ------------------------------------------------------------------------------ the server


@pytest.fixture
def client(tiny_run):
    with TestClient(create_app(open_backend(tiny_run))) as c:
        yield c


def test_served_page_and_bundle(client):
    page = client.get("/explore")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "window.EXPLORE_BUNDLE = null" in page.text
    b = client.get("/v1/explore/bundle").json()
    assert b["served"] is True and b["mode"] == "weights" and len(b["samples"]) > 0
    assert "/v1/explore/trace" not in client.get("/openapi.json").json()["paths"]


def test_served_trace_weights_and_attribution_match_torch(client, tiny_run):
    model, _ = load_model(tiny_run)
    b = client.get("/v1/explore/bundle").json()
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, 28 * 28)
    r = client.post("/v1/explore/trace", json={"pixels": px.tolist()})
    assert r.status_code == 200
    outs = trace(model, normalised(b, torch.from_numpy(px)))
    assert np.allclose(r.json()["logits"], outs[-1][0].numpy(), atol=1e-5)
    assert len(r.json()["outputs"]) == len(outs)
    w = client.get("/v1/explore/weights", params={"layer": 3, "unit": 5}).json()
    assert torch.equal(decode({**w, "dtype": "f32"}), model.features[3].weight[5])
    assert w["bias"] == pytest.approx(float(model.features[3].bias[5].detach()))
    a = client.post(
        "/v1/explore/attribution", json={"pixels": px.tolist(), "class": 3, "method": "gradcam"}
    )
    assert a.status_code == 200 and a.json()["size"] == 28


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("post", "/v1/explore/trace", {"json": {"pixels": [1, 2, 3]}}),
        ("post", "/v1/explore/trace", {"json": {"pixels": [300] * 784}}),
        ("post", "/v1/explore/trace", {"json": {"pixels": ["a"] * 784}}),
        ("post", "/v1/explore/trace", {"content": b"{not json"}),
        ("post", "/v1/explore/trace", {"json": [1, 2]}),
        ("get", "/v1/explore/weights", {"params": {"layer": 1, "unit": 0}}),
        ("get", "/v1/explore/weights", {"params": {"layer": 99, "unit": 0}}),
        ("get", "/v1/explore/weights", {"params": {"layer": 0, "unit": 6}}),
        ("get", "/v1/explore/weights", {"params": {"layer": "x", "unit": 0}}),
        ("post", "/v1/explore/attribution", {"json": {"pixels": [0] * 784, "class": 10}}),
        (
            "post",
            "/v1/explore/attribution",
            {"json": {"pixels": [0] * 784, "class": 1, "method": "lime"}},
        ),
    ],
)
def test_bad_requests_are_4xx(client, method, path, kw):
    r = getattr(client, method)(path, **kw)
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_onnx_backend_has_no_explore_page(tiny_run):
    with TestClient(create_app(open_backend(tiny_run, "onnx"))) as c:
        assert c.get("/explore").status_code == 404


def test_with_an_api_key_only_the_page_shell_is_open(tiny_run):
    from cnnlab.deploy.serve import ServeConfig

    app = create_app(open_backend(tiny_run), ServeConfig(api_key="k" * 12))
    with TestClient(app) as c:
        assert c.get("/explore").status_code == 200  # holds no data: the page asks with the key
        assert c.get("/v1/explore/bundle").status_code == 401
        ok = c.get("/v1/explore/bundle", headers={"authorization": "Bearer " + "k" * 12})
        assert ok.status_code == 200 and ok.json()["classes"]
