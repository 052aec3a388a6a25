"""The head of a result file for the benchmark scripts here: ``record(kind, script, argv,
seeds, data_dir)`` — kind, the command (with the data folder written ``DATA``, so no
path of this machine lands in the results), commit, date, machine, device, torch and
Python versions, seeds — and writing it (``write_result``)."""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path

from cnnlab.runtime.device import available_cores
from cnnlab.studies.records import result_record

ROOT = Path(__file__).resolve().parent.parent


def record(kind: str, script: str, argv, seeds, data_dir: str | None = None, **fields) -> dict:
    """Call it when the measurement starts: the commit is the code that runs."""
    args = [("DATA" if data_dir and a == str(data_dir) else a) for a in
            (sys.argv[1:] if argv is None else argv)]  # fmt: skip
    cmd = " ".join([f"python benchmarks/{script}", *args])
    return {**result_record(kind, cmd, seeds), "python": platform.python_version(), **fields}


def result_path(out: str | None, name: str) -> Path:
    """``--out`` or benchmarks/results/<date>-cpu<cores>/<name>."""
    folder = f"{date.today().isoformat()}-cpu{available_cores()}"
    return Path(out) if out else ROOT / "benchmarks" / "results" / folder / name


def write_result(result: dict, out: str | None, name: str) -> Path:
    """Write ``result`` as JSON to ``--out`` or benchmarks/results/<date>-cpu<cores>/<name>."""
    path = result_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return path
