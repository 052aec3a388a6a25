"""cnnlab predict --tta: probabilities averaged over the run's training views."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.inference import predict
from cnnlab.runs.load import open_run


@pytest.fixture
def run(augmented_run):
    return augmented_run


def test_predict_tta_probabilities(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (1, 28, 28), dtype=np.uint8) for _ in range(3)]
    plain = predict(run, imgs, top=10, device="cpu", invert="never")
    tta = predict(run, imgs, top=10, device="cpu", invert="never", tta=True)
    for p, t in zip(plain, tta, strict=True):
        assert len(t["tta"]) == 10 and "tta" not in p
        assert sum(c["probability"] for c in t["top"]) == pytest.approx(1, abs=1e-5)
        assert t["top"] != p["top"]  # averaged over other views: other numbers
    Image.fromarray(imgs[0][0]).save(tmp_path / "a.png")
    assert main(["predict", str(run), str(tmp_path / "a.png"), "--tta", "--invert", "never"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TTA: probabilities averaged over 10 views: original and flip")
    assert f"a.png: {tta[0]['class']} {tta[0]['probability']:.3f}" in out
    argv = ["predict", str(run), str(tmp_path / "a.png"), "--tta", "--json", "--invert", "never"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["probability"] == pytest.approx(tta[0]["probability"], abs=1e-6)


def test_predict_tta_matches_eval_tta(run):
    """The same views and averaging as `eval --tta`: one image, one answer."""
    ds = open_run(run, device="cpu").dataset
    probs = cnnlab.inference.score(run, device="cpu", tta=True).tta_probs
    res = predict(
        run, [ds.test_x[i].numpy() for i in range(4)], top=1, device="cpu", invert="never", tta=True
    )
    for i, r in enumerate(res):
        assert r["probability"] == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert r["class"] == ds.classes[int(probs[i].argmax())]
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
