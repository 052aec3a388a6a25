"""Every command that reads a run works on an image-folder run as on a built-in dataset:
trained once on a small generated folder (colour JPEGs, grey and RGBA PNGs, one broken
file), then eval, predict, explain, robustness, report, export and serve read it, and
ablate and sweep train on the folder."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main

from .test_folder import colour_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder-cmds")
    root, rng = base / "imgs", np.random.default_rng(0)
    for ci, c in enumerate(("cat", "dog", "fox")):
        (root / c).mkdir(parents=True)
        for i in range(20):
            im = Image.fromarray(colour_image(ci, rng, (36, 30)))
            im = [im, im.convert("RGBA"), im.convert("L")][i % 3]
            im.save(root / c / f"{i}.{'jpg' if i % 3 == 0 else 'png'}")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG broken")
    runs = base / "runs"
    argv = ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "2",
            "--name", "f", "--runs-dir", str(runs), "--quiet"]  # fmt: skip
    for o in ("train.device=cpu", "data.size=24", "train.batch_size=16", "model.name=mlp"):
        argv += ["--set", o]
    assert main(argv) == 0
    return base, root, runs / "f"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")


def test_the_run_records_its_split(folder_run):
    _, _, run = folder_run
    rec = json.loads((run / "split.json").read_text())
    assert rec["skipped"] == ["dog/broken.png"] and rec["decode"]["size"] == 24
    assert sum(rec["counts"].values()) == 60


@pytest.mark.parametrize(
    "argv,outputs",
    [
        (["eval", "{run}", "--json"], ["eval.json"]),
        (["predict", "{run}", "{root}/cat/1.png", "{root}/fox/0.jpg"], []),
        (["explain", "{run}", "-n", "2", "--methods", "saliency"], ["explain.html"]),
        (["robustness", "{run}", "--limit", "12", "--severity", "1"], ["robustness.json"]),
        (["report", "{run}"], ["report.html"]),
        (["export", "{run}", "--format", "onnx"], ["export/model.onnx"]),
    ],
    ids=["eval", "predict", "explain", "robustness", "report", "export"],
)
def test_commands_read_a_folder_run(folder_run, capsys, argv, outputs):
    _, root, run = folder_run
    assert main([a.format(run=run, root=root) for a in argv]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for o in outputs:
        assert (run / o).is_file(), o
    if argv[0] == "eval":
        ev = json.loads(out)
        hist = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        key = "val_acc_smooth" if "val_acc_smooth" in hist[-1] else "val_acc"  # train.select
        best = max((h for h in hist if key in h), key=lambda h: h[key])
        assert ev["n"] == 12 and ev["accuracy"] == pytest.approx(best["test_acc"])
    if argv[0] == "predict":
        assert "cat/1.png:" in out and "fox/0.jpg:" in out


def test_serve_answers_for_a_folder_run(folder_run):
    from fastapi.testclient import TestClient

    from cnnlab.deploy.serve import ServeConfig, create_app, open_backend

    _, root, run = folder_run
    app = create_app(open_backend(run, "torch"), ServeConfig())
    buf = io.BytesIO((root / "fox" / "1.png").read_bytes())
    with TestClient(app) as c:
        r = c.post("/v1/predict", files={"f": ("x.png", buf)})
        assert r.status_code == 200, r.text
        assert c.get("/v1/model").json()["classes"] == ["cat", "dog", "fox"]


def test_ablate_and_sweep_train_on_the_folder(folder_run, tmp_path):
    _, root, _ = folder_run
    common = ["--data-dir", str(root), "--runs-dir", str(tmp_path)]
    sets = ["data.name=imagefolder", "train.device=cpu", "data.size=24", "model.name=mlp"]
    s = [a for o in sets for a in ("--set", o)]
    assert main(["ablate", *s, *common, "--vary", "optim.lr=0.01,0.003", "--epochs", "1"]) == 0
    study = next(tmp_path.glob("ablate-*"))
    assert len(list(study.glob("*/split.json"))) == 2
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    argv = ["sweep", *s, "--set", "train.epochs=1", *common, "--space", str(space),
            "--trials", "2", "--study", "sw", "--no-baseline"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "sw" / "best.yaml").is_file()


def test_eval_on_a_folder_that_lost_test_files_is_one_line(folder_run, tmp_path, capsys):
    import shutil

    _, root, run = folder_run
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    gone = json.loads((run / "split.json").read_text())["parts"]["test"][0][0]
    (moved / gone).unlink()
    assert main(["eval", str(run), "--data-dir", str(moved)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error: imagefolder: 1 file(s)")
    assert gone in err[0]
    assert main(["eval", str(run), "--data-dir", str(root), "--json"]) == 0  # the original
