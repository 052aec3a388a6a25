"""`cnnlab predict --json` and `POST /v1/predict` are one prediction path: the same images
give the same answer — the same keys, classes and probabilities — with and without
test-time augmentation, on the torch and the ONNX backend; the server's TTA views are the
ones the run was trained with, recorded in its exports."""

import json
import shutil

import pytest
from fastapi.testclient import TestClient

import cnnlab
from cnnlab.analysis.ood import save_ood
from cnnlab.cli import main
from cnnlab.deploy.backends import open_backend
from cnnlab.deploy.formats import read_export_metadata
from cnnlab.deploy.serve import ServeConfig, create_app
from cnnlab.inference.views import tta_views

from .conftest import png


@pytest.fixture(scope="module")
def run(augmented_run, tmp_path_factory):
    """The run trained with crop and flip (10 TTA views), with an OOD threshold."""
    run = tmp_path_factory.mktemp("run") / "augmented"
    shutil.copytree(augmented_run, run)
    save_ood(run, "energy", 0.0)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    files = []
    for i, kw in enumerate([dict(seed=1), dict(seed=2), dict(side=40, seed=3), dict(value=250)]):
        f = d / f"img{i}.png"
        f.write_bytes(png(**kw))
        files.append(f)
    return files


def cli_answers(run, images, capsys, *flags) -> list[dict]:
    argv = ["predict", str(run), *map(str, images), "--json", "--device", "cpu", "--top", "10"]
    assert main([*argv, *flags]) == 0
    return json.loads(capsys.readouterr().out)


def keys(answer: dict) -> dict:
    """An answer's keys, nested ones included."""
    out = {k: None for k in answer}
    out["top"] = [sorted(t) for t in answer["top"]]
    if "ood" in answer:
        out["ood"] = sorted(answer["ood"])
    return out


def assert_same(cli: list[dict], served: list[dict]) -> None:
    assert len(cli) == len(served)
    for a, b in zip(cli, served, strict=True):
        assert keys(a) == keys(b)
        assert a["image"].endswith(b["image"])  # a path given to the CLI, its name in a form
        assert (a["class"], a["index"], a["inverted"]) == (b["class"], b["index"], b["inverted"])
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
        for x, y in zip(a["top"], b["top"], strict=True):
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-5)
        assert a["ood"]["flag"] == b["ood"]["flag"]
        assert a["ood"]["score"] == pytest.approx(b["ood"]["score"], abs=1e-4)
        assert a.get("tta") == b.get("tta")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cli_and_server_give_the_same_answers(run, images, capsys, backend):
    files = [("file", (f.name, f.read_bytes())) for f in images]
    with TestClient(create_app(open_backend(run, backend), ServeConfig())) as c:
        plain = c.post("/v1/predict?top_k=10", files=files).json()["predictions"]
        tta = c.post("/v1/predict?top_k=10&tta=true", files=files).json()["predictions"]
        views = c.get("/v1/model").json()["tta"]
    assert_same(cli_answers(run, images, capsys), plain)
    assert_same(cli_answers(run, images, capsys, "--tta"), tta)
    assert "tta" not in plain[0] and tta[0]["tta"] == views and len(views) == 10
    assert [t["probability"] for t in tta[0]["top"]] != [t["probability"] for t in plain[0]["top"]]


def test_tta_as_a_json_option_and_a_form_field(run, images):
    import base64

    data = images[0].read_bytes()
    with TestClient(create_app(open_backend(run), ServeConfig())) as c:
        by_query = c.post("/v1/predict?tta=true", files={"f": ("a.png", data)}).json()
        by_form = c.post("/v1/predict", files={"f": ("a.png", data)}, data={"tta": "true"}).json()
        body = {"images": [base64.b64encode(data).decode()], "tta": True}
        by_json = c.post("/v1/predict", json=body).json()
        for bad in (
            c.post("/v1/predict?tta=1", files={"f": ("a.png", data)}),
            c.post("/v1/predict", json={**body, "tta": "true"}),
        ):
            assert bad.status_code == 400 and "tta must be" in bad.json()["error"]
    p = by_query["predictions"][0]
    assert by_form["predictions"][0]["top"] == p["top"]
    assert by_json["predictions"][0]["top"] == p["top"]
    assert by_json["predictions"][0]["image"] == "images[0]" and len(p["tta"]) == 10


def test_tta_for_a_run_trained_without_flip_or_crop_is_a_400(backend):
    with TestClient(create_app(backend, ServeConfig())) as c:
        r = c.post("/v1/predict?tta=true", files={"f": ("a.png", png())})
        assert c.get("/v1/model").json()["tta"] is None
    assert r.status_code == 400
    assert r.json()["error"].startswith("tta: this run was trained without flip or crop")


def test_an_onnx_export_records_the_views_and_serves_tta(run, images, tmp_path):
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out), "--parity-images", "16"]) == 0
    md = read_export_metadata(out)
    want = [v.name for v in tta_views(cnnlab.load_model(run)[1])]
    assert [v["name"] for v in md["tta"]["views"]] == want
    files = [("file", (f.name, f.read_bytes())) for f in images]
    with TestClient(create_app(open_backend(out), ServeConfig())) as c:
        from_file = c.post("/v1/predict?top_k=10&tta=true", files=files).json()["predictions"]
    with TestClient(create_app(open_backend(run, "onnx"), ServeConfig())) as c:
        from_run = c.post("/v1/predict?top_k=10&tta=true", files=files).json()["predictions"]
    assert_same(from_run, from_file)
