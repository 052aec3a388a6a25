"""The run directory's layout: ``metrics.jsonl`` (one JSON line per epoch) and the list of
runs under a runs folder."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from cnnlab.errors import CnnlabError


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    return rows


def list_runs(runs_dir: str | os.PathLike = "runs") -> list[Path]:
    d = Path(runs_dir)
    if not d.is_dir():
        return []
    return sorted(
        (p for p in d.iterdir() if (p / "config.yaml").is_file()), key=lambda p: p.stat().st_mtime
    )


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, stem: str) -> Path:
    """Where a new run goes: ``runs_dir/name`` (an error if it holds a run already), or with
    no name ``runs_dir/<stem>-<date>-<time>`` (``-2``, ``-3``, ... when that exists)."""
    root = Path(runs_dir)
    d = root / (name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
    if d.exists() and any(d.iterdir()):
        if name:
            raise CnnlabError(
                f"run {d} already exists; continue it with --resume {d} or choose another --name"
            )
        i = 2
        while d.with_name(f"{d.name}-{i}").exists():
            i += 1
        d = d.with_name(f"{d.name}-{i}")
    return d
