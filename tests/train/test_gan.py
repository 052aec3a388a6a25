import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.train.gan import load_generator, train_gan

FAST = [
    "dataset=synthetic",
    "data.num_train=96",
    "data.num_test=64",
    "width=8",
    "z_dim=8",
    "batch_size=32",
    "eval_samples=64",
    "device=cpu",
    "grid=3",
]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """A tiny LeNet-5 trained on the same synthetic data: geometry and classes match."""
    d = tmp_path_factory.mktemp("judge")
    res = cnnlab.fit(
        overrides=["data.name=synthetic", "data.num_train=96", "data.num_test=64"]
        + ["train.batch_size=32", "train.device=cpu"],
        epochs=1,
        name="judge",
        runs_dir=str(d),
        quiet=True,
    )
    return str(res.run_dir)


def gan(tmp_path, *extra, epochs=2, name="g", **kw):
    return train_gan(
        overrides=FAST + list(extra),
        epochs=epochs,
        name=name,
        runs_dir=str(tmp_path),
        quiet=True,
        **kw,
    )


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory, judge):
    return gan(tmp_path_factory.mktemp("cond"), "conditional=true", judge=judge).run_dir


@pytest.fixture(scope="module")
def unc_run(tmp_path_factory):
    return gan(tmp_path_factory.mktemp("unc"), epochs=1).run_dir


def test_run_directory_scores_and_grids(cond_run):
    d = cond_run
    rows = read_metrics(d)
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in (
        "loss_d",
        "loss_g",
        "d_real",
        "d_fake",
        "fd",
        "fd_real",
        "class_fidelity",
        "judge_acc_real",
    ):
        assert k in rows[0]
    assert 0 <= rows[-1]["class_fidelity"] <= 1 and rows[-1]["fd"] > 0
    for f in (
        "config.yaml",
        "fid.png",
        "losses.png",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ):
        assert (d / f).is_file(), f
    # one row per class (10) × grid (3) columns of 28 px tiles with 2 px padding
    assert Image.open(d / "samples/epoch_002.png").size == (3 * 30 + 2, 10 * 30 + 2)
    ck = load_checkpoint(d / "checkpoints/last.safetensors")
    assert ck.meta["kind"] == "gan" and ck.meta["gan"]["name"] == "dcgan-conditional"
    G, meta = load_generator(d)
    assert not G.training and G.num_classes == 10


def test_resume_continues_the_same_run_exactly(tmp_path):
    full = gan(tmp_path, epochs=2, name="full")
    part = gan(tmp_path, epochs=1, name="part")
    resumed = train_gan(resume=part.run_dir, epochs=2, quiet=True)
    a, b = read_metrics(full.run_dir), read_metrics(resumed.run_dir)
    assert [r["epoch"] for r in b] == [1, 2]
    keys = ("loss_d", "loss_g", "d_real", "d_fake")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]  # bit-exact
    sa = load_checkpoint(full.run_dir / "checkpoints/last.safetensors").model_state
    sb = load_checkpoint(resumed.run_dir / "checkpoints/last.safetensors").model_state
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_acgan_logs_its_class_accuracy(tmp_path):
    res = gan(tmp_path, "conditional=true", "aux_weight=1", epochs=1)
    assert 0 <= res.final["d_class_acc"] <= 1
    G, meta = load_generator(res.run_dir)
    assert meta["gan"]["name"] == "dcgan-ac" and G.num_classes == 10


def test_generate_scores_with_a_judge_and_truncation(tmp_path, capsys, cond_run, judge):
    out = str(tmp_path / "t.png")
    argv = ["generate", str(cond_run), "--out", out, "--judge", judge, "--score-n", "60"]
    assert main([*argv, "--truncation", "1.0"]) == 0
    text = capsys.readouterr().out
    assert "truncation 1.0" in text and "class fidelity" in text and "Fréchet distance" in text
    one_line_error(capsys, [*argv, "--truncation", "0"], "--truncation must be > 0")


def test_generate_cli(tmp_path, capsys, cond_run):
    out = tmp_path / "g.png"
    assert (
        main(["generate", str(cond_run), "--class", "class3", "--n", "6", "--out", str(out)]) == 0
    )
    assert Image.open(out).size == (3 * 30 + 2, 2 * 30 + 2)
    assert "class 3" in capsys.readouterr().out
    assert main(["generate", str(cond_run), "--n", "20", "--out", str(out)]) == 0
    assert Image.open(out).size == (10 * 30 + 2, 2 * 30 + 2)  # columns = classes


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err and "Traceback" not in err
    assert match in err, err


def test_bad_options_one_line_exit_2(tmp_path, capsys, judge, cond_run, unc_run):
    base = ["gan", "--runs-dir", str(tmp_path), "--quiet"]
    one_line_error(
        capsys, [*base, "--dataset", "fashion-mnistt"], "unknown dataset 'fashion-mnistt'"
    )
    one_line_error(capsys, [*base, "--dataset", "synthetic", "--epochs", "0"], "epochs must be ≥ 1")
    one_line_error(capsys, [*base, "--set", "widht=3"], "unknown config key 'widht'")
    one_line_error(
        capsys, [*base, "--set", "data.sizee=3", "--dataset", "synthetic"], "no option 'sizee'"
    )
    one_line_error(capsys, [*base, "--set", "width=abc"], "width must be an integer")
    one_line_error(capsys, [*base, "--set", "aux_weight=1"], "needs a conditional GAN")
    one_line_error(
        capsys,
        [*base, "--dataset", "synthetic", "--judge", str(tmp_path / "nope")],
        "judge run",
    )
    fast = [s for o in FAST for s in ("--set", o)]
    one_line_error(
        capsys, [*base, *fast, "--set", "data.size=32", "--judge", judge], "takes 1×28×28 images"
    )
    one_line_error(capsys, [*base, *fast, "--set", "data.size=16"], "needs 28 or 32 px")
    one_line_error(capsys, ["gan", "--resume", str(tmp_path / "nope")], "cannot resume")
    one_line_error(capsys, ["gan", "--resume", judge], "not a GAN run")
    one_line_error(
        capsys,
        ["generate", str(unc_run), "--class", "1", "--out", str(tmp_path / "x.png")],
        "unconditional",
    )
    one_line_error(capsys, [*base, *fast, "--judge", str(unc_run)], "not a classifier run")
    one_line_error(capsys, ["generate", judge, "--out", str(tmp_path / "x.png")], "not a GAN run")
    for cls, msg in (("11", "out of range"), ("shirt", "unknown class 'shirt'")):
        one_line_error(
            capsys,
            ["generate", str(cond_run), "--class", cls, "--out", str(tmp_path / "x.png")],
            msg,
        )
    one_line_error(capsys, ["generate", str(cond_run), "--out", str(tmp_path / "x.jpg")], ".png")
    assert not (tmp_path / "x.png").exists()
