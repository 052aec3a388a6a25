"""Decoding an image folder's files into uint8 tensors: one file, many files on threads
(unreadable ones skipped and named in one warning), and the per-channel statistics."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.images import load_image
from cnnlab.errors import CnnlabError
from cnnlab.progress import progress


def decode_one(path: Path, channels: int, size: int) -> np.ndarray | None:
    """uint8 (C, size, size), or None for a file that cannot be read as an image."""
    try:
        return load_image(path, channels, size)
    except CnnlabError:
        return None


def decode_files(
    root: Path, files: Sequence[tuple[str, int]], channels: int, size: int, what: str,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:  # fmt: skip
    """Decode ``files`` into uint8 (N, C, S, S) and labels, skipping (and returning the
    names of) those that cannot be read. Threads: Pillow decodes without the GIL."""
    x = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    keep, bad = [], []
    threads = workers or min(8, os.cpu_count() or 1)
    xn = x.numpy()  # filled in place: decoded arrays are read-only views of PIL images
    with progress(f"decoding {what}", total=len(files)) as bar:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            it = ex.map(lambda f: decode_one(root / f[0], channels, size), files, chunksize=64)
            for i, a in enumerate(it):
                if a is None:
                    bad.append(files[i][0])
                else:
                    xn[i] = a
                    keep.append(i)
                bar.advance()
    idx = torch.tensor(keep, dtype=torch.long)
    y = torch.tensor([files[i][1] for i in keep], dtype=torch.long)
    return (x[idx] if bad else x), y, bad


def warn_unreadable(bad: Sequence[str], root: Path) -> None:
    if bad:
        shown = ", ".join(bad[:5]) + (f", … ({len(bad) - 5} more)" if len(bad) > 5 else "")
        print(
            f"warning: imagefolder: skipped {len(bad)} unreadable image file(s) in {root}: {shown}",
            file=sys.stderr,
            flush=True,
        )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    xf = x.float().div_(255)
    dims = (0, 2, 3)
    return tuple(xf.mean(dims).tolist()), tuple(xf.std(dims).clamp_min(1e-3).tolist())
