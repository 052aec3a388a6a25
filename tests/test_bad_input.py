"""The bad-input matrix: every command against each class of mistake that applies to it.

A mistake is answered with exit code 2 and one line ``cnnlab: error: ...`` on stderr — no
traceback — and leaves no new file behind. The commands run in-process (``cli.main``), so
the whole matrix costs seconds; the runs it reads are made once per session.

Mistake classes: unknown names, out-of-range numbers (0, negative, huge, NaN), wrong
types, missing / empty / corrupt run directories and checkpoints, runs of the wrong kind
(GAN vs classifier), damaged ``config.yaml`` and ``metrics.jsonl``, unreadable images,
inputs too small for the model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import cnnlab
from cnnlab.cli import main

COMMANDS = (
    "train eval predict runs data models inspect ablate bench explain explore robustness report "
    "compare sweep export serve gan generate verify lr-find"
).split()


# -- the runs and files the matrix points at ----------------------------------------------


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_trained_run):
    """A folder of runs and files: a classifier, a GAN, and broken ones of every kind."""
    w = tmp_path_factory.mktemp("world")
    cls = w / "cls"
    shutil.copytree(tiny_trained_run, cls)
    fake_gan(w / "gan")
    (w / "empty").mkdir()
    corrupt = w / "corrupt"  # checkpoints that are not safetensors
    shutil.copytree(cls, corrupt)
    for f in (corrupt / "checkpoints").iterdir():
        f.write_bytes(b"not a checkpoint")
    half = w / "half"  # config.yaml only: died before its first epoch
    half.mkdir()
    shutil.copy(cls / "config.yaml", half / "config.yaml")
    damaged = w / "damaged"  # hand-damaged config.yaml and metrics.jsonl, good weights
    shutil.copytree(cls, damaged)
    (damaged / "config.yaml").write_text("model: [oops\n  - : :\n")
    (damaged / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": "x"}\n[1, 2]\n7\n{bad\n')
    listy = w / "listy"  # config.yaml that parses to a list, metrics rows of the wrong shape
    shutil.copytree(cls, listy)
    (listy / "config.yaml").write_text("- a\n- b\n")
    (listy / "metrics.jsonl").write_text('{"epoch": 1}\n{"train_acc": null}\n')
    bad_img = w / "bad.png"
    bad_img.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (w / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(w / "ok.png")
    (w / "space.yaml").write_text("optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    image_folders(w / "folders")
    return w


def image_folders(d: Path) -> None:
    """Folders of images that are not a dataset: one class, an empty class, no class
    folders, a class folder that only loops back to its parent."""
    img = Image.fromarray(np.full((8, 8), 90, np.uint8))
    for name, classes in (("one", ["a"]), ("empty", ["a", "b"]), ("looped", ["a"])):
        for c in classes:
            (d / name / c).mkdir(parents=True)
            if name != "empty" or c == "a":
                img.save(d / name / c / "0.png")
    (d / "empty" / "b" / "notes.txt").write_text("no images here")
    (d / "looped" / "b").mkdir()
    os.symlink("..", d / "looped" / "b" / "up")
    (d / "loose").mkdir()
    img.save(d / "loose" / "0.png")


def fake_gan(d: Path) -> Path:
    """A GAN run's files (config.yaml, metrics.jsonl, a checkpoint marked ``kind: gan``)
    without training one: what tells every command it is not a classifier."""
    from cnnlab.runs.checkpoint import save_checkpoint

    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text("model:\n  name: dcgan\ndata:\n  name: synthetic\n")
    (d / "metrics.jsonl").write_text('{"epoch": 1, "loss_d": 1.2, "loss_g": 0.8, "seconds": 1}\n')
    meta = {"kind": "gan", "epoch": 1, "classes": [str(i) for i in range(10)]}
    save_checkpoint(d / "checkpoints" / "last.safetensors", torch.nn.Linear(2, 2), meta)
    return d


def real_gan(runs: Path) -> Path:
    argv = ["gan", "--runs-dir", str(runs), "--name", "gan", "--quiet", "--epochs", "1"]
    for o in ("data.name=synthetic", "data.num_train=64", "data.num_test=32", "gan.width=8",
              "gan.z_dim=8", "gan.eval_samples=32", "train.device=cpu", "gan.grid=2"):  # fmt: skip
        argv += ["--set", o]
    assert main(argv) == 0
    return runs / "gan"


def snapshot(*roots: Path) -> set[str]:
    return {str(p) for r in roots for p in r.rglob("*")}


def check_one_line_error(capsys, argv: list[str], roots: tuple[Path, ...]) -> str:
    before = snapshot(*roots)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own exits
        rc = e.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"{argv}: exit {rc}\n{err}"
    assert "Traceback" not in err + out, f"{argv}: a traceback\n{err}"
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), f"{argv}:\n{err}"
    new = snapshot(*roots) - before
    assert not new, f"{argv} left {sorted(new)}"
    return lines[0]


# -- the matrix ---------------------------------------------------------------------------

SYN = ["--set", "data.name=synthetic", "--set", "train.device=cpu"]
R = "{w}"  # stands for the world folder in the cases below
FOLDER = ["train", "--dataset", "imagefolder", "--data-dir"]

# (command, mistake class, argv, words the error must hold)
CASES = [
    # train
    ("train", "unknown name", ["train", "--model", "lenet"], "did you mean 'lenet5'"),
    ("train", "unknown name", ["train", "--dataset", "nosuch"], "unknown dataset"),
    ("train", "unknown name", ["train", "--recipe", "nosuch"], "recipe"),
    ("train", "unknown key", ["train", "--set", "optim.lrr=1"], "did you mean 'optim.lr'"),
    ("train", "unknown key", ["train", *SYN[:2], "--set", "data.num_trian=5"], "num_train"),
    ("train", "unknown key", ["train", "--set", "data.num_train=512"], "data.train_limit"),
    ("train", "zero", ["train", *SYN, "--epochs", "0"], "epochs"),
    ("train", "negative", ["train", *SYN, "--batch-size", "-4"], "batch_size"),
    ("train", "NaN", ["train", *SYN, "--lr", "nan"], "finite"),
    ("train", "wrong type", ["train", "--epochs", "two"], "invalid int"),
    ("train", "wrong type", ["train", *SYN, "--set", "optim.lr=fast"], "number"),
    ("train", "missing run", ["train", "--resume", f"{R}/nosuch"], "nosuch"),
    ("train", "input too small", ["train", *SYN, "--set", "data.size=8"], "data.resize=12"),
    ("train", "input too small", ["train", *SYN, "--model", "alexnet"], "data.resize="),
    ("train", "bad folder", ["train", "--dataset", "imagefolder"], "needs --data-dir"),
    ("train", "bad folder", [*FOLDER, f"{R}/nosuch"], "not found"),
    ("train", "bad folder", [*FOLDER, f"{R}/ok.png"], "is a file"),
    ("train", "bad folder", [*FOLDER, f"{R}/folders/loose"], "no class sub-folders"),
    ("train", "bad folder", [*FOLDER, f"{R}/folders/one"], "only one class"),
    ("train", "bad folder", [*FOLDER, f"{R}/folders/empty"], "no image files"),
    ("train", "bad folder", [*FOLDER, f"{R}/folders/looped"], "no image files"),
    # eval
    ("eval", "missing run", ["eval", f"{R}/nosuch"], "not found"),
    ("eval", "empty run", ["eval", f"{R}/empty"], "no checkpoint"),
    ("eval", "half run", ["eval", f"{R}/half"], "no checkpoint"),
    ("eval", "corrupt checkpoint", ["eval", f"{R}/corrupt"], "corrupt"),
    ("eval", "GAN run", ["eval", f"{R}/gan"], "GAN run"),
    ("eval", "unknown name", ["eval", f"{R}/cls", "--split", "val"], "invalid choice"),
    ("eval", "other classes", ["eval", f"{R}/cls", "--dataset", "mnist-sample"], "classes"),
    ("eval", "unknown name", ["eval", f"{R}/cls", "--dataset", "nosuch"], "unknown dataset"),
    # predict
    ("predict", "zero", ["predict", f"{R}/cls", f"{R}/ok.png", "--top", "0"], "--top"),
    ("predict", "negative", ["predict", f"{R}/cls", f"{R}/ok.png", "--top", "-2"], "--top"),
    ("predict", "wrong type", ["predict", f"{R}/cls", f"{R}/ok.png", "--top", "x"], "int"),
    ("predict", "unreadable image", ["predict", f"{R}/cls", f"{R}/bad.png"], "bad.png"),
    ("predict", "empty image", ["predict", f"{R}/cls", f"{R}/empty.png"], "empty.png"),
    ("predict", "missing image", ["predict", f"{R}/cls", f"{R}/no.png"], "not found"),
    ("predict", "GAN run", ["predict", f"{R}/gan", f"{R}/ok.png"], "GAN run"),
    ("predict", "corrupt checkpoint", ["predict", f"{R}/corrupt", f"{R}/ok.png"], "corrupt"),
    # runs
    ("runs", "wrong type", ["runs", "--runs-dir"], "expected one argument"),
    # data
    ("data", "unknown name", ["data", "--download", "nosuch"], "unknown dataset"),
    # models
    ("models", "unknown name", ["models", "zzz*"], "no model matches"),
    ("models", "zero", ["models", "--classes", "0"], "--classes"),
    # inspect
    ("inspect", "unknown name", ["inspect", "lenet"], "did you mean 'lenet5'"),
    ("inspect", "input too small", ["inspect", "lenet5", "--input-size", "8"], "--input-size 12"),
    ("inspect", "zero", ["inspect", "lenet5", "--channels", "0"], "--channels"),
    ("inspect", "negative", ["inspect", "lenet5", "--input-size", "-3"], "--input-size"),
    ("inspect", "huge", ["inspect", "lenet5", "--input-size", "99999"], "--input-size"),
    ("inspect", "zero", ["inspect", "lenet5", "--classes", "0"], "--classes"),
    ("inspect", "unknown key", ["inspect", "lenet5", "--set", "activaton=relu"], "activation"),
    # ablate
    ("ablate", "unknown key", ["ablate", *SYN, "--vary", "optim.lrr=1,2"], "optim.lr"),
    ("ablate", "wrong type", ["ablate", *SYN, "--vary", "optim.lr"], "--vary"),
    ("ablate", "zero", ["ablate", *SYN, "--vary", "optim.lr=0.1,0.2", "--seeds", "0"], "seeds"),
    # bench
    ("bench", "unknown name", ["bench", "--recipe", "nosuch"], "recipe"),
    ("bench", "wrong type", ["bench", "--epochs", "x"], "invalid int"),
    # explore
    ("explore", "GAN run", ["explore", f"{R}/gan"], "GAN run"),
    ("explore", "missing run", ["explore", f"{R}/nosuch"], "not found"),
    ("explore", "empty run", ["explore", f"{R}/empty"], "no checkpoint"),
    ("explore", "corrupt checkpoint", ["explore", f"{R}/corrupt"], "corrupt"),
    ("explore", "negative", ["explore", f"{R}/cls", "--images", "-1"], "--images"),
    ("explore", "wrong type", ["explore", f"{R}/cls", "--images", "x"], "invalid int"),
    ("explore", "unknown name", ["explore", f"{R}/cls", "--mode", "pixels"], "invalid choice"),
    ("explore", "bad output", ["explore", f"{R}/cls", "--out", f"{R}/cls"], "is a directory"),
    # explain
    ("explain", "missing run", ["explain", f"{R}/nosuch"], "not found"),
    ("explain", "GAN run", ["explain", f"{R}/gan"], "GAN run"),
    ("explain", "zero", ["explain", f"{R}/cls", "-n", "0"], "-n"),
    ("explain", "unknown name", ["explain", f"{R}/cls", "--methods", "shap"], "unknown"),
    ("explain", "huge", ["explain", f"{R}/cls", "--image", "99999999"], "out of range"),
    ("explain", "huge", ["explain", f"{R}/cls", "--ig-steps", "100000000"], "--ig-steps"),
    # robustness
    ("robustness", "GAN run", ["robustness", f"{R}/gan"], "GAN run"),
    ("robustness", "zero", ["robustness", f"{R}/cls", "--limit", "0"], "--limit"),
    ("robustness", "zero", ["robustness", f"{R}/cls", "--batch-size", "0"], "--batch-size"),
    ("robustness", "unknown name", ["robustness", f"{R}/cls", "--corruptions", "fog"], "fog"),
    ("robustness", "huge", ["robustness", f"{R}/cls", "--severity", "9"], "severit"),
    ("robustness", "NaN", ["robustness", f"{R}/cls", "--eps", "nan"], "ε nan"),
    ("robustness", "NaN", ["robustness", f"{R}/cls", "--pgd-step-size", "nan"], "finite"),
    # report
    ("report", "missing run", ["report", f"{R}/nosuch"], "not found"),
    ("report", "empty run", ["report", f"{R}/empty"], "not a run directory"),
    ("report", "GAN run", ["report", f"{R}/gan"], "GAN run"),
    # compare
    ("compare", "missing run", ["compare", f"{R}/cls", f"{R}/nosuch"], "not found"),
    ("compare", "empty run", ["compare", f"{R}/cls", f"{R}/empty"], "no finished epoch"),
    ("compare", "GAN run", ["compare", f"{R}/cls", f"{R}/gan"], "GAN run"),
    ("compare", "damaged metrics", ["compare", f"{R}/cls", f"{R}/listy"], "damaged"),
    ("compare", "wrong type", ["compare", f"{R}/cls", "--out", f"{R}/empty"], "folder"),
    # sweep
    ("sweep", "unknown name", ["sweep", "--space", "nosuch"], "nosuch"),
    ("sweep", "zero", ["sweep", "--space", f"{R}/space.yaml", "--trials", "0"], "--trials"),
    # export
    ("export", "missing run", ["export", f"{R}/nosuch"], "not found"),
    ("export", "GAN run", ["export", f"{R}/gan"], "GAN run"),
    ("export", "corrupt checkpoint", ["export", f"{R}/corrupt"], "corrupt"),
    ("export", "unknown name", ["export", f"{R}/cls", "--format", "tflite"], "invalid choice"),
    # verify
    ("verify", "missing file", ["verify", f"{R}/nosuch.onnx"], "not found"),
    ("verify", "wrong type", ["verify", f"{R}/space.yaml"], ".onnx"),
    # lr-find
    ("lr-find", "unknown name", ["lr-find", "--model", "lenet"], "did you mean 'lenet5'"),
    ("lr-find", "unknown key", ["lr-find", "--set", "optim.lrr=1"], "did you mean 'optim.lr'"),
    ("lr-find", "zero", ["lr-find", *SYN, "--steps", "0"], "steps"),
    ("lr-find", "NaN", ["lr-find", *SYN, "--start-lr", "nan"], "lr"),
    # data check
    ("data", "missing file", ["data", "check", f"{R}/nosuch"], "nosuch"),
    ("data", "wrong type", ["data", "check", f"{R}/space.yaml"], "folder"),
    # serve
    ("serve", "missing run", ["serve", f"{R}/nosuch"], "not found"),
    ("serve", "GAN run", ["serve", f"{R}/gan"], "GAN run"),
    ("serve", "huge", ["serve", f"{R}/cls", "--port", "70000"], "port"),
    ("serve", "zero", ["serve", f"{R}/cls", "--max-batch", "0"], "max-batch"),
    # gan
    ("gan", "unknown name", ["gan", "--dataset", "nosuch"], "unknown dataset"),
    ("gan", "negative", ["gan", "--dataset", "synthetic", "--epochs", "-1"], "epochs"),
    ("gan", "unknown key", ["gan", "--set", "gan.widht=8"], "gan.width"),
    ("gan", "missing run", ["gan", "--resume", f"{R}/nosuch"], "nosuch"),
    # generate
    ("generate", "classifier run", ["generate", f"{R}/cls"], "not a GAN run"),
    ("generate", "missing run", ["generate", f"{R}/nosuch"], "not found"),
    ("generate", "zero", ["generate", f"{R}/gan", "--n", "0"], "--n"),
    ("generate", "huge", ["generate", f"{R}/gan", "--n", "100000000"], "--n"),
    ("generate", "wrong type", ["generate", f"{R}/gan", "--out", f"{R}/x.jpg"], ".png"),
    ("generate", "NaN", ["generate", f"{R}/gan", "--truncation", "nan"], "finite"),
]

# cases that import a heavy stack (the server's) or probe a large model: `make test-slow`
SLOW = {("serve", k) for k in ("missing run", "huge", "zero")} | {("train", "input too small")}

# `make test` runs one case per command (the kind below); the rest runs in `make test-slow`
QUICK = {
    "train": "unknown key",
    "eval": "GAN run",
    "predict": "zero",
    "runs": "wrong type",
    "data": "unknown name",
    "models": "unknown name",
    "inspect": "input too small",
    "ablate": "unknown key",
    "bench": "wrong type",
    "explain": "GAN run",
    "explore": "GAN run",
    "robustness": "zero",
    "report": "GAN run",
    "compare": "GAN run",
    "sweep": "zero",
    "export": "GAN run",
    "serve": "GAN run",
    "gan": "unknown key",
    "generate": "classifier run",
    "verify": "missing file",
    "lr-find": "unknown key",
}
FIRST = {min(i for i, c in enumerate(CASES) if c[:2] == (cmd, k)) for cmd, k in QUICK.items()}

# cases whose fix belongs to another part of the code base, merged separately
PENDING: dict[tuple[str, str], str] = {}


def test_every_command_is_in_the_matrix():
    from cnnlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    assert {c for c, *_ in CASES} == set(COMMANDS)


@pytest.mark.parametrize(
    "cmd,kind,argv,words",
    [
        pytest.param(
            *c,
            id=f"{c[0]}-{c[1].replace(' ', '_')}-{i}",
            marks=(
                [pytest.mark.xfail(reason=PENDING[c[0], c[1]], strict=False)]
                if (c[0], c[1]) in PENDING
                else []
            )
            + ([pytest.mark.slow] if (c[0], c[1]) in SLOW or i not in FIRST else []),
        )  # fmt: skip
        for i, c in enumerate(CASES)
    ],
)
def test_mistake_is_one_line_exit_2(world, tmp_path, monkeypatch, capsys, cmd, kind, argv, words):
    monkeypatch.chdir(tmp_path)  # anything written to "." shows up in the snapshot
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")
    argv = [a.replace(R, str(world)) for a in argv]
    line = check_one_line_error(capsys, argv, (world, tmp_path))
    assert words.lower() in line.lower(), line


# -- damaged runs are read, not crashed on -------------------------------------------------


def test_runs_lists_gan_and_damaged_runs(world, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--runs-dir", str(world)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    for name in ("cls", "gan", "damaged", "listy", "half", "corrupt"):
        assert any(line.split("│")[1].strip() == name for line in out.splitlines() if "│" in line)


def test_runs_never_wraps_a_run_name(tmp_path, tiny_trained_run, capsys, monkeypatch):
    long = "lenet5-fashion-mnist-20261126-101500-with-a-long-tail"
    shutil.copytree(tiny_trained_run, tmp_path / long)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert long in capsys.readouterr().out


@pytest.mark.slow
def test_report_reads_a_damaged_config(world, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(world / "damaged"), "--out", str(out)]) == 0
    assert out.is_file() and "Traceback" not in capsys.readouterr().err


# -- hypothesis: numbers no command may crash on -------------------------------------------

BAD_NUMBERS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=10**7, max_value=10**12),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "", "3.5", "-0"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=BAD_NUMBERS, which=st.sampled_from(["--channels", "--input-size", "--classes"]))
def test_inspect_numbers(world, capsys, value, which):
    argv = ["inspect", "lenet5", which, str(value)]
    check_one_line_error(capsys, argv, (world,))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(st.integers(max_value=0), st.sampled_from(["nan", "x", "1.5", ""])))
def test_predict_top_numbers(world, capsys, value):
    argv = ["predict", str(world / "cls"), str(world / "ok.png"), "--top", str(value)]
    check_one_line_error(capsys, argv, (world,))


# -- one unreadable file among several ------------------------------------------------------


def test_predict_answers_the_readable_files(world, capsys):
    ok, bad = str(world / "ok.png"), str(world / "bad.png")
    assert main(["predict", str(world / "cls"), ok, bad, ok]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [ok, ok]
    assert err.strip().splitlines() == [err.strip()] and "bad.png" in err


@pytest.mark.slow
def test_no_file_written_to_the_working_folder(world, tmp_path, monkeypatch, capsys):
    here, runs = tmp_path / "here", tmp_path / "runs"
    here.mkdir()
    shutil.copytree(world / "cls", runs / "cls")
    gan = real_gan(runs)
    monkeypatch.chdir(here)
    for _ in range(2):
        assert main(["compare", str(runs / "cls"), str(runs / "cls")]) == 0
        assert main(["generate", str(gan), "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert not list(here.iterdir())
    assert (runs / "compare.html").is_file() and (runs / "compare-2.html").is_file()
    assert (gan / "grid.png").is_file() and (gan / "grid-2.png").is_file()
    assert "compare-2.html" in out and "grid-2.png" in out
    assert main(["compare", str(runs / "cls"), "--out", str(runs / "compare.html")]) == 0
    assert "replaced the earlier compare.html" in capsys.readouterr().out


@pytest.mark.slow
def test_api_and_cli_evaluate_alike(world, capsys):
    assert main(["eval", str(world / "cls"), "--json"]) == 0
    import json

    cli = json.loads(capsys.readouterr().out)
    assert cli["accuracy"] == cnnlab.evaluate(world / "cls", save=False)["accuracy"]
    for f in ("eval.json", "confusion.png"):
        os.unlink(world / "cls" / f)
