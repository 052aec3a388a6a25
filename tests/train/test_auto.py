"""Settings chosen from an image folder: the rules on made-up surveys, explicit keys win,
and end to end from the CLI (the first lines say what was chosen; config.yaml has it)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import Config, apply_overrides
from cnnlab.data.survey import FolderSurvey, survey_folder
from cnnlab.train.auto import MAX_EPOCHS, MIN_EPOCHS, choose, explicit_keys, plan
from cnnlab.train.selection import selection_score


def survey(n_train=247, side=(960, 1280), mode="RGB", n_val_given=0, classes=2, **kw):
    labels = [i % classes for i in range(n_train)]
    return FolderSurvey(
        root=Path("x"), layout="train/val", test_from="val/", classes=[f"c{i}" for i in
        range(classes)], train_labels=labels, n_val_given=n_val_given, n_test=150,
        sampled=min(256, n_train), short_sides=[side[0]] * 5, long_sides=[side[1]] * 5,
        modes={mode: 5}, **kw,
    )  # fmt: skip


def chosen(sv, given=(), overrides=()):
    cfg = apply_overrides(Config(), ["data.name=imagefolder", *overrides])
    return {c.key: c.value for c in plan(sv, cfg, set(given))}, cfg


def test_a_few_hundred_photos_get_a_photo_recipe():
    c, cfg = chosen(survey())
    assert c["model.name"] == "alexnet-cifar" and c["data.size"] == 64
    assert c["data.val_fraction"] == 0.2 and c["train.select"] == "smooth"
    n_train = 247 - round(247 * 0.2)
    assert c["train.batch_size"] <= n_train / 4 and c["train.batch_size"] == 32
    assert c["optim.lr"] == pytest.approx(1e-3)
    assert MIN_EPOCHS <= c["train.epochs"] <= MAX_EPOCHS
    assert cfg.train.batch_size == 32 and cfg.data.args["size"] == 64  # applied to the config


def test_batch_is_a_fraction_of_a_tiny_training_set():
    c, _ = chosen(survey(n_train=30))
    assert c["train.batch_size"] <= (30 - 6) / 4 and c["train.batch_size"] >= 1


def test_explicit_keys_win():
    given = {"model.name", "train.batch_size", "optim.lr", "data.size"}
    c, cfg = chosen(survey(), given, ["model.name=lenet5", "train.batch_size=64"])
    assert not set(c) & given
    assert cfg.model.name == "lenet5" and cfg.train.batch_size == 64 and cfg.optim.lr == 1e-2


def test_large_grey_folder_keeps_the_defaults():
    c, _ = chosen(survey(n_train=60_000, side=(28, 28), mode="L", classes=10))
    assert c == {}


def test_a_kept_val_folder_is_the_validation_set():
    c, _ = chosen(survey(n_val_given=300))
    assert "data.val_fraction" not in c and "train.select" not in c


def test_explicit_keys_from_every_source(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 20\ndata:\n  size: 96\n")  # 20 is the default
    keys = explicit_keys(None, recipe, ["optim.lr=0.01"], ["train.batch_size"])
    assert {"train.epochs", "data.size", "optim.lr", "train.batch_size"} <= keys
    cfg = apply_overrides(Config(), ["train.seed=3"])
    assert explicit_keys(cfg) == {"train.seed"}


def test_selection_score_smooths_over_three_epochs():
    h = [{"val_acc": v} for v in (0.5, 0.9, 0.5, 0.6, 0.7)]
    assert selection_score("val", h[:2], 5) == 0.9
    assert selection_score("smooth", h[:2], 5) is None  # the window is not full yet
    assert selection_score("smooth", h[:3], 5) == pytest.approx(1.9 / 3)
    assert selection_score("smooth", h, 5) == pytest.approx(0.6)
    assert selection_score("smooth", h[:2], 2) == pytest.approx(0.7)  # a 2-epoch run
    assert selection_score("smooth", [{"test_acc": 1.0}], 5) is None  # no validation


def photo_folder(root: Path, n=12, size=(96, 72)):
    rng = np.random.default_rng(0)
    for split, k in (("train", n), ("val", 4)):
        for ci, c in enumerate(("ball", "box")):
            (root / split / c).mkdir(parents=True)
            for i in range(k):
                a = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
                a[..., ci] += 150
                Image.fromarray(a).save(root / split / c / f"IMG_{i}.jpg")
    return root


def test_survey_reads_headers_and_the_split(tmp_path):
    sv = survey_folder(photo_folder(tmp_path / "p"))
    assert sv.n_train == 24 and sv.n_test == 8 and sv.test_from == "val/"
    assert (sv.median_short, sv.median_long, sv.grey) == (72, 96, False)
    assert "val/ → test" in sv.split_line()


def test_cli_one_liner_says_what_it_chose(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")
    root = photo_folder(tmp_path / "p")
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "2",
            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--set",
            "train.report=false", "--set", "train.diagnostics=false", "--set", "data.size=32"]  # fmt: skip
    assert main([*argv, "--name", "a"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0].startswith("folder: 24 training images in 2 classes")
    assert lines[1].startswith("split: train/ → train + val") and "val/ → test" in lines[1]
    assert any(ln.startswith("auto: model.name=alexnet-cifar") for ln in lines)
    assert not any(ln.startswith(("auto: train.epochs", "auto: data.size")) for ln in lines)
    assert "warning: validation has only 5 images" in cap.err
    cfg = yaml.safe_load((tmp_path / "runs" / "a" / "config.yaml").read_text())
    assert cfg["model"]["name"] == "alexnet-cifar" and cfg["train"]["epochs"] == 2
    assert cfg["train"]["batch_size"] <= 19 / 4 and cfg["train"]["select"] == "smooth"
    assert cfg["data"]["size"] == 32 and cfg["data"]["val_fraction"] == 0.2
    rows = [json.loads(x) for x in (tmp_path / "runs/a/metrics.jsonl").read_text().splitlines()]
    assert "val_acc_smooth" not in rows[0] and rows[1]["val_acc_smooth"] == pytest.approx(
        (rows[0]["val_acc"] + rows[1]["val_acc"]) / 2
    )
    assert "by mean val accuracy of epochs" in cap.out
    # train.auto=false: the plain defaults
    assert main([*argv, "--name", "b", "--set", "train.auto=false", "--quiet"]) == 0
    cfg = yaml.safe_load((tmp_path / "runs" / "b" / "config.yaml").read_text())
    assert cfg["model"]["name"] == "lenet5" and cfg["train"]["batch_size"] == 256


def test_choose_leaves_other_datasets_alone():
    cfg = Config()
    assert choose(cfg, set()) == ([], []) and cfg.to_dict() == Config().to_dict()


def test_imagenet_start_gets_the_model_and_normalisation_its_weights_need():
    c, _ = chosen(survey(), overrides=["model.init_from=imagenet"])
    assert c["model.name"] == "alexnet-torchvision" and c["data.size"] == 224
    assert c["data.mean"] == [0.485, 0.456, 0.406] and c["optim.lr"] == pytest.approx(1e-4)
    assert c["data.channels"] == 3


def test_photos_recipe_leaves_the_folder_dependent_keys_to_the_folder(tmp_path):
    from cnnlab.config import load_recipe

    root = photo_folder(tmp_path / "p")
    cfg = load_recipe("photos")
    apply_overrides(cfg, [f"data.data_dir={root}"])
    given = explicit_keys(None, "photos", [], ["data.data_dir"])
    assert {"model.name", "optim.lr"} <= given and "train.batch_size" not in given
    lines, _ = choose(cfg, given)
    assert not any(ln.startswith(("auto: model.name", "auto: optim.lr")) for ln in lines)
    assert cfg.train.batch_size <= 19 / 4 and cfg.data.args["size"] == 64


def test_print_config_shows_what_the_folder_chose(tmp_path, capsys):
    root = photo_folder(tmp_path / "p")
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--print-config"]
    assert main([*argv, "--batch-size", "2"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)  # the YAML alone: the choices are in it
    assert cfg["model"]["name"] == "alexnet-cifar" and cfg["train"]["batch_size"] == 2
    assert cfg["data"]["size"] == 64 and cfg["train"]["select"] == "smooth"


def test_lr_find_on_a_folder_sweeps_the_model_the_run_would_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")
    root = photo_folder(tmp_path / "p")
    argv = ["lr-find", "--dataset", "imagefolder", "--data-dir", str(root), "--steps", "5",
            "--quiet", "--device", "cpu", "--set", f"run.runs_dir={tmp_path / 'runs'}"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "runs" / "lr-find-alexnet-cifar-imagefolder" / "lr_find.json").is_file()
