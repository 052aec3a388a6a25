"""The CLI end to end: outputs, exit codes, one-line errors. Commands run in-process
through ``cli.main`` (what ``python -m cnnlab`` calls: parsing, the command, the error
handler), with their stdout/stderr captured; start-up itself (what is imported, how fast)
is checked in real subprocesses."""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import make_idx_dataset

FAST = [
    "--dataset",
    "synthetic",
    "--set",
    "data.num_train=128",
    "--set",
    "data.num_test=64",
    "--batch-size",
    "32",
    "--device",
    "cpu",
]


def cnnlab(*args, cwd=None, env=None):
    """``cnnlab ARGS`` in this process: a CompletedProcess with its exit code and output."""
    from cnnlab.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse's own exits (--help, usage errors)
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def cnnlab_process(*args):
    """``python -m cnnlab ARGS`` as a separate process (start-up checks)."""
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_user_error(r, *needles):
    assert r.returncode == 2, r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 or r.stderr.startswith("usage:"), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    r = cnnlab("train", *FAST, "--epochs", "2", "--name", "t", "--runs-dir", d)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    return d / "t"


def test_train_eval_predict_runs(trained, tmp_path):
    r = cnnlab("eval", trained, "--json")
    assert r.returncode == 0, r.stderr
    assert '"accuracy"' in r.stdout and (trained / "confusion.png").is_file()
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(
        img
    )
    r = cnnlab("predict", trained, img)
    assert r.returncode == 0, r.stderr
    assert "x.png: class" in r.stdout
    r = cnnlab("runs", "--runs-dir", trained.parent)
    assert r.returncode == 0 and "t" in r.stdout and "synthetic" in r.stdout


def test_models_and_data_listings():
    r = cnnlab("models")
    assert r.returncode == 0 and "61,706" in r.stdout
    r = cnnlab("data")
    assert r.returncode == 0 and "mnist-sample" in r.stdout and "fashion-mnist" in r.stdout


def test_unknown_model_dataset_option(tmp_path):
    assert_user_error(
        cnnlab("train", "--model", "lenet9", "--runs-dir", tmp_path), "unknown model 'lenet9'"
    )
    assert_user_error(
        cnnlab("train", "--dataset", "imagenet22k", "--runs-dir", tmp_path), "unknown dataset"
    )
    assert_user_error(
        cnnlab("train", "--set", "optim.momentun=0.9", "--runs-dir", tmp_path), "optim keys"
    )
    assert_user_error(
        cnnlab("train", "--set", "model.activation=rellu", "--runs-dir", tmp_path), "relu"
    )
    assert not list(tmp_path.iterdir())  # nothing partial left


def test_corrupt_and_truncated_dataset(tmp_path):
    d = make_idx_dataset(tmp_path / "fashion-mnist")
    f = d / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    runs = tmp_path / "runs"
    assert_user_error(
        cnnlab("train", "--dataset", "fashion-mnist", "--data-dir", tmp_path, "--runs-dir", runs),
        "train-images-idx3-ubyte.gz",
    )
    assert not runs.exists()


def test_checksum_mismatch_via_mirror(tmp_path):
    import http.server
    import threading
    from functools import partial

    srv = tmp_path / "srv"
    make_idx_dataset(srv)  # not the real files: checksums cannot match

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a, **k):  # the server shares the command's stderr here
            pass

    h = partial(Quiet, directory=str(srv))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        r = cnnlab(
            "data",
            "--download",
            "mnist",
            "--data-dir",
            tmp_path / "dl",
            env={"CNNLAB_MIRRORS": f"http://127.0.0.1:{httpd.server_address[1]}/"},
        )
    finally:
        httpd.shutdown()
    assert_user_error(r, "checksum mismatch", "put train-images-idx3-ubyte.gz")
    assert not any(p.is_file() for p in (tmp_path / "dl").rglob("*"))


def test_missing_run_and_bad_image(trained, tmp_path):
    assert_user_error(cnnlab("eval", tmp_path / "nope"), "not found")
    assert_user_error(cnnlab("predict", tmp_path / "nope", "x.png"), "not found")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert_user_error(cnnlab("predict", trained, bad), "bad.png", "not a readable image")
    assert_user_error(cnnlab("predict", trained, tmp_path / "missing.png"), "missing.png")
    empty_run = tmp_path / "emptyrun"
    empty_run.mkdir()
    assert_user_error(cnnlab("eval", empty_run), "no checkpoint")


def test_print_config():
    r = cnnlab("train", "--print-config", "--set", "model.activation=elu", "--epochs", "3")
    assert r.returncode == 0 and "activation: elu" in r.stdout and "epochs: 3" in r.stdout


def test_recipe_by_name_or_path():
    r = cnnlab("train", "--recipe", "lenet5-mnist", "--print-config")
    assert r.returncode == 0 and "name: mnist" in r.stdout, r.stderr
    # the old path spelling still resolves, through the name of the shipped file
    r2 = cnnlab("train", "--recipe", "recipes/lenet5-mnist.yaml", "--print-config")
    assert r2.returncode == 0 and r2.stdout == r.stdout, r2.stderr
    assert_user_error(cnnlab("train", "--recipe", "lenet7", "--print-config"), "lenet5-mnist")


def test_help_lists_shipped_recipes_and_registries():
    r = cnnlab("train", "--help")
    assert r.returncode == 0 and "lenet5-fashion-mnist" in r.stdout and "lenet5-mnist" in r.stdout
    assert "space-lenet5" not in r.stdout  # search spaces are listed by `sweep --space`
    assert "space-lenet5" in cnnlab("sweep", "--help").stdout
    assert "gradcam" in cnnlab("explain", "--help").stdout
    assert "gaussian_noise" in cnnlab("robustness", "--help").stdout


# Parsing imports no torch: the listings in help texts are made when help is printed.
START = """
import sys
from cnnlab.cli import build_parser, main
for argv in (["--version"], ["--help"], ["train", "--help"], ["bench", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
build_parser().parse_args(["train", "--epochs", "1", "--set", "train.device=cpu"])
print("HEAVY", sorted(m for m in ("torch", "numpy", "torchvision") if m in sys.modules))
"""


def test_start_imports_no_torch():
    r = subprocess.run([sys.executable, "-c", START], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-500:]
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cnnlab", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.startswith("cnnlab ")
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if "|" in ln}
    assert "cnnlab.cli" in imported and not imported & {"torch", "numpy"}


def test_start_is_fast():
    """`cnnlab --version` and `--help` import no torch (what made start-up slow), measured
    by what the process imported and the CPU time it used, not by a wall clock that the
    machine's load moves."""
    import resource

    code = (
        "import sys; from cnnlab.cli import main\n"
        "for a in (['--version'], ['--help']):\n"
        "    try: main(a)\n"
        "    except SystemExit: pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules, file=sys.stderr)"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0 and r.stderr.split()[-2:] == ["False", "False"], r.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.0, f"`cnnlab --version` used {cpu:.2f} s of CPU"


def test_progress_plain_when_piped_quiet_when_quick(monkeypatch):
    import io

    from cnnlab import progress as pg

    monkeypatch.delenv("CNNLAB_PROGRESS", raising=False)
    out = io.StringIO()  # not a terminal: plain lines
    assert pg.mode(out) == "plain"
    assert list(pg.track(range(3), "quick", stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""  # a quick step says nothing
    monkeypatch.setattr(pg, "PLAIN_AFTER_S", 0.0)
    monkeypatch.setattr(pg, "PLAIN_EVERY_S", 0.0)
    with pg.progress("robustness: fog", 4, stream=out) as bar:
        for _ in range(4):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("robustness: fog: 1/4")
    assert pg.eta_text(1, 4, 10.0) == ", about 30s left"
    assert lines[-1].startswith("robustness: fog: 4/4 done in")
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")
    assert pg.mode(out) == "off"


def test_model_names_lower_case_data_dir_absolute(tmp_path, monkeypatch):
    from cnnlab.config import Config, apply_overrides

    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(Config(), ["model.name=LeNet5", "data.data_dir=data"])
    assert cfg.model.name == "lenet5"
    assert cfg.data.data_dir == str(tmp_path / "data")


def test_image_too_large_states_the_limit(tmp_path):
    from cnnlab.data.images import load_image
    from cnnlab.errors import CnnlabError

    p = tmp_path / "big.png"
    Image.new("L", (9000, 9000)).save(p)
    with pytest.raises(CnnlabError, match=r"the limit is 67,108,864 pixels \(8192×8192\)"):
        load_image(p, 1, 28)
