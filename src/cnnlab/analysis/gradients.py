"""Reading ``gradients.jsonl`` (written by the GradientFlow callback) and naming vanishing
or exploding gradients in it."""

from __future__ import annotations

import json
import math
from pathlib import Path


def flags_for(layers: list[dict]) -> list[str]:
    g = [d["grad_norm"] for d in layers if d.get("grad_norm") is not None]
    if len(g) < 2:
        return []
    out = []
    if not all(math.isfinite(v) for v in g):
        out.append("exploding: non-finite gradient")
        return out
    first, last = g[0], g[-1]
    if last > 0 and first < VANISH * last:
        out.append(
            f"vanishing: first-layer gradient {first:.2e} < {VANISH:g} × last-layer {last:.2e}"
        )
    if last > 0 and first > EXPLODE * last:
        out.append(
            f"exploding: first-layer gradient {first:.2e} > {EXPLODE:g} × last-layer {last:.2e}"
        )
    return out


def read_gradients(run_dir) -> list[dict]:
    p = Path(run_dir) / "gradients.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    by_epoch = {r.get("epoch"): r for r in rows}  # a resumed run re-records an epoch: keep the last
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: (e is None, e))]


VANISH = 1e-2


EXPLODE = 1e2
