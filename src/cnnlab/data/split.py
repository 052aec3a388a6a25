"""Seeded, stratified splits of a labelled set: the validation split every dataset carves
from its training images, and the test split a flat image folder carves from all of its."""

from __future__ import annotations

import torch


def split_train_val(
    n: int, fraction: float, seed: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index sets carved from the training set, fixed by ``seed``:
    ``round(n · fraction)`` images for validation. Given ``labels``, the split is stratified:
    each class gives its share (its images are drawn in a seeded order and the classes
    interleaved by rank within the class, so even a tiny split holds every class it can)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(n, generator=g)
    nv = int(round(n * fraction))
    if labels is not None and n:
        y = labels[perm].long()
        order = torch.argsort(y, stable=True)  # by class, seeded order within the class
        counts = torch.bincount(y)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(n, dtype=torch.float64)
        rank[order] = torch.arange(n, dtype=torch.float64) - starts[y[order]].double()
        key = (rank + 0.5) / counts[y].double()  # where in its class an image sits, in (0, 1)
        perm = perm[torch.argsort(key, stable=True)]
    return perm[nv:].sort().values, perm[:nv].sort().values
