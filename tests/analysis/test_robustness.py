"""Corruptions, attacks (parity with Captum), the robustness/OOD command, adversarial training."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.analysis.attacks import Normalized, fgsm, pgd
from cnnlab.analysis.robustness import CORRUPTIONS, corrupt, robustness
from cnnlab.cli import main
from cnnlab.config import Config
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.inference import predict
from cnnlab.train.adversarial import make_adversary
from cnnlab.train.validate import validate


def _images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 8:20] = 0.3 + 0.7 * torch.rand(n, 1, 16, 12, generator=g)  # an "object"
    return x


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_seeded_in_range_and_grow_with_severity(name):
    x = _images()
    diffs = []
    for level in range(1, 6):
        a = corrupt(x, name, level, torch.Generator().manual_seed(3))
        b = corrupt(x, name, level, torch.Generator().manual_seed(3))
        assert a.shape == x.shape and torch.equal(a, b)
        assert a.min() >= 0 and a.max() <= 1
        diffs.append(float((a - x).abs().mean()))
    assert diffs[0] > 0 and diffs[-1] > diffs[0] * 1.5, diffs


def test_corrupt_rejects_bad_names_and_levels():
    with pytest.raises(CnnlabError, match="unknown corruption 'fog'"):
        corrupt(_images(2), "fog", 1)
    with pytest.raises(CnnlabError, match="severity 6 out of range"):
        corrupt(_images(2), "blur", 6)


def _small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3)
    ).eval()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pgd_matches_captum_and_stays_in_the_ball():
    from captum.robust import FGSM, PGD

    model = _small_model()
    x, y = _images(8), torch.arange(8) % 3
    ce = nn.CrossEntropyLoss(reduction="none")  # Captum's default loss expects probabilities
    mine = pgd(model, x, y, 0.1, steps=5, step_size=0.03, random_start=False)
    attack = PGD(model, ce, lower_bound=0.0, upper_bound=1.0)
    attack.fgsm.zero_thresh = 0.0  # Captum rounds |grad| < 1e-6 to 0; we take every sign
    theirs = attack.perturb(x, radius=0.1, step_size=0.03, step_num=5, target=y)
    assert (mine - theirs).abs().max() < 1e-5
    f_mine = fgsm(model, x, y, 0.05)
    one = FGSM(model, ce, lower_bound=0.0, upper_bound=1.0)
    one.zero_thresh = 0.0
    assert (f_mine - one.perturb(x, epsilon=0.05, target=y)).abs().max() < 1e-5
    r = pgd(
        model, x, y, 0.1, steps=3, random_start=True, generator=torch.Generator().manual_seed(0)
    )
    assert (r - x).abs().max() <= 0.1 + 1e-6 and r.min() >= 0 and r.max() <= 1
    loss = nn.functional.cross_entropy
    assert loss(model(r), y) > loss(model(x), y)


def test_adversary_hook_works_in_pixel_space_and_restores_mode():
    cfg = Config()
    cfg.train.adversarial, cfg.train.eps, cfg.train.adv_steps = "pgd", 0.1, 3
    mean, std = torch.tensor([0.3]).reshape(1, 1, 1, 1), torch.tensor([0.2]).reshape(1, 1, 1, 1)
    adv = make_adversary(cfg.train, mean, std)
    model = _small_model().train()
    x01, y = _images(4), torch.tensor([0, 1, 2, 0])
    xn = (x01 - mean) / std
    xa = adv(model, xn, y)
    assert model.training  # the attack ran in eval mode and handed the model back in train mode
    assert ((xa * std + mean) - x01).abs().max() <= 0.1 + 1e-5  # ε in pixels, not in σ units
    assert all(p.grad is None for p in model.parameters())
    cfg.train.adversarial = "none"
    assert make_adversary(cfg.train, mean, std) is None


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("adversarial", "trades", "unknown train.adversarial 'trades'"),
        ("eps", 0.0, "train.eps must be in"),
        ("adv_steps", 0, "train.adv_steps must be"),
    ],
)
def test_adversarial_config_is_validated(key, value, needle):
    cfg = Config()
    cfg.train.adversarial = "pgd"
    setattr(cfg.train, key, value)
    with pytest.raises(ConfigError, match=needle):
        validate(cfg)


def test_adversarial_training_learns(tmp_path):
    common = [
        "data.name=synthetic",
        "data.num_train=256",
        "data.num_test=64",
        "data.noise=0.1",
        "train.batch_size=32",
        "train.device=cpu",
    ]
    res = cnnlab.fit(
        overrides=[*common, "train.adversarial=pgd", "train.eps=0.1", "train.adv_steps=2"],
        epochs=2,
        runs_dir=str(tmp_path),
        name="adv",
        quiet=True,
    )
    assert res.final["test_acc"] > 0.5  # 10 classes: learned through the attacked batches
    assert res.history[0]["train_acc"] < res.final["test_acc"] + 0.5


def test_robustness_numbers_are_reproducible_and_files_written(tiny_run):
    kw = dict(corruptions="gaussian_noise,rotation", eps="0.05", pgd_steps=3, limit=64)
    a = robustness(tiny_run, **kw)
    b = robustness(tiny_run, save=False, **kw)
    for k in ("clean_acc", "corruptions", "mean_corruption_acc", "fgsm", "pgd"):
        assert a[k] == b[k], k
    sub = robustness(tiny_run, corruptions="rotation", attacks="none", limit=64, save=False)
    assert sub["corruptions"]["rotation"] == a["corruptions"]["rotation"]
    assert "pgd" not in sub
    assert a["clean_acc"] > 0.8 and a["pgd"]["acc"][0] < a["clean_acc"]
    assert a["corruptions"]["gaussian_noise"]["levels"] == [1, 2, 3, 4, 5]
    saved = json.loads((tiny_run / "robustness.json").read_text())
    assert saved["clean_acc"] == a["clean_acc"]
    assert (tiny_run / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    page = (tiny_run / "robustness.html").read_text()
    assert page.startswith("<section id='robustness'>") and "PGD-3" in page
    assert "data:image/png;base64," in page


def test_robustness_command_table(tiny_run, capsys):
    argv = ["robustness", str(tiny_run), "--corruptions", "blur", "--severity", "1,5"]
    assert main([*argv, "--eps", "0.1", "--pgd-steps", "2", "--limit", "32"]) == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "blur" in out and "PGD-2" in out and "sev 5" in out


def test_ood_threshold_is_stored_and_predict_flags(tiny_run, tmp_path, capsys):
    assert main(["robustness", str(tiny_run), "--ood", "noise", "--ood-score", "msp"]) == 0
    out = capsys.readouterr().out
    assert "noise" in out and "AUROC" in out
    ood = json.loads((tiny_run / "ood.json").read_text())
    assert ood["method"] == "msp" and 0 < ood["threshold"] <= 1
    from cnnlab.data.datasets import load_dataset

    ds = load_dataset("synthetic", num_train=512, num_test=128)
    noise = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    res = predict(tiny_run, [ds.test_x[0].numpy(), noise], invert="never", device="cpu")
    assert res[0]["ood"]["method"] == "msp" and isinstance(res[1]["ood"]["flag"], bool)
    assert res[0]["ood"]["score"] > ood["threshold"] and not res[0]["ood"]["flag"]
    from PIL import Image

    Image.fromarray(noise[0]).save(tmp_path / "noise.png")
    assert main(["predict", str(tiny_run), str(tmp_path / "noise.png"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert isinstance(row["ood"]["flag"], bool) and isinstance(row["inverted"], bool)


def test_an_ood_threshold_no_better_than_chance_is_not_stored(tiny_run, monkeypatch, capsys):
    """OOD images that are the test images themselves: AUROC 0.5 (chance) — no threshold
    is stored, and the command says so."""
    from cnnlab.analysis import ood_run
    from cnnlab.analysis import robustness as rb

    (tiny_run / "ood.json").unlink(missing_ok=True)
    monkeypatch.setattr(ood_run, "_ood_images", lambda name, ev, *a: ev.loader.x)
    assert main(["robustness", str(tiny_run), "--ood", "noise", "--ood-score", "energy"]) == 0
    cap = capsys.readouterr()
    assert "no better than chance" in cap.err and "stored threshold" not in cap.out
    assert not (tiny_run / "ood.json").exists()
    r = rb.ood(tiny_run, ["noise"], method="msp", device="cpu")
    assert r["not_stored"] and r["outputs"] == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--corruptions", "fog"], "unknown corruption 'fog'"),
        (["--severity", "0"], "severity 0 out of range"),
        (["--severity", "x"], "severity must be integers"),
        (["--attacks", "cw"], "unknown attack 'cw'"),
        (["--eps", "3"], "out of range"),
        (["--ood", "imagenet-xyz"], "unknown dataset"),
        (["--ood-score", "bogus"], None),
    ],
)
def test_robustness_bad_input_is_one_line_exit_2(tiny_trained_run, capsys, argv, needle):
    if needle is None:  # argparse choices: its own usage error, also exit 2
        with pytest.raises(SystemExit) as e:
            main(["robustness", str(tiny_trained_run), *argv])
        assert e.value.code == 2
        return
    assert main(["robustness", str(tiny_trained_run), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_robustness_run_without_checkpoint(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    assert main(["robustness", str(tmp_path / "r")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_normalized_wrapper_equals_normalising_first():
    m = _small_model()
    w = Normalized(m, [0.3], [0.2])
    x = _images(2)
    assert torch.allclose(w(x), m((x - 0.3) / 0.2), atol=1e-6)


def test_robustness_tables_and_section_from_a_result():
    from cnnlab.analysis.robustness_report import attack_rows, html_section, table_rows

    blur = {"levels": [1, 3], "params": [0.5, 1.5], "acc": [0.8, 0.5], "mean": 0.65}
    pgd7 = {"eps": [0.1], "acc": [0.2], "steps": 7, "step_size": "eps/4", "random_start": True}
    res = {"run": "/r/x", "dataset": "mnist", "n": 100, "seed": 0, "clean_acc": 0.9}
    res.update(corruptions={"blur": blur}, mean_corruption_acc=0.65, pgd=pgd7)
    header, rows = table_rows(res)
    assert header == ["test", "sev 1", "sev 3", "mean"]
    assert rows == [
        ["clean", "", "", "0.9000"],
        ["blur", "0.8000", "0.5000", "0.6500"],
        ["mean corruption", "", "", "0.6500"],
    ]
    assert attack_rows(res) == (["attack", "ε=0.1"], [["PGD-7", "0.2000"]])
    page = html_section(res)
    assert "mean corruption accuracy 0.6500" in page and "PGD: 7 steps of size eps/4" in page
    assert "<img" not in page  # no curves given, none embedded


def test_the_old_import_path_keeps_the_public_names():
    from cnnlab.analysis import corruptions, ood_run
    from cnnlab.analysis import robustness as rb

    for name in rb.__all__:
        assert hasattr(rb, name), name
    assert rb.corrupt is corruptions.corrupt and rb.ood is ood_run.ood
