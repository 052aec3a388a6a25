"""Out-of-distribution detection for a run: its test set against other datasets' test
images (or noise) in the run's geometry, scored with each OOD score of
:mod:`~cnnlab.analysis.ood` (AUROC, FPR at 95 % TPR); the chosen score's threshold is
stored in ``<run>/ood.json`` for ``cnnlab predict`` and the server.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.analysis.ood import METHODS as OOD_METHODS
from cnnlab.analysis.ood import (
    auroc,
    fpr_at_tpr,
    ood_score,
    refuse_threshold,
    save_ood,
    threshold_at_tpr,
)
from cnnlab.analysis.robustness_eval import RunEval, seed_for
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError, choices_msg

OOD_NOISE = "noise"


def _ood_images(name: str, ev: RunEval, data_dir, limit: int | None, seed: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images of another dataset (or noise) in the run's geometry."""
    inp = ev.meta["input"]
    c, size = int(inp["channels"]), int(inp["size"])
    n = limit or ev.n
    if name == OOD_NOISE:
        g = torch.Generator().manual_seed(seed_for(seed, "ood-noise"))
        half = n // 2
        uni = torch.randint(0, 256, (half, c, size, size), generator=g, dtype=torch.uint8)
        gau = (torch.randn((n - half, c, size, size), generator=g) * 64 + 128).clamp(0, 255)
        return torch.cat([uni, gau.to(torch.uint8)])
    x = load_dataset(name, data_dir).test_x[:n]
    if x.shape[1] != c:  # RGB → gray with the usual weights, gray → RGB by repetition
        if c == 1:
            w = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            x = x[:, :1].expand(-1, c, -1, -1).contiguous()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x


@torch.no_grad()
def _logits(ev: RunEval, x_uint8: torch.Tensor) -> torch.Tensor:
    ld = ev.loader
    out = []
    for i in range(0, len(x_uint8), ld.batch_size):
        xb = x_uint8[i : i + ld.batch_size].to(ev.dev)
        out.append(ev.model(ld.pixels(xb, False)).float().cpu())
    return torch.cat(out)


def ood(
    target,
    datasets: list[str],
    method: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    data_dir=None,
    save: bool = True,
) -> dict:
    """AUROC and FPR@95%TPR of MSP and energy scores: the run's test set vs each other set.

    Stores ``<run>/ood.json`` with the chosen score's threshold (95% of the run's own test
    images pass); ``method=None`` picks the score with the higher mean AUROC.
    """
    if method is not None and method not in OOD_METHODS:
        raise CnnlabError(choices_msg("OOD score", method, OOD_METHODS))
    ev = RunEval(target, device, data_dir, limit)
    in_logits = _logits(ev, ev.loader.x)
    res: dict = {"run": str(ev.run_dir), "in_dataset": ev.dataset.name, "n_in": ev.n, "sets": {}}
    for name in datasets:
        x = _ood_images(name, ev, data_dir, limit, seed)
        out_logits = _logits(ev, x)
        row = {"n": len(x)}
        for m in OOD_METHODS:
            si, so = ood_score(in_logits, m), ood_score(out_logits, m)
            row[m] = {"auroc": auroc(si, so), "fpr95": fpr_at_tpr(si, so)}
        res["sets"][name] = row
    chosen = method or max(
        OOD_METHODS, key=lambda m: sum(r[m]["auroc"] for r in res["sets"].values())
    )
    thr = threshold_at_tpr(ood_score(in_logits, chosen), 0.95)
    res.update(method=chosen, threshold=thr)
    res["not_stored"] = refuse_threshold(chosen, {k: v[chosen] for k, v in res["sets"].items()})
    res["outputs"] = []
    if save and res["not_stored"] is None:
        p = save_ood(
            ev.run_dir,
            chosen,
            thr,
            in_dataset=ev.dataset.name,
            evaluated={k: v[chosen] for k, v in res["sets"].items()},
        )
        res["outputs"] = [str(p)]
    return res


def ood_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    header = [
        "out-of-distribution set",
        "n",
        "MSP AUROC",
        "MSP FPR@95",
        "energy AUROC",
        "energy FPR@95",
    ]
    rows = [
        [
            k,
            str(v["n"]),
            f"{v['msp']['auroc']:.4f}",
            f"{v['msp']['fpr95']:.4f}",
            f"{v['energy']['auroc']:.4f}",
            f"{v['energy']['fpr95']:.4f}",
        ]
        for k, v in res["sets"].items()
    ]
    return header, rows
