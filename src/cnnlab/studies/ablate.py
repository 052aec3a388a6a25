"""Ablation studies: train every combination of the varied choices × seeds, then compare.

A study is one directory, ``<runs_dir>/<study>/``, holding one run directory per
(combination, seed) and the summary: ``results.csv``, ``results.json``, ``results.md``
(mean ± std over seeds of the final test accuracy, final train loss, seconds) and
``curves.png`` (test accuracy and train loss per epoch, seed-averaged, one line per
combination). Re-running the same command skips the runs whose ``metrics.jsonl`` already
has every epoch and resumes the interrupted ones from their last checkpoint.

Runs are sequential in this process. With several CUDA devices (and ``train.device`` left
at auto/cuda) the runs are spread round-robin over one worker process per device, each
pinned to its GPU (``train.device=cuda:N``); on one GPU or a CPU they stay sequential,
since concurrent runs would only compete for the same device.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import multiprocessing as mp
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.config import Config, parse_scalar, set_value
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import ConfigError
from cnnlab.figures import png_bytes, pyplot
from cnnlab.models import create_model
from cnnlab.progress import progress
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.layout import read_metrics
from cnnlab.train.api import build_config, fit
from cnnlab.train.validate import validate


def parse_vary(items: list[str] | dict) -> dict[str, list]:
    """``["model.activation=relu,tanh", ...]`` → {"model.activation": ["relu", "tanh"]}."""
    if isinstance(items, dict):
        out = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in items.items()}
    else:
        out = {}
        for it in items:
            if "=" not in it:
                raise ConfigError(
                    f"--vary needs key=v1,v2,... got {it!r} (e.g. --vary optim.name=sgd,adam)"
                )
            k, v = it.split("=", 1)
            k = k.strip()
            if k in out:
                raise ConfigError(f"--vary {k} given twice; list all its values in one flag")
            vals = [parse_scalar(x.strip()) for x in v.split(",") if x.strip()]
            out[k] = vals
    for k, vals in out.items():
        if not vals:
            raise ConfigError(f"--vary {k} has no values (e.g. --vary {k}=a,b)")
        if len({str(v) for v in vals}) != len(vals):
            raise ConfigError(f"--vary {k} repeats a value: {vals}")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def combo_label(combo: dict) -> str:
    """{"model.activation": "relu", "optim.name": "sgd"} → "activation=relu optim=sgd"."""
    parts = []
    for k, v in combo.items():
        sec, _, key = k.partition(".")
        short = sec if key == "name" else key.split(".")[-1]
        parts.append(f"{short}={v}")
    return " ".join(parts)


@dataclass
class RunSpec:
    combo: dict
    seed: int
    name: str
    cfg: Config

    @property
    def label(self) -> str:
        return combo_label(self.combo)


@dataclass
class Study:
    dir: Path
    vary: dict
    runs: list[RunSpec] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per combination
    skipped: int = 0
    trained: int = 0

    def table_rows(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            out.append(
                [
                    r["label"],
                    str(r["seeds"]),
                    f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}",
                    f"{r['train_loss_mean']:.4f} ± {r['train_loss_std']:.4f}",
                    f"{r['seconds_mean']:.1f}",
                ]
            )
        return out


HEADER = ["combination", "seeds", "test acc (mean ± std)", "final train loss", "s/run"]


def plan(
    recipe=None,
    vary: list[str] | dict | None = None,
    epochs: int | None = None,
    seeds: int = 1,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
    study: str | None = None,
    runs_dir: str | None = None,
) -> Study:
    """Resolve and validate every run's config before any training starts."""
    grid = parse_vary(vary or [])
    if not grid:
        raise ConfigError("nothing to vary; add --vary key=v1,v2 (e.g. model.activation=relu,tanh)")
    if seeds < 1:
        raise ConfigError("--seeds must be ≥ 1")
    base = build_config(None, recipe, overrides, epochs=epochs, data_dir=data_dir)
    if runs_dir:
        base.run.runs_dir = runs_dir
    if study is None:
        stem = Path(str(recipe)).stem if recipe else f"{base.model.name}-{base.data.name}"
        study = "ablate-" + stem + "-" + "-".join(k.split(".")[-1] for k in grid)
    sdir = Path(base.run.runs_dir) / _slug(study)
    st = Study(sdir, grid)
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        for seed in range(seeds):
            cfg = base.copy()
            for k, v in combo.items():
                set_value(cfg, k, v)
            cfg.train.seed = seed
            name = _slug("__".join(f"{k}={v}" for k, v in combo.items()) + f"__seed{seed}")
            cfg.run.runs_dir = str(sdir)
            cfg.run.name = name
            validate(cfg)
            st.runs.append(RunSpec(combo, seed, name, cfg))
    _check_models(st.runs)
    return st


def _check_models(runs: list[RunSpec]) -> None:
    """Build each distinct model once on the meta device (no memory, no compute) so a bad
    option value (``activation=rellu``) fails now, not after hours of other runs."""
    seen = set()
    for s in runs:
        c = s.cfg.model
        key = json.dumps([c.name, c.args], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        args = {k: v for k, v in c.args.items() if k != "weights"}  # a file is read at train time
        with torch.device("meta"):
            create_model(c.name, **args)


def run_state(run_dir: Path, epochs: int) -> str:
    """'done' (every epoch logged), 'partial' (has a checkpoint to resume) or 'new'."""
    if not run_dir.exists():
        return "new"
    ms = read_metrics(run_dir)
    if ms and max(m.get("epoch", 0) for m in ms) >= epochs:
        return "done"
    if (run_dir / "checkpoints" / "last.safetensors").is_file():
        return "partial"
    return "new"


def _run_one(spec: RunSpec, quiet: bool, dataset=None) -> None:
    d = Path(spec.cfg.run.runs_dir) / spec.name
    state = run_state(d, spec.cfg.train.epochs)
    if state == "done":
        return
    if state == "partial":
        fit(resume=d, quiet=quiet, overrides={"train.epochs": spec.cfg.train.epochs})
        return
    if d.exists():  # started but died before its first checkpoint: start it over
        shutil.rmtree(d)
    fit(spec.cfg, dataset=dataset, quiet=quiet)


def _worker(specs: list[RunSpec], device: str, quiet: bool) -> None:
    for s in specs:
        s.cfg.train.device = device
        _run_one(s, quiet)


def _cuda_devices(cfg: Config) -> list[str]:
    dev = cfg.train.device.lower()
    if dev not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n > 1 else []


def execute(st: Study, quiet: bool = True, log=print) -> Study:
    st.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        st.dir / "study.json",
        json.dumps({"vary": st.vary, "runs": [s.name for s in st.runs]}, indent=1) + "\n",
    )
    pending = [s for s in st.runs if run_state(st.dir / s.name, s.cfg.train.epochs) != "done"]
    st.skipped = len(st.runs) - len(pending)
    if st.skipped:
        log(f"{st.skipped} of {len(st.runs)} runs already finished: skipped")
    devices = _cuda_devices(st.runs[0].cfg) if pending else []
    if len(devices) > 1:
        ctx = mp.get_context("spawn")
        procs = []
        for i, dev in enumerate(devices):
            part = pending[i :: len(devices)]
            if part:
                p = ctx.Process(target=_worker, args=(part, dev, True))
                p.start()
                procs.append(p)
        log(f"{len(pending)} runs on {len(procs)} GPUs in parallel")
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise ConfigError(f"{len(failed)} GPU worker(s) failed; re-run to resume the rest")
    else:
        datasets: dict = {}
        with progress("ablate", len(pending), enabled=quiet) as bar:
            for i, s in enumerate(pending, 1):
                log(f"[{i}/{len(pending)}] {s.label} seed {s.seed}")
                bar.describe(f"ablate: {s.label} seed {s.seed}")
                key = json.dumps(
                    [s.cfg.data.name, s.cfg.data.data_dir, s.cfg.data.args], default=str
                )
                if key not in datasets:  # one load per distinct data config, shared across runs
                    c = s.cfg.data
                    datasets[key] = load_dataset(c.name, c.data_dir, c.download, **c.args)
                _run_one(s, quiet, datasets[key])
                bar.advance()
                ms = read_metrics(st.dir / s.name)
                if ms:
                    log(
                        f"    test acc {ms[-1]['test_acc']:.4f}, train loss {ms[-1]['train_loss']:.4f}"
                    )
    st.trained = len(pending)
    summarize(st)
    return st


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))  # sample std


def summarize(st: Study) -> list[dict]:
    groups: dict[str, list[tuple[RunSpec, list[dict]]]] = {}
    for s in st.runs:
        groups.setdefault(s.label, []).append((s, read_metrics(st.dir / s.name)))
    rows = []
    for label, items in groups.items():
        done = [(s, ms) for s, ms in items if ms]
        if not done:
            continue
        acc = [ms[-1]["test_acc"] for _, ms in done]
        loss = [ms[-1]["train_loss"] for _, ms in done]
        secs = [sum(m["seconds"] + m.get("eval_seconds", 0.0) for m in ms) for _, ms in done]
        n_ep = min(len(ms) for _, ms in done)
        curves = {
            k: [sum(ms[e][k] for _, ms in done) / len(done) for e in range(n_ep)]
            for k in ("test_acc", "train_loss")
        }
        am, asd = _mean_std(acc)
        lm, lsd = _mean_std(loss)
        sm, _ = _mean_std(secs)
        rows.append(
            {
                "label": label,
                **{k: str(v) for k, v in done[0][0].combo.items()},
                "seeds": len(done),
                "epochs": n_ep,
                "test_acc_mean": am,
                "test_acc_std": asd,
                "train_loss_mean": lm,
                "train_loss_std": lsd,
                "seconds_mean": sm,
                "test_acc_per_seed": acc,
                "curves": curves,
            }
        )
    st.rows = rows
    _write_outputs(st)
    return rows


def _write_outputs(st: Study) -> None:
    rows = st.rows
    keys = list(st.vary)
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [
        "seeds",
        "epochs",
        "test_acc_mean",
        "test_acc_std",
        "train_loss_mean",
        "train_loss_std",
        "seconds_mean",
    ]
    w.writerow(keys + cols)
    for r in rows:
        w.writerow([r.get(k, "") for k in keys] + [r[c] for c in cols])
    atomic_write_text(st.dir / "results.csv", buf.getvalue())
    atomic_write_text(st.dir / "results.json", json.dumps(rows, indent=1) + "\n")
    md = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in st.table_rows()]
    atomic_write_text(st.dir / "results.md", "\n".join(md) + "\n")
    if rows:
        atomic_write_bytes(st.dir / "curves.png", _plot(rows))


def _plot(rows: list[dict]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        ep = list(range(1, len(r["curves"]["test_acc"]) + 1))
        a1.plot(ep, r["curves"]["test_acc"], marker="o", label=f"{r['label']} (n={r['seeds']})")
        a2.plot(ep, r["curves"]["train_loss"], marker="o", label=r["label"])
    a1.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy (mean over seeds)")
    a2.set(xlabel="epoch", ylabel="train loss", title="train loss (mean over seeds)")
    a1.legend(fontsize=7)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    return png_bytes(fig, dpi=110, tight_layout=True)


def ablate(recipe=None, *, quiet: bool = True, log=print, **plan_args) -> Study:
    """Plan (``plan_args``: :func:`plan`'s arguments), train what is missing, summarise.
    Returns the Study (dir, rows)."""
    t0 = time.perf_counter()
    st = plan(recipe, **plan_args)
    seeds = len({s.seed for s in st.runs})
    log(
        f"study {st.dir}: {len(st.runs)} runs ({len(st.runs) // seeds} combinations × {seeds} seeds)"
    )
    execute(st, quiet=quiet, log=log)
    log(f"done in {time.perf_counter() - t0:.0f}s")
    return st
