"""Loading a trained run back: its checkpoint, the model rebuilt from it, the dataset it
was trained on and a loader over those images."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import torch

from cnnlab.config import DataConfig
from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.data.loader import ResidentLoader
from cnnlab.errors import CheckpointError
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import Checkpoint, load_checkpoint
from cnnlab.runs.layout import run_kind


def resolve_checkpoint(target: str | os.PathLike, which: str = "best") -> Path:
    """A run directory or a checkpoint file → the checkpoint file to load."""
    p = Path(target)
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"run directory {str(target)!r} not found (see `cnnlab runs`)")
    ck = p / "checkpoints"
    order = [which, "last" if which == "best" else "best"]
    for name in order:
        f = ck / f"{name}.safetensors"
        if f.is_file():
            return f
    raise CheckpointError(
        f"{target}: no checkpoint in {ck} (was the run interrupted before its first epoch ended?)"
    )


def load_run_checkpoint(target, which: str = "best") -> Checkpoint:
    return load_checkpoint(resolve_checkpoint(target, which))


def model_from_checkpoint(ck: Checkpoint, device="cpu") -> torch.nn.Module:
    if not isinstance(ck.meta.get("model"), dict):
        kind = (
            "a GAN run (use `cnnlab generate`)"
            if run_kind(ck.meta) == "gan"
            else "not a classifier run"
        )
        raise CheckpointError(
            f"{ck.path}: {kind}; this command needs a classifier trained by `cnnlab train`"
        )
    args = dict(ck.meta["model"])
    model = create_model(args.pop("name"), **args)
    try:
        model.load_state_dict(ck.model_state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ck.path}: weights do not fit the model ({str(e).splitlines()[0]})"
        ) from None
    return model.to(device).eval()


def load_model(target, which: str = "best", device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the trained model of a run (or checkpoint file) in eval mode, with its metadata."""
    ck = load_run_checkpoint(target, which)
    return model_from_checkpoint(ck, device), ck.meta


def load_run_dataset(
    meta: dict,
    data_dir=None,
    name: str | None = None,
    download: bool = True,
    run_dir: str | os.PathLike | None = None,
    split: str | None = None,
):
    """The dataset a run was trained on, loaded with the loader options its config recorded
    (``name`` picks another dataset, loaded with its defaults). An image-folder run reads
    its recorded split (``run_dir/split.json``): the same test images as in training, even
    after files were added to the folder. ``split="test"``: only the test split is read
    (IDX datasets skip their training files, folders decode only their test files)."""
    cfg = meta.get("config", {}).get("data", {})
    own = meta.get("dataset") or cfg.get("name")
    name = name or own
    known = {f.name for f in dataclasses.fields(DataConfig)}  # the rest are loader options
    args = {k: v for k, v in cfg.items() if k not in known} if name == cfg.get("name") else {}
    if name == own and run_dir is not None and (Path(run_dir) / "split.json").is_file():
        args["split_file"] = str(Path(run_dir) / "split.json")
    return load_dataset(
        name, data_dir or cfg.get("data_dir"), download, split=split or "lazy", **args
    )


def run_dir_of(target) -> Path:
    """The run directory of a run directory or of one of its checkpoint files."""
    p = Path(target)
    if p.is_file():  # runs/<name>/checkpoints/x.safetensors
        return p.parent.parent
    return p


def loader_for(meta: dict, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 1000):
    """Batches of (x, y) preprocessed as the run's inputs were (normalised, resized)."""
    inp = meta["input"]
    return ResidentLoader(
        x,
        y,
        batch_size,
        inp["mean"],
        inp["std"],
        device=device,
        resize=inp["size"] if inp["size"] != x.shape[-1] else None,
        grayscale=inp.get("grayscale", False),
    )


class OpenRun(NamedTuple):
    model: torch.nn.Module
    meta: dict
    dataset: Dataset
    run_dir: Path


def open_run(
    target,
    which: str = "best",
    device="cpu",
    data_dir=None,
    dataset: str | None = None,
    download: bool = True,
    split: str | None = None,
) -> OpenRun:
    """A run ready to analyse: its model (eval mode, on ``device``), checkpoint metadata,
    the dataset it was trained on (or ``dataset``; ``split="test"``: its test split only)
    and its directory."""
    model, meta = load_model(target, which, device)
    run_dir = run_dir_of(target)
    ds = load_run_dataset(meta, data_dir, dataset, download, run_dir, split)
    return OpenRun(model, meta, ds, run_dir)
