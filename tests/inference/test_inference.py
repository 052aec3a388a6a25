"""Test-time augmentation and the per-sample outputs of the one evaluation path."""

import json

import pytest
import torch

import cnnlab
import cnnlab.inference.scoring as scoring
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.inference import (
    View,
    apply_view,
    average_views,
    confused_pairs,
    describe_views,
    tta_views,
    worst_mistakes,
)

FAST = [
    "data.name=synthetic",
    "data.num_train=128",
    "data.num_test=48",
    "train.batch_size=32",
    "train.device=cpu",
    "train.diagnostics=false",
    "train.report=false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for aug in ("flip", "none"):
        r = cnnlab.fit(
            overrides=[*FAST, f"data.augment={aug}"],
            epochs=1,
            runs_dir=str(d),
            name=aug,
            quiet=True,
        )
        out[aug] = r.run_dir
    return out


def _meta(augment=None, config_augment="auto", pad=2):
    m = {"config": {"data": {"augment": config_augment, "pad": pad}}}
    if augment is not None:
        m["augment"] = augment
    return m


def test_views_are_what_training_augmented_with():
    names = lambda vs: [v.name for v in vs]  # noqa: E731
    assert names(tta_views(_meta(["flip"]))) == ["original", "flip"]
    crop = names(tta_views(_meta(["crop"])))
    assert crop == ["original", "shift(-1,+0)", "shift(+1,+0)", "shift(+0,-1)", "shift(+0,+1)"]
    both = tta_views(_meta(["crop", "flip", "noise"]))
    assert len(both) == 10 and sum(v.flip for v in both) == 5  # noise has no view
    assert names(tta_views(_meta(["crop"], pad=4)))[1] == "shift(-2,+0)"
    # proportional to the image: 224 px → 7 px (not half of a 2-px pad); 28 px → 1 px
    photo = {**_meta(["crop"], pad=2), "input": {"size": 224, "channels": 3}}
    assert names(tta_views(photo))[1] == "shift(-7,+0)"
    assert names(tta_views({**_meta(["crop"]), "input": {"size": 28}}))[1] == "shift(-1,+0)"
    # older checkpoints: the config's data.augment, 'auto' → the dataset's default
    assert names(tta_views(_meta(config_augment="flip"))) == ["original", "flip"]
    assert len(tta_views(_meta(), dataset_default="crop,flip")) == 10
    for m in (_meta(["noise", "erase"]), _meta([]), _meta(config_augment="none")):
        with pytest.raises(CnnlabError, match="without flip or crop"):
            tta_views(m)
    with pytest.raises(CnnlabError, match="cannot tell"):
        tta_views(_meta())  # auto, and no dataset to look the default up
    assert describe_views(names(both)) == (
        "10 views: original and flip, each also shifted 1 px up, down, left and right"
    )


def test_view_ops_flip_and_shift_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(apply_view(x, View(True, 0, 0)), x.flip(3))
    down = apply_view(x, View(False, 1, 0))
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and not down[..., 0, :].any()
    left = apply_view(x, View(False, 0, -1))
    assert torch.equal(left[..., :, :-1], x[..., :, 1:]) and not left[..., :, -1].any()
    assert apply_view(x, View(False, 0, 0)) is x


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 3)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


def test_average_views_is_one_batch_of_probabilities():
    torch.manual_seed(0)
    m = _Counting()
    x = torch.rand(5, 1, 4, 4)
    views = tta_views(_meta(["crop", "flip"]))
    p = average_views(m, x, views, lambda t: t)
    assert p.shape == (5, 3) and torch.allclose(p.sum(1), torch.ones(5))
    assert m.calls == [50]  # 10 views × 5 images in one forward
    manual = torch.stack([torch.softmax(m.fc(apply_view(x, v).flatten(1)), 1) for v in views])
    assert torch.allclose(p, manual.mean(0), atol=1e-6)


class FlipInvariant(torch.nn.Module):
    """f(x) + f(mirror(x)): the same logits for an image and its mirror image."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x) + self.m(x.flip(3))


def test_flip_invariant_model_scores_the_same_with_tta(runs, monkeypatch):
    opened = scoring.open_run

    def open_run(*a, **k):
        r = opened(*a, **k)
        return r._replace(model=FlipInvariant(r.model).eval())

    monkeypatch.setattr(scoring, "open_run", open_run)
    r = cnnlab.evaluate(runs["flip"], device="cpu", save=False, tta=True)
    t = r["tta"]
    assert t["views"] == ["original", "flip"]
    assert t["accuracy"] == t["accuracy_without_tta"] == r["accuracy"]
    assert t["accuracy_change"] == 0 and t["loss"] == pytest.approx(r["loss"], abs=1e-5)


def test_eval_tta_writes_its_fields_and_keeps_the_plain_number(runs, capsys):
    run = runs["flip"]
    plain = cnnlab.evaluate(run, device="cpu", save=False)
    assert main(["eval", str(run), "--tta", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "TTA (2 views: original and flip): accuracy" in out and "points" in out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["accuracy"] == plain["accuracy"]  # the plain number is unchanged by --tta
    t = ev["tta"]
    assert t["accuracy_without_tta"] == plain["accuracy"]
    assert t["accuracy_change"] == pytest.approx(t["accuracy"] - plain["accuracy"])
    assert t["views"] == ["original", "flip"] and 0 <= t["accuracy"] <= 1
    assert set(t["per_class"]) == set(plain["per_class"])


def test_tta_without_trained_augmentation_is_one_line(runs, capsys):
    run = runs["none"]
    assert main(["eval", str(run), "--tta", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: --tta:") and err.count("\n") == 1
    assert "augment: none" in err and not (run / "eval.json").exists()


def test_worst_mistakes_and_confused_pairs():
    classes = ["a", "b", "c"]
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 2, 0, 1])
    logits = torch.full((8, 3), -2.0)
    logits[torch.arange(8), pred] = torch.tensor([3.0, 1.0, 4.0, 3.0, 2.0, 3.0, 1.0, 5.0])
    w = worst_mistakes(logits, y, classes, n=3)
    assert [x["index"] for x in w] == [7, 2, 4]  # most confident wrong first
    assert (w[0]["true"], w[0]["predicted"]) == ("c", "b")
    assert w[0]["loss"] == pytest.approx(-torch.log_softmax(logits[7], 0)[2].item())
    assert w[0]["confidence"] > 0.99 and w[0]["p_true"] < 0.01
    pairs = confused_pairs(logits, y, classes, top=5, examples=4)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs][0] == ("a", "b", 2)
    assert pairs[0]["examples"] == [2, 1] and pairs[0]["rate"] == pytest.approx(2 / 3)
    assert {(p["true"], p["predicted"]) for p in pairs} == {
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
    }
    assert confused_pairs(torch.eye(3) * 5, torch.arange(3), classes) == []  # no mistake
