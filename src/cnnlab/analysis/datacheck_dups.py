"""Duplicates for ``cnnlab data check``: exact copies (the same decoded pixels) and
near-duplicates (dHash within a few bits, confirmed on the grey thumbnails' pixels)."""

from __future__ import annotations

import numpy as np

from cnnlab.analysis.datacheck_scan import Images


def exact_duplicates(im: Images) -> list[dict]:
    """Groups of images with identical pixels: their ids, splits and labels."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(im.digests):
        groups.setdefault(d, []).append(i)
    out = []
    for members in groups.values():
        if len(members) > 1:
            out.append(
                {
                    "ids": [im.ids[i] for i in members],
                    "splits": sorted({str(im.splits[i]) for i in members}),
                    "labels": sorted({im.classes[im.labels[i]] for i in members}),
                }
            )
    return out


def dhash(grey: np.ndarray) -> np.ndarray:
    """64-bit difference hashes (uint64) of (N, H, W) grey images."""
    import torch
    import torch.nn.functional as F

    g = torch.from_numpy(grey).float()[:, None]
    small = F.adaptive_avg_pool2d(g, (8, 9))[:, 0]
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(grey), 64).numpy()
    packed = np.packbits(bits.astype(np.uint8), axis=1)  # (N, 8) bytes, big-endian
    return packed.view(">u8")[:, 0].astype(np.uint64)


def near_pairs(hashes: np.ndarray, near: int, chunk: int = 256, progress=None) -> np.ndarray:
    """Every pair (i < j) whose hashes differ in at most ``near`` bits: (P, 3) of i, j, d."""
    n = len(hashes)
    found = []
    for a in range(0, n, chunk):
        block = hashes[a : a + chunk]
        d = np.bitwise_count(block[:, None] ^ hashes[None, a:])  # only j ≥ a
        i, j = np.nonzero(d <= near)
        keep = j + a > i + a  # upper triangle
        found.append(np.stack([i[keep] + a, j[keep] + a, d[i[keep], j[keep]]], 1))
        if progress is not None:
            progress(min(a + chunk, n), n)
    return np.concatenate(found) if found else np.zeros((0, 3), int)


def pixel_mad(grey: np.ndarray, pairs: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """Mean absolute grey-level difference (0-255) of each pair's thumbnails."""
    out = np.zeros(len(pairs))
    for a in range(0, len(pairs), chunk):
        i, j = pairs[a : a + chunk, 0], pairs[a : a + chunk, 1]
        out[a : a + chunk] = np.abs(grey[i].astype(np.int16) - grey[j]).mean((1, 2))
    return out


def near_duplicates(
    im: Images, near: int = 2, max_mad: float = 5.0, progress=None
) -> tuple[list[dict], int]:
    """Pairs of different images (exact copies are reported as such) whose hashes are
    within ``near`` bits *and* whose 28×28 grey thumbnails differ by at most ``max_mad``
    grey levels on average (the hash alone is coarse on small images with a plain
    background); closest first. Returns (pairs, how many pairs the hash alone matched)."""
    pairs = near_pairs(dhash(im.grey), near, progress=progress)
    mad = pixel_mad(im.grey, pairs)
    keep = mad <= max_mad
    out = []
    for (i, j, d), m in zip(pairs[keep].tolist(), mad[keep].tolist(), strict=True):
        if im.digests[i] == im.digests[j]:
            continue
        out.append(
            {
                "a": im.ids[i],
                "b": im.ids[j],
                "ia": i,
                "ib": j,
                "bits": int(d),
                "pixel_mad": round(m, 2),
                "splits": f"{im.splits[i]}/{im.splits[j]}",
                "labels": [im.classes[im.labels[i]], im.classes[im.labels[j]]],
            }
        )
    return sorted(out, key=lambda r: (r["pixel_mad"], r["bits"])), len(pairs)
