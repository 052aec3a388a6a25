"""`cnnlab runs`: the table, and --to-csv for spreadsheets and trackers."""

import csv
import io

from cnnlab.cli import main
from cnnlab.commands.runs import HEADER
from cnnlab.runs.layout import read_metrics


def test_to_csv_holds_the_table(tiny_trained_run, tmp_path, capsys):
    runs_dir = tiny_trained_run.parent
    out = tmp_path / "runs.csv"
    assert main(["runs", "--runs-dir", str(runs_dir), "--to-csv", str(out)]) == 0
    table = capsys.readouterr().out
    rows = list(csv.reader(out.open()))
    assert rows[0] == HEADER and len(rows) >= 2
    mine = next(r for r in rows[1:] if r[0] == tiny_trained_run.name)
    last = read_metrics(tiny_trained_run)[-1]
    assert mine[HEADER.index("test acc (last)")] == f"{last['test_acc']:.4f}"
    assert tiny_trained_run.name in table  # the table is still printed
    assert main(["runs", "--runs-dir", str(runs_dir), "--to-csv", "-"]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == rows  # CSV only


def test_to_csv_unwritable_is_one_line(tiny_trained_run, tmp_path, capsys):
    bad = tmp_path / "file"
    bad.write_text("x")
    assert (
        main(["runs", "--runs-dir", str(tiny_trained_run.parent), "--to-csv", str(bad / "a.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1
