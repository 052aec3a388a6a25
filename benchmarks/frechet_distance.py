"""Fréchet distance: cnnlab's eigen-based trace (torch) vs the reference scipy.linalg.sqrtm.

Same features, same process; prints both values, their relative difference and the ratio.
Usage: PYTHONPATH=src python benchmarks/frechet_distance.py [--n 2000] [--dim 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch

from cnnlab.analysis.frechet import feature_stats, frechet_from_stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=128)  # LeNet-5 judge's penultimate width
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.dim, generator=g) @ torch.randn(a.dim, a.dim, generator=g)
    y = x + 0.3 * torch.randn(a.n, a.dim, generator=g)
    sx, sy = feature_stats(x), feature_stats(y)
    t = time.perf_counter()
    for _ in range(a.repeats):
        ours = frechet_from_stats(*sx, *sy)
    t_ours = (time.perf_counter() - t) / a.repeats
    (m1, s1), (m2, s2) = (tuple(v.numpy() for v in s) for s in (sx, sy))
    t = time.perf_counter()
    for _ in range(a.repeats):
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        ref = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    t_ref = (time.perf_counter() - t) / a.repeats
    print(f"features {a.n}×{a.dim}, 1 thread, mean of {a.repeats}")
    print(f"cnnlab (eigh, torch float64): {ours:.6f}  {t_ours * 1e3:8.1f} ms")
    print(f"scipy.linalg.sqrtm (ref):     {ref:.6f}  {t_ref * 1e3:8.1f} ms")
    print(
        f"relative difference {abs(ours - ref) / ref:.1e}; time ratio scipy/cnnlab {t_ref / t_ours:.1f}×"
    )


if __name__ == "__main__":
    main()
