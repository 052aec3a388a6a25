"""metrics.jsonl damaged by hand or by a disk, and run names that must stay inside
--runs-dir."""

from __future__ import annotations

import json

import pytest

from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.runs.layout import new_run_dir, read_metrics, run_config, run_kind, scan_metrics

GOOD = {"epoch": 1, "train_loss": 0.5, "test_acc": 0.75, "test_loss": 0.6, "seconds": 1.0}
DAMAGED = [b"123", b'{"epoch": "x"}', b"\xff\xfe\xfd not utf-8", b'{"epoch": 2, "test_acc": "x"}',
           b"[1, 2]", b'{"epoch": 3, "tr']  # fmt: skip


def test_damaged_lines_are_left_out_and_counted(tmp_path):
    lines = [json.dumps(GOOD).encode(), *DAMAGED, json.dumps(dict(GOOD, epoch=2)).encode()]
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows, bad = scan_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and bad == len(DAMAGED)
    assert read_metrics(tmp_path) == rows
    (tmp_path / "config.yaml").write_text("model: {name: lenet5}\ntrain: {epochs: 3}\n")
    assert main(["runs", "--runs-dir", str(tmp_path.parent)]) == 0  # no traceback


@pytest.mark.parametrize(
    "name", ["../../x", "/abs/x", "a\nb", "a" * 300, "a/../../b", ".", "a b", "x/", ""]
)
def test_a_run_name_must_stay_inside_the_runs_dir(tmp_path, name, capsys):
    runs = tmp_path / "inside" / "runs"
    with pytest.raises(ConfigError):
        new_run_dir(runs, name or " ", "stem")
    # and from the command line: one line, exit 2, nothing written anywhere
    rc = main(["train", "--name", name or " ", "--runs-dir", str(runs), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cnnlab: error: run") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_ordinary_names_are_fine(tmp_path):
    for name in ("fm", "lenet5-fashion.v2", "sweeps/trial-003", "a_b+c=d@e"):
        assert new_run_dir(tmp_path, name, "stem") == tmp_path / name


@pytest.mark.parametrize(
    "config, metrics, kind",
    [
        ("model: {name: lenet5}\n", {"epoch": 1, "test_acc": 0.5}, "classify"),
        ("model: {name: dcgan-conditional}\n", {"epoch": 1}, "gan"),
        ("model: {name: x}\ntrain: {task: GAN}\n", {"epoch": 1}, "gan"),
        ("model: [oops\n", {"epoch": 1, "loss_d": 1.2}, "gan"),  # damaged config: the metrics
        ("model: {name: lenet5}\ntrain: {task: semi}\n", {"epoch": 1}, "classify"),
    ],
)
def test_a_run_directory_tells_its_kind(tmp_path, config, metrics, kind):
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    assert run_kind(tmp_path) == kind
    assert run_kind(tmp_path, run_config(tmp_path), read_metrics(tmp_path)) == kind


def test_a_checkpoint_tells_its_kind():
    assert run_kind({"kind": "gan", "gan": {}}) == "gan"
    assert run_kind({"kind": "classify"}) == "classify"
    assert run_kind({"model": {"name": "lenet5"}}) == "classify"  # from before kinds were kept
