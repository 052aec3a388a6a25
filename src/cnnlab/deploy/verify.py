"""``cnnlab verify MODEL``: run an export's golden set in its runtime and compare.

``cnnlab export`` writes ``<file>.golden.json`` beside every export: a handful of test
images (uint8, (C, S, S)) with the top-k classes and logits the export itself produced.
Here the file is loaded in the runtime of its format — ONNX Runtime, TorchScript or
torch.export — fed exactly as its metadata says (float32 in [0, 1] or uint8 in its
layout), and every image must give the same top-k order and logits within the stored
tolerance. Before that, the file's SHA-256 must match the one ``export`` recorded in the
golden set and the sidecar: a numeric check alone lets most single-bit weight flips pass.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import numpy as np

from cnnlab.deploy.export import companion, file_sha256
from cnnlab.deploy.formats import (
    export_input,
    export_path_kind,
    load_runner,
    read_export_metadata,
)
from cnnlab.errors import CnnlabError


def load_golden(path) -> tuple[np.ndarray, dict]:
    """uint8 images (N, C, S, S) and the golden file's content."""
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(
            f"{p}: golden set not found; export again (cnnlab export writes it beside the "
            "model) or name it with --golden"
        )
    try:
        g = json.loads(p.read_text())
        imgs = [
            np.frombuffer(base64.b64decode(im["pixels_base64"]), np.uint8).reshape(im["shape"])
            for im in g["images"]
        ]
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise CnnlabError(f"{p}: not a cnnlab golden set ({type(e).__name__})") from None
    if not imgs:
        raise CnnlabError(f"{p}: the golden set holds no image")
    return np.stack(imgs), g


def verify(model, golden=None) -> dict:
    p = Path(model)
    fmt = export_path_kind(p)
    if fmt is None:
        raise CnnlabError(f"{p}: not an export (.onnx, .pt or .pt2)")
    md = read_export_metadata(p)
    u8, g = load_golden(golden or companion(p, "golden"))
    digest, recorded = file_sha256(p), {}
    if g.get("model_sha256"):
        recorded["golden set"] = g["model_sha256"]
    sidecar = companion(p, "meta")
    if sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text())
        except ValueError:
            side = {}
        if isinstance(side, dict) and side.get("sha256"):
            recorded["sidecar"] = side["sha256"]
    hash_bad = sorted(k for k, v in recorded.items() if v != digest)
    logits = np.asarray(load_runner(p, fmt)(export_input(u8, md)), np.float64)
    tol = float(g.get("logit_tolerance", 1e-3))
    rows, worst = [], 0.0
    for i, (im, z) in enumerate(zip(g["images"], logits, strict=True)):
        k = len(im["top_k"])
        top = [int(j) for j in np.argsort(-z)[:k]]
        diff = float(np.abs(z - np.asarray(im["logits"])).max())
        worst = max(worst, diff)
        ok = top == im["top_k"] and diff <= tol
        rows.append(
            {
                "image": i,
                "test_index": im.get("test_index"),
                "expected": im["top_k"],
                "got": top,
                "max_abs_logit_diff": diff,
                "ok": ok,
            }
        )
    bad = [r for r in rows if not r["ok"]]
    return {
        "sha256": digest,
        "sha256_checked": sorted(recorded),
        "sha256_mismatch": hash_bad,
        "model": str(p),
        "format": fmt,
        "runtime": "onnxruntime" if fmt == "onnx" else "torch",
        "golden": str(golden or companion(p, "golden")),
        "images": len(rows),
        "tolerance": tol,
        "max_abs_logit_diff": worst,
        "mismatches": bad,
        "passed": not bad and not hash_bad,
        "classes": md["classes"],
    }


def format_verify(r: dict) -> str:
    cls = r["classes"]
    lines = [
        f"{r['model']} ({r['format']}, {r['runtime']}): {r['images']} golden images, "
        f"max |Δlogit| {r['max_abs_logit_diff']:.2e} (≤ {r['tolerance']:g})"
    ]
    if r.get("sha256_mismatch"):
        lines.append(
            f"  CHANGED: the file's SHA-256 {r['sha256'][:16]}… differs from the one recorded "
            f"in the {' and the '.join(r['sha256_mismatch'])} at export"
        )
    elif r.get("sha256_checked"):
        lines.append(f"  SHA-256 {r['sha256'][:16]}… as recorded at export")
    for m in r["mismatches"]:
        lines.append(
            f"  MISMATCH image {m['image']}: expected top {[cls[j] for j in m['expected']]}, "
            f"got {[cls[j] for j in m['got']]} (|Δlogit| {m['max_abs_logit_diff']:.2e})"
        )
    n = len(r["mismatches"])
    why = ([f"{n} mismatches"] if n else []) + (
        ["file changed"] if r.get("sha256_mismatch") else []
    )
    lines.append("PASS" if r["passed"] else f"FAIL: {', '.join(why)}")
    return "\n".join(lines)
