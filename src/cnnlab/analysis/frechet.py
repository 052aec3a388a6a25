"""Feature-space Fréchet distance and class fidelity, measured with a cnnlab classifier.

The Fréchet distance between two sets of feature vectors, each modelled as a Gaussian
(Dowson & Landau 1982; the formula behind FID, Heusel et al. 2017):

    FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

Here the features are the penultimate layer of a *judge*: a cnnlab classifier run trained
on the same data (e.g. LeNet-5 on Fashion-MNIST). This is NOT the Inception FID — the
numbers are not comparable with published FIDs, only with each other for the same judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError
from cnnlab.runs.layout import run_kind
from cnnlab.runs.load import load_run_checkpoint, model_from_checkpoint


def feature_stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of features (N, D), in float64."""
    f = f.detach().to(torch.float64).reshape(f.shape[0], -1)
    if f.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples per set")
    mu = f.mean(0)
    fc = f - mu
    return mu, fc.T @ fc / (f.shape[0] - 1)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_from_stats(mu1, s1, mu2, s2) -> float:
    """Tr((Σ₁Σ₂)^½) = Tr((Σ₁^½ Σ₂ Σ₁^½)^½): the inner matrix is symmetric PSD, so its
    eigenvalues are real and ≥ 0 — exact, and no complex parts as with scipy's sqrtm."""
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = ((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return float(d.clamp_min(0))


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Fréchet distance between two feature sets (N1, D) and (N2, D)."""
    return frechet_from_stats(*feature_stats(f1), *feature_stats(f2))


@dataclass
class Judge:
    """A trained classifier used to score generated images given in [-1, 1]."""

    model: torch.nn.Module
    meta: dict
    path: str

    @classmethod
    def load(cls, run: str | Path, device="cpu") -> Judge:
        if not Path(run).exists():
            raise CheckpointError(f"judge run {str(run)!r} not found (see `cnnlab runs`)")
        ck = load_run_checkpoint(run)
        if run_kind(ck.meta) == "gan" or "model" not in ck.meta:
            raise CheckpointError(
                f"judge {run}: not a classifier run (train one with `cnnlab train`)"
            )
        model, meta = model_from_checkpoint(ck, device), ck.meta
        if not hasattr(model, "forward_head"):
            raise CheckpointError(f"judge {run}: not a cnnlab classifier run")
        return cls(model, meta, str(run))

    @property
    def channels(self) -> int:
        return int(self.meta["input"]["channels"])

    @property
    def size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def _normalize(self, x_pm1: torch.Tensor) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        mean = torch.tensor(self.meta["input"]["mean"], device=dev).reshape(1, -1, 1, 1)
        std = torch.tensor(self.meta["input"]["std"], device=dev).reshape(1, -1, 1, 1)
        return ((x_pm1.to(dev).float() + 1) / 2 - mean) / std  # [-1,1] → [0,1] → judge's

    @torch.no_grad()
    def features_and_logits(
        self, x_pm1: torch.Tensor, batch_size: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, D) and logits (N, K) of images in [-1, 1]."""
        self.model.eval()
        feats, logits = [], []
        for i in range(0, x_pm1.shape[0], batch_size):
            h = self.model.forward_head(
                self.model.forward_features(self._normalize(x_pm1[i : i + batch_size])),
                pre_logits=True,
            )
            feats.append(h.flatten(1))
            logits.append(self.model.classifier(h))
        return torch.cat(feats), torch.cat(logits)
