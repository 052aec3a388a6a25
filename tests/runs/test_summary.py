"""One definition of a run's selected epoch and time, used by `runs`, `compare`, the report
and the training line."""

from __future__ import annotations

import json

from cnnlab.cli import main
from cnnlab.report.html import render_compare
from cnnlab.runs.summary import best_epoch, run_seconds, time_text

# test accuracy peaks at epoch 2; validation picks epoch 3 (first of two equal maxima)
HIST = [
    dict(epoch=1, train_acc=0.5, train_loss=1.0, val_acc=0.50, val_loss=1.0, test_acc=0.40,
         test_loss=1.1, seconds=1.25, eval_seconds=0.5),
    dict(epoch=2, train_acc=0.6, train_loss=0.8, val_acc=0.60, val_loss=0.8, test_acc=0.95,
         test_loss=0.9, seconds=1.5, eval_seconds=0.25),
    dict(epoch=3, train_acc=0.7, train_loss=0.6, val_acc=0.80, val_loss=0.6, test_acc=0.70,
         test_loss=0.7, seconds=2.0, eval_seconds=0.25),
    dict(epoch=4, train_acc=0.8, train_loss=0.5, val_acc=0.80, val_loss=0.6, test_acc=0.75,
         test_loss=0.7, seconds=2.0, eval_seconds=0.5),
]  # fmt: skip


def write_run(folder, hist):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model:\n  name: lenet5\ndata:\n  name: synthetic\n")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in hist))
    return folder


def test_best_epoch_is_chosen_on_validation_never_on_test():
    assert best_epoch(HIST)["epoch"] == 3  # not 2 (highest test) nor 4 (a later tie)
    no_val = [{k: v for k, v in m.items() if not k.startswith("val_")} for m in HIST]
    assert best_epoch(no_val) is None


def test_time_is_training_and_wall_seconds():
    assert run_seconds(HIST) == (6.75, 8.25)
    assert time_text(HIST) == "6.8 s training, 8.2 s wall"
    assert run_seconds([]) == (0, 0)


def test_compare_shows_the_selected_and_last_epoch(tmp_path):
    a = write_run(tmp_path / "a", HIST)
    _, rows, header, _ = render_compare([a])
    r = dict(zip(header, rows[0], strict=True))
    assert r["best epoch (by val acc)"] == 3
    assert (r["val acc (best)"], r["test acc (best)"]) == ("0.8000", "0.7000")
    assert r["test acc (last)"] == "0.7500"
    assert (r["train s"], r["wall s"]) == ("6.8", "8.2")
    assert "0.9500" not in rows[0]  # the test maximum is shown nowhere
    assert not any("best test" in h for h in header)


def test_runs_table_uses_the_same_definitions(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", HIST)
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    for want in ("train s", "wall s", "test acc (best)", "0.7000", "0.7500", "6.8", "8.2"):
        assert want in out, want
    assert "0.9500" not in out


def test_without_a_validation_split_no_epoch_is_selected(tmp_path):
    hist = [{k: v for k, v in m.items() if not k.startswith("val_")} for m in HIST]
    a = write_run(tmp_path / "a", hist)
    _, rows, header, _ = render_compare([a])
    r = dict(zip(header, rows[0], strict=True))
    assert r["best epoch (by val acc)"].startswith("–") and r["test acc (best)"] == "–"
    assert r["test acc (last)"] == "0.7500"
