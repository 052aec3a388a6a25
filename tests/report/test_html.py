import re

import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.report.html import render_compare, verdict, write_report
from cnnlab.runs.layout import read_metrics

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=32",
    "optim.lr=3e-3",  # a model that still gets some test images wrong (the report shows them)
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    a = cnnlab.fit(
        overrides=FAST + ["train.diagnostics=true", "train.report=true"],
        epochs=2,
        runs_dir=str(d),
        name="a",
        quiet=True,
    )
    b = cnnlab.fit(
        overrides=FAST + ["train.label_smoothing=0.1"],
        epochs=2,
        runs_dir=str(d),
        name="b",
        quiet=True,
    )
    return a.run_dir, b.run_dir


def test_report_written_at_end_of_training_and_self_contained(runs):
    a, _ = runs
    page = (a / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(imgs) >= 6  # curves, confusion, per-class, wrong, reliability, gradient flow
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external asset
    last = read_metrics(a)[-1]
    assert f"{last['test_acc']:.2%}" in page and f"{last['test_loss']:.4f}" in page
    for section in (
        "Learning curves",
        "Confusion matrix",
        "Per-class accuracy",
        "Most confidently wrong",
        "reliability",
        "Gradient flow",
        "Model summary",
        "Resolved config",
        "Verdict",
    ):
        assert section in page, section


def test_report_includes_other_analyses(runs, tmp_path):
    a, _ = runs
    (a / "robustness.json").write_text('{"fgsm": {"eps": 0.1, "accuracy": 0.4242}}')
    out = write_report(a, out=tmp_path / "r.html")
    page = out.read_text()
    assert "robustness.json" in page and "0.4242" in page


def test_report_cli_and_bad_run(runs, tmp_path, capsys):
    a, _ = runs
    assert main(["report", str(a), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").is_file()
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_compare(runs, tmp_path):
    a, b = runs
    page, rows, header, diff = render_compare([a, b])
    assert [r[0] for r in rows] == ["a", "b"]
    assert any(r[0] == "train.label_smoothing" for r in diff)
    assert "data:image/png;base64" in page
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.html")]) == 0


def _h(pairs, held="test"):
    return [
        {
            "epoch": i + 1,
            "train_acc": tr,
            f"{held}_acc": te,
            "train_loss": 1 - tr,
            f"{held}_loss": tl,
        }
        for i, (tr, te, tl) in enumerate(pairs)
    ]


def test_verdict_rules():
    over = verdict(
        _h([(0.8, 0.80, 0.50), (0.9, 0.88, 0.35), (0.97, 0.88, 0.40), (0.99, 0.87, 0.45)])
    )
    assert over["kind"] == "overfitting" and over["from_epoch"] == 3
    assert over["text"].startswith("overfitting from epoch 3: train 99.0%, test 87.0%")
    assert verdict(_h([(0.8, 0.79, 0.6), (0.9, 0.89, 0.4)]))["kind"] == "still_learning"
    assert verdict(_h([(0.9, 0.80, 0.6), (0.95, 0.85, 0.5)]))["kind"] == "gap"
    assert verdict(_h([(0.9, 0.9, 0.3), (0.9, 0.9, 0.3)]))["kind"] == "good_fit"
    assert verdict(_h([(0.9, 0.9, 0.3)], held="val"))["held_out"] == "val"
    assert verdict(_h([(0.1, 0.1, 2.3), (0.1, 0.1, 2.3)]), num_classes=10)["kind"] == (
        "not_learning"
    )
