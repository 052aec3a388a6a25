import re

import pytest
import torch

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
    assert len(imgs) >= 6  # curves, confusion, per-class, worst, reliability, gradient flow
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external asset
    last = read_metrics(a)[-1]
    assert f"{last['test_acc']:.2%}" in page and f"{last['test_loss']:.4f}" in page
    for section in (
        "Learning curves",
        "Confusion matrix",
        "Per-class accuracy",
        "Worst mistakes: the 24 highest-loss test images",
        "Most-confused class pairs",
        "reliability",
        "Gradient flow",
        "Model summary",
        "Resolved config",
        "Verdict",
    ):
        assert section in page, section


def test_report_worst_mistakes_have_the_right_labels(runs):
    """The gallery and the confused pairs come from the logits `cnnlab eval` scores."""
    from cnnlab.inference import score
    from cnnlab.report.evaluation import evaluate_run

    a, _ = runs
    page = (a / "report.html").read_text()  # the report written at the end of training
    ev = evaluate_run(a, device="cpu")
    sc = score(a, device="cpu", download=False)
    y, pred = sc.labels, sc.logits.argmax(1)
    cls = sc.meta["classes"]
    worst = ev["worst"]
    assert len(worst) == 24 and ev["wrong"]["images"].shape[0] == 24
    assert all(x["loss"] >= w["loss"] for x, w in zip(worst, worst[1:]))
    for w in worst:
        assert w["true"] == cls[int(y[w["index"]])] and w["predicted"] == cls[int(pred[w["index"]])]
    assert (ev["wrong"]["images"][0] == sc.dataset.test_x[worst[0]["index"]].numpy()).all()
    cm = torch.tensor(sc.metrics["confusion"])
    off = cm - torch.diag(cm.diag())
    pairs = ev["confused_pairs"]
    assert pairs and pairs[0]["count"] == int(off.max())
    assert len(pairs) == min(5, int((off > 0).sum()))
    for p in pairs:
        t, q = cls.index(p["true"]), cls.index(p["predicted"])
        assert p["count"] == int(cm[t, q]) and 0 < len(p["examples"]) <= 4
        assert all(int(y[i]) == t and int(pred[i]) == q for i in p["examples"])
        assert f"<td>{p['true']}</td><td>{p['predicted']}</td><td>{p['count']}</td>" in page
    assert 'alt="most-confused pairs"' in page and 'alt="worst mistakes"' in page


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


def test_verdict_needs_enough_data_and_above_chance_accuracy():
    # the newcomer's case: 10 training images, train at chance, test a little above it
    tiny = _h([(0.10, 0.195, 2.2), (0.10, 0.195, 2.2)])
    v = verdict(tiny, num_classes=10, n_train=10, n_held=1000)
    assert v["kind"] == "no_verdict" and "10 images" in v["text"]
    assert verdict(tiny, num_classes=10)["kind"] == "no_verdict"  # train accuracy at chance
    fine = _h([(0.9, 0.9, 0.3), (0.9, 0.9, 0.3)])
    assert verdict(fine, num_classes=10, n_train=5000, n_held=40)["kind"] == "no_verdict"
    assert verdict(fine, num_classes=10, n_train=5000, n_held=1000)["kind"] == "good_fit"


@pytest.mark.slow
def test_report_and_eval_print_one_number(runs, capsys):
    a, _ = runs
    info: dict = {}
    write_report(a, info=info)
    ev = cnnlab.evaluate(a, save=False)
    assert info["evaluation"]["accuracy"] == ev["accuracy"]
    page = (a / "report.html").read_text()
    assert f"{ev['accuracy']:.2%}" in page and "as `cnnlab eval`" in page


def test_eval_on_another_dataset_keeps_the_runs_own_eval(runs, tmp_path, capsys):
    from cnnlab.inference import eval_name

    a, _ = runs
    meta = {"dataset": "synthetic"}
    assert eval_name(meta, None, "test") == eval_name(meta, "synthetic", "test") == "eval"
    assert eval_name(meta, "mnist", "test") == "eval-mnist"
    assert eval_name(meta, None, "train") == "eval-train"
    assert main(["eval", str(a), "--split", "train", "--json"]) == 0
    assert (a / "eval-train.json").is_file() and not (a / "eval.json").exists()
    assert main(["eval", str(a), "--dataset", "mnist-sample"]) == 2  # other classes
    assert "classes" in capsys.readouterr().err and not (a / "eval-mnist-sample.json").exists()


def test_gan_run_in_report_and_compare_is_one_line(runs, tmp_path, capsys):
    a, _ = runs
    g = tmp_path / "g"
    g.mkdir()
    (g / "config.yaml").write_text("model:\n  name: dcgan\n")
    (g / "metrics.jsonl").write_text('{"epoch": 1, "loss_d": 1.0, "loss_g": 1.0}\n')
    for argv in (["report", str(g)], ["compare", str(a), str(g)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error:") and "GAN run" in err and err.count("\n") == 1


def test_evaluation_runs_in_plain_float32():
    """A training process turns TF32 on; evaluation must not see it (one number)."""
    import torch

    from cnnlab.inference import strict_fp32

    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = b.cudnn.benchmark = True
    try:
        with strict_fp32():
            assert not (b.cuda.matmul.allow_tf32 or b.cudnn.allow_tf32 or b.cudnn.benchmark)
        assert b.cuda.matmul.allow_tf32 and b.cudnn.allow_tf32 and b.cudnn.benchmark
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = saved


def test_image_grids_are_one_png_for_gray_and_colour():
    import base64

    import numpy as np

    from cnnlab.report.plots import plot_pairs, plot_wrong

    for c in (1, 3):
        ims = np.random.default_rng(0).integers(0, 256, (5, c, 12, 12), dtype=np.uint8)
        png = base64.b64decode(plot_wrong(ims, [f"#{i}" for i in range(5)]))
        assert png.startswith(b"\x89PNG")
    pairs = [
        {"true": "a", "predicted": "b", "examples": [3, 1], "images": ims[:2]},
        {"true": "b", "predicted": "a", "examples": [0], "images": ims[:1]},
    ]
    assert base64.b64decode(plot_pairs(pairs)).startswith(b"\x89PNG")


def test_folder_mistakes_are_named_by_file(tmp_path):
    """An image-folder run's gallery captions name the test files, not their indices."""
    import numpy as np
    from PIL import Image

    import cnnlab
    from cnnlab.report.evaluation import evaluate_run
    from cnnlab.report.plots import mistake_caption

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(10):
            a = rng.integers(0, 256, (16, 16), dtype=np.uint8)  # noise: plenty of mistakes
            Image.fromarray(a).save(tmp_path / "f" / c / f"shot_{c}{i}.png")
    run = cnnlab.fit(dataset="imagefolder", data_dir=str(tmp_path / "f"), epochs=1, quiet=True,
                     runs_dir=str(tmp_path / "runs"), overrides=["train.device=cpu", "model.name=mlp",
                     "train.diagnostics=false", "data.val_fraction=0"]).run_dir  # fmt: skip
    ev = evaluate_run(run, "last", device="cpu")
    assert ev["worst"] and all(w["file"].split("/")[1].startswith("shot_") for w in ev["worst"])
    assert ev["wrong"]["captions"][0].startswith(ev["worst"][0]["file"].split("/")[1])
    assert mistake_caption({"index": 7, "predicted": "a", "confidence": 0.9, "true": "b",
                            "loss": 2.0}).startswith("#7 a 90%")  # fmt: skip
