"""Sampling from a trained GAN run, and scoring its generator with a judge classifier."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from cnnlab.analysis.frechet import Judge, feature_stats, frechet_from_stats
from cnnlab.config import from_dict
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CheckpointError, ConfigError, choices_msg
from cnnlab.models.gan import Generator, create_gan
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import run_kind
from cnnlab.runs.load import resolve_checkpoint


def load_generator(run: str | os.PathLike, device="cpu") -> tuple[Generator, dict]:
    """(generator in eval mode, checkpoint meta) of a GAN run or checkpoint file."""
    ck = load_checkpoint(resolve_checkpoint(run, "last"))
    if run_kind(ck.meta) != "gan" or not isinstance(ck.meta.get("gan"), dict):
        raise CheckpointError(f"{run}: not a GAN run (train one with `cnnlab gan`)")
    a = dict(ck.meta["gan"])
    G, _ = create_gan(a.pop("name"), **a)
    # the checkpoint holds the task's modules by name: G.<param>, D.<param>
    state = {k[2:]: v for k, v in ck.model_state.items() if k.startswith("G.")}
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ck.path}: weights do not fit the generator ({str(e).splitlines()[0]})"
        ) from None
    return G.to(device).eval(), ck.meta


def noise(n: int, z_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """N(0, 1) noise; with ``truncation`` t each entry clamped to [-t, t] (fewer outliers:
    more typical, less varied samples — the truncation trick, Brock et al. 2019)."""
    if truncation is not None and truncation <= 0:
        raise ConfigError(f"--truncation must be > 0, got {truncation}")
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    return z if truncation is None else z.clamp(-truncation, truncation)


@torch.no_grad()
def sample(G: Generator, z: torch.Tensor, y: torch.Tensor | None, batch: int = 500):
    """G(z, y) in batches (the generator's mode is left as it is)."""
    dev = next(G.parameters()).device
    out = [
        G(z[i : i + batch].to(dev), None if y is None else y[i : i + batch].to(dev))
        for i in range(0, z.shape[0], batch)
    ]
    return torch.cat(out)


@dataclass
class Samples:
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    nrow: int  # images per row of the grid
    what: str  # e.g. "6 samples of class 3 (class3)"


def class_index(cls: str | int, classes: list[str], num_classes: int) -> int:
    """A class by index or (case-insensitive) name."""
    key = str(cls).strip()
    if key.lstrip("-").isdigit():
        k = int(key)
        if not 0 <= k < num_classes:
            raise ConfigError(
                f"class index {k} out of range; the model has classes 0..{num_classes - 1}"
            )
        return k
    lower = [c.lower() for c in classes]
    if key.lower() not in lower:
        raise ConfigError(choices_msg("class", cls, classes))
    return lower.index(key.lower())


def generate(
    run: str | os.PathLike,
    n: int = 64,
    cls: str | int | None = None,
    seed: int = 0,
    nrow: int | None = None,
    truncation: float | None = None,
) -> Samples:
    """``n`` samples from a GAN run (a conditional one: of class ``cls``, or cycling
    through the classes, one column each). Write them with ``report.gan.grid_png``."""
    if n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {n}")
    if nrow is not None and nrow < 1:
        raise ConfigError(f"--nrow must be ≥ 1, got {nrow}")
    G, meta = load_generator(run)
    classes = list(meta.get("classes", []))
    y = None
    what = f"{n} samples"
    if cls is not None:
        if not G.num_classes:
            raise ConfigError(
                f"{run} is an unconditional GAN; --class needs a run trained with --conditional"
            )
        k = class_index(cls, classes, G.num_classes)
        y = torch.full((n,), k, dtype=torch.long)
        what = f"{n} samples of class {k} ({classes[k] if k < len(classes) else k})"
    elif G.num_classes:
        y = torch.arange(n) % G.num_classes
        nrow = nrow or G.num_classes
        what = f"{n} samples, column j = class j"
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    return Samples(sample(G, noise(n, G.z_dim, seed, truncation), y), nrow, what)


def run_dataset(meta: dict, data_dir: str | None = None):
    """The dataset a GAN run trained on, from its checkpoint's config."""
    try:
        cfg = from_dict(meta.get("config"))
        name, args, root = cfg.data.name, cfg.data.args, cfg.data.data_dir
    except ConfigError:  # a config this version cannot read: the dataset's name only
        name, args, root = meta.get("dataset"), {}, None
    return load_dataset(name, data_dir or root, False, **args)


def score_run(
    run: str | os.PathLike,
    judge: str | os.PathLike,
    n: int = 2000,
    truncation: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict:
    """Score a GAN run's generator with a judge classifier: feature-space Fréchet distance
    to ``n`` real test images, the real-train-vs-test floor, and (conditional) class fidelity."""
    G, meta = load_generator(run)
    ds = run_dataset(meta, data_dir)
    J = Judge.load(judge)
    if (J.channels, J.size) != (ds.channels, ds.size):
        raise ConfigError(
            f"judge {judge} takes {J.channels}×{J.size}×{J.size} images, "
            f"not {ds.channels}×{ds.size}×{ds.size}"
        )
    if G.num_classes and J.classes != list(meta.get("classes", [])):
        raise ConfigError(f"judge {judge} was trained on other classes than {run}")
    n = min(n, len(ds.test_x), len(ds.train_x))
    g = torch.Generator().manual_seed(seed + 2)
    real = ds.test_x[torch.randperm(len(ds.test_x), generator=g)[:n]].float().div(127.5).sub(1)
    tr = ds.train_x[torch.randperm(len(ds.train_x), generator=g)[:n]].float().div(127.5).sub(1)
    rs = feature_stats(J.features_and_logits(real)[0])
    y = (torch.arange(n) % G.num_classes) if G.num_classes else None
    f, logits = J.features_and_logits(sample(G, noise(n, G.z_dim, seed, truncation), y))
    out = {
        "n": n,
        "truncation": truncation,
        "fd": frechet_from_stats(*feature_stats(f), *rs),
        "fd_real": frechet_from_stats(*feature_stats(J.features_and_logits(tr)[0]), *rs),
    }
    if y is not None:
        out["class_fidelity"] = (logits.argmax(1).cpu() == y).float().mean().item()
    return out


__all__ = ["Samples", "generate", "load_generator", "noise", "sample", "score_run"]
