"""The run directory's layout: ``config.yaml`` read back, ``metrics.jsonl`` (one JSON line
per epoch), what kind of run a directory or checkpoint holds, the list of runs under a runs
folder and where a new run goes (always inside the runs folder)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import yaml

from cnnlab.config import GAN_MODELS, check_run_name
from cnnlab.errors import CnnlabError, ConfigError

# fields every reader of metrics.jsonl formats as numbers
_NUMERIC = ("loss", "acc", "seconds", "lr", "images_per_s")


def _valid_row(row) -> bool:
    """An epoch line: a mapping with an integer epoch ≥ 1 and numbers where numbers go."""
    if not isinstance(row, dict):
        return False
    ep = row.get("epoch")
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
        return False
    for k, v in row.items():
        if k.endswith(_NUMERIC) and v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
    return True


def scan_metrics(run_dir: str | os.PathLike) -> tuple[list[dict], int]:
    """The valid epoch lines of ``metrics.jsonl`` and how many damaged lines were left out
    (a torn last line from a crash, bytes that are not UTF-8, a line that is not an epoch
    record such as ``123`` or ``{"epoch": "x"}``)."""
    p = Path(run_dir) / "metrics.jsonl"
    try:
        raw = p.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return [], 0
    rows, bad = [], 0
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            bad += 1
            continue
        if _valid_row(row):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The epoch lines of a run's ``metrics.jsonl`` (damaged lines are left out)."""
    return scan_metrics(run_dir)[0]


def run_config(run: str | os.PathLike) -> dict:
    """A run's ``config.yaml`` as a mapping of sections; a missing, unreadable or
    hand-damaged file reads as {} (sections that are not mappings are left out)."""
    p = Path(run) / "config.yaml"
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return {}
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items() if isinstance(k, str) and isinstance(v, dict)}


def run_kind(source: str | os.PathLike | Mapping, cfg: dict | None = None, hist=None) -> str:
    """What a run trained: ``"gan"``, or ``"classify"`` for every classifier (plain,
    adversarial, semi-supervised) — the one way to tell them apart.

    ``source``: a checkpoint's metadata, whose ``kind`` says it (a checkpoint from before
    kinds were recorded is a classifier's), or a run directory: a GAN by its
    ``config.yaml`` (``train.task: gan``, or a GAN model) or, when that is damaged, by its
    ``metrics.jsonl`` (a GAN logs ``loss_d``). ``cfg``, ``hist``: the directory's config
    and metrics where the caller has read them already."""
    if isinstance(source, Mapping):
        return str(source.get("kind", "classify"))
    cfg = run_config(source) if cfg is None else cfg
    name = str(cfg.get("model", {}).get("name", "")).strip().lower()
    task = str(cfg.get("train", {}).get("task", "")).strip().lower()
    rows = read_metrics(source) if hist is None else hist
    gan = (
        name in GAN_MODELS
        or task == "gan"
        or any(isinstance(m, dict) and "loss_d" in m for m in rows)
    )
    return "gan" if gan else "classify"


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
    if name:
        check_run_name(name)
    d = root / (name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
    real_root = os.path.realpath(root)  # links resolved: a planted runs/link -> / is no way out
    if os.path.commonpath([real_root, os.path.realpath(d)]) != real_root:
        raise ConfigError(f"run {name!r} would be outside --runs-dir {root}")
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
