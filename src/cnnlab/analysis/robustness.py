"""Accuracy under corruptions and attacks, and out-of-distribution detection, for a run.

Everything acts on [0, 1] pixels: the test set is converted as the run's loader does
(resize/grayscale), corrupted or attacked batched with torch on the run's device, then
normalised inside :class:`~cnnlab.analysis.attacks.Normalized`. Each (corruption, level)
draws from its own generator seeded from ``seed``, so one command gives the same numbers
every time, and a subset of corruptions gives the same numbers as the full report.

Outputs in the run directory: ``robustness.json`` (all figures), ``robustness.png``
(accuracy-vs-severity and accuracy-vs-ε curves) and ``robustness.html`` (a self-contained
section: table + embedded curves, for the run's report).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.analysis.attacks import Normalized, fgsm, pgd
from cnnlab.analysis.ood import METHODS as OOD_METHODS
from cnnlab.analysis.ood import (
    auroc,
    fpr_at_tpr,
    ood_score,
    refuse_threshold,
    save_ood,
    threshold_at_tpr,
)
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.figures import png_bytes
from cnnlab.progress import progress
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.load import loader_for, open_run
from cnnlab.runtime.device import resolve_device

# Five severity levels per corruption, in the units of the function (pixel scale or a
# fraction of the image side, so they mean the same on 28- and 224-pixel inputs).
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.05, 0.1, 0.2, 0.3, 0.4),  # noise std
    "salt_pepper": (0.01, 0.03, 0.06, 0.1, 0.2),  # fraction of pixels set to 0 or 1
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),  # Gaussian σ in pixels of a 28-pixel image
    "brightness": (0.1, 0.2, 0.3, 0.45, 0.6),  # added to every pixel
    "contrast": (0.7, 0.5, 0.35, 0.2, 0.1),  # factor around the image mean
    "rotation": (10, 20, 30, 45, 60),  # degrees, random sign per image
    "shift": (0.05, 0.1, 0.15, 0.2, 0.3),  # fraction of the side, random direction
    "occlusion": (0.1, 0.2, 0.3, 0.4, 0.5),  # side of one random black square / image side
    "missing_pixels": (0.1, 0.2, 0.35, 0.5, 0.7),  # fraction of input features zeroed
}
CORRUPTIONS = tuple(SEVERITIES)
ATTACKS = ("fgsm", "pgd")
DEFAULT_EPS = (0.02, 0.05, 0.1, 0.2)
ROBUSTNESS_FILES = ("robustness.json", "robustness.png", "robustness.html")


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def corrupt(x: torch.Tensor, name: str, level: int, generator=None) -> torch.Tensor:
    """Apply corruption ``name`` at severity ``level`` (1..5) to x (B, C, H, W) in [0, 1]."""
    if name not in SEVERITIES:
        raise CnnlabError(choices_msg("corruption", name, CORRUPTIONS))
    if not 1 <= level <= 5:
        raise CnnlabError(f"severity {level} out of range; choose 1 to 5")
    s = SEVERITIES[name][level - 1]
    b, c, h, w = x.shape
    dev, g = x.device, generator

    def rand(*shape):
        return torch.rand(shape, device=dev, generator=g)

    if name == "gaussian_noise":
        n = torch.randn(x.shape, device=dev, generator=g)
        return (x + s * n).clamp(0, 1)
    if name == "salt_pepper":
        u = rand(b, 1, h, w)
        salt = (rand(b, 1, h, w) < 0.5).to(x.dtype)
        return torch.where(u < s, salt.expand_as(x), x)
    if name == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        sigma = s * h / 28
        k = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur(x, [k, k], [sigma, sigma])
    if name == "brightness":
        return (x + s).clamp(0, 1)
    if name == "contrast":
        m = x.mean((1, 2, 3), keepdim=True)
        return ((x - m) * s + m).clamp(0, 1)
    if name == "rotation":
        a = math.radians(s) * torch.where(rand(b) < 0.5, -1.0, 1.0)
        cos, sin, z = a.cos(), a.sin(), torch.zeros(b, device=dev)
        theta = torch.stack([torch.stack([cos, -sin, z], 1), torch.stack([sin, cos, z], 1)], 1)
        return _affine(x, theta)  # theta (B, 2, 3)
    if name == "shift":
        phi = rand(b) * 2 * math.pi
        one, z = torch.ones(b, device=dev), torch.zeros(b, device=dev)
        tx, ty = 2 * s * phi.cos(), 2 * s * phi.sin()  # normalised coords span 2
        theta = torch.stack([torch.stack([one, z, tx], 1), torch.stack([z, one, ty], 1)], 1)
        return _affine(x, theta)
    if name == "occlusion":
        ph, pw = max(1, round(s * h)), max(1, round(s * w))
        y0 = (rand(b) * (h - ph + 1)).long()
        x0 = (rand(b) * (w - pw + 1)).long()
        ys = torch.arange(h, device=dev)[None]
        xs = torch.arange(w, device=dev)[None]
        my = (ys >= y0[:, None]) & (ys < (y0 + ph)[:, None])  # (B, H)
        mx = (xs >= x0[:, None]) & (xs < (x0 + pw)[:, None])  # (B, W)
        return x.masked_fill((my[:, :, None] & mx[:, None, :])[:, None], 0.0)
    # missing_pixels: each input feature (pixel, channel) dropped independently
    return x.masked_fill(rand(*x.shape) < s, 0.0)


def parse_list(text: str | None, valid: tuple[str, ...], kind: str) -> tuple[str, ...]:
    if text in (None, "", "all"):
        return valid
    out = tuple(p.strip() for p in str(text).split(",") if p.strip())
    for p in out:
        if p not in valid:
            raise CnnlabError(choices_msg(kind, p, valid))
    return out


def parse_levels(text: str | None) -> tuple[int, ...]:
    if text in (None, "", "all"):
        return (1, 2, 3, 4, 5)
    try:
        levels = tuple(int(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        raise CnnlabError(f"severity must be integers 1 to 5 (e.g. 1,3,5), got {text!r}") from None
    for lv in levels:
        if not 1 <= lv <= 5:
            raise CnnlabError(f"severity {lv} out of range; choose 1 to 5")
    return levels


def parse_eps(text) -> tuple[float, ...]:
    if text in (None, ""):
        return DEFAULT_EPS
    if isinstance(text, (list, tuple)):
        vals = tuple(float(v) for v in text)
    else:
        try:
            vals = tuple(float(p) for p in str(text).split(",") if p.strip())
        except ValueError:
            raise CnnlabError(
                f"--eps needs numbers in (0, 1], e.g. 0.05,0.1; got {text!r}"
            ) from None
    for e in vals:
        if not 0 < e <= 1:
            raise CnnlabError(f"ε {e} out of range; attacks use pixel scale, choose 0 < ε ≤ 1")
    return vals


def _seed_for(seed: int, *parts) -> int:
    """A stable per-experiment seed (Python's hash() is salted per process)."""
    h = seed * 1_000_003
    for p in parts:
        for ch in str(p):
            h = (h * 131 + ord(ch)) % (2**61 - 1)
    return h


class _Eval:
    """The run's model on [0, 1] pixels plus its test set, batched."""

    def __init__(
        self, target, device="auto", data_dir=None, limit=None, batch_size=500, which="best"
    ):
        self.dev = resolve_device(device)
        model, meta, ds, self.run_dir = open_run(target, which, self.dev, data_dir)
        self.meta = meta
        x, y = ds.test_x, ds.test_y
        if limit:
            x, y = x[:limit], y[:limit]
        self.loader = loader_for(meta, x, y, self.dev, batch_size)
        self.model = Normalized(model, self.loader.mean, self.loader.std).to(self.dev).eval()
        self.n = len(y)
        self.dataset = ds
        self.bar = None  # a cnnlab.progress bar counting batches, when one is shown

    def batches(self):
        ld = self.loader
        for i in range(0, self.n, ld.batch_size):
            yield ld.pixels(ld.x[i : i + ld.batch_size], False), ld.y[i : i + ld.batch_size]
            if self.bar is not None:
                self.bar.advance()

    @torch.no_grad()
    def accuracy(self, transform=None, seed: int = 0) -> float:
        g = torch.Generator(device=self.dev).manual_seed(seed)
        correct = 0
        for x01, y in self.batches():
            if transform is not None:
                x01 = transform(x01, g)
            correct += int((self.model(x01).argmax(1) == y).sum())
        return correct / self.n

    def attack_accuracy(
        self, kind: str, eps: float, steps: int, step_size: float, seed: int
    ) -> float:
        g = torch.Generator(device=self.dev).manual_seed(seed)
        correct = 0
        for x01, y in self.batches():
            if kind == "fgsm":
                xa = fgsm(self.model, x01, y, eps)
            else:
                xa = pgd(self.model, x01, y, eps, steps, step_size, True, g)
            with torch.no_grad():
                correct += int((self.model(xa).argmax(1) == y).sum())
        return correct / self.n


def robustness(
    target,
    corruptions: str | None = None,
    severity: str | None = None,
    attacks: str | None = None,
    eps=None,
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    data_dir=None,
    batch_size: int = 500,
    save: bool = True,
    out_dir=None,
) -> dict:
    """Accuracy of a run under corruptions (per severity) and FGSM/PGD (per ε).

    PGD: ``pgd_steps`` steps of size ``pgd_step_size`` (default ε/4), random start.
    """
    names = () if corruptions == "none" else parse_list(corruptions, CORRUPTIONS, "corruption")
    levels = parse_levels(severity)
    atk = parse_list(attacks, ATTACKS, "attack") if attacks != "none" else ()
    eps_list = parse_eps(eps)
    if pgd_steps < 1:
        raise CnnlabError(f"--pgd-steps must be ≥ 1, got {pgd_steps}")
    if limit is not None and limit < 1:
        raise CnnlabError(f"--limit must be ≥ 1, got {limit}")
    if batch_size < 1:
        raise CnnlabError(f"--batch-size must be ≥ 1, got {batch_size}")
    t0 = time.perf_counter()
    ev = _Eval(target, device, data_dir, limit, batch_size)
    passes = 1 + len(names) * len(levels) + len(atk) * len(eps_list)
    with progress("robustness: clean", passes * math.ceil(ev.n / batch_size)) as ev.bar:
        res = _measure(ev, names, levels, atk, eps_list, pgd_steps, pgd_step_size, seed)
    res["seconds"] = time.perf_counter() - t0
    if save:
        out = Path(out_dir) if out_dir else ev.run_dir
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "robustness.json", json.dumps(res, indent=1))
        png = plot_robustness(res, out / "robustness.png")
        atomic_write_text(out / "robustness.html", html_section(res, png))
        res["outputs"] = [str(out / f) for f in ROBUSTNESS_FILES]
    return res


def _measure(ev, names, levels, atk, eps_list, pgd_steps, pgd_step_size, seed) -> dict:
    res: dict = {
        "run": str(ev.run_dir),
        "dataset": ev.dataset.name,
        "n": ev.n,
        "seed": seed,
        "clean_acc": ev.accuracy(),
        "corruptions": {},
    }
    for name in names:
        accs = []
        for lv in levels:
            ev.bar.describe(f"robustness: {name} severity {lv}")
            s = _seed_for(seed, name, lv)
            accs.append(ev.accuracy(lambda x, g, name=name, lv=lv: corrupt(x, name, lv, g), s))
        res["corruptions"][name] = {
            "levels": list(levels),
            "params": [SEVERITIES[name][lv - 1] for lv in levels],
            "acc": accs,
            "mean": sum(accs) / len(accs),
        }
    if names:
        res["mean_corruption_acc"] = sum(v["mean"] for v in res["corruptions"].values()) / len(
            names
        )
    for kind in atk:
        rows = {}
        for e in eps_list:
            ev.bar.describe(f"robustness: {kind.upper()} ε={e:g}")
            size = pgd_step_size if pgd_step_size else e / 4
            rows[f"{e:g}"] = ev.attack_accuracy(kind, e, pgd_steps, size, _seed_for(seed, kind, e))
        res[kind] = {"eps": [float(e) for e in eps_list], "acc": list(rows.values())}
        if kind == "pgd":
            res[kind].update(
                steps=pgd_steps,
                step_size=pgd_step_size or "eps/4",
                random_start=True,
            )
    return res


def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per corruption (accuracy per level, mean), then attacks."""
    levels = next(iter(res["corruptions"].values()))["levels"] if res["corruptions"] else []
    header = ["test", *[f"sev {lv}" for lv in levels], "mean"]
    rows = [["clean", *[""] * len(levels), f"{res['clean_acc']:.4f}"]]
    for name, v in res["corruptions"].items():
        rows.append([name, *[f"{a:.4f}" for a in v["acc"]], f"{v['mean']:.4f}"])
    if "mean_corruption_acc" in res:
        rows.append(["mean corruption", *[""] * len(levels), f"{res['mean_corruption_acc']:.4f}"])
    return header, rows


def attack_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in ATTACKS if k in res]
    if not kinds:
        return [], []
    eps = res[kinds[0]]["eps"]
    header = ["attack", *[f"ε={e:g}" for e in eps]]
    rows = []
    for k in kinds:
        label = k.upper()
        if k == "pgd":
            label += f"-{res[k]['steps']}"
        rows.append([label, *[f"{a:.4f}" for a in res[k]["acc"]]])
    return header, rows


def plot_robustness(res: dict, path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ATTACKS if k in res]
    ncol = 1 + bool(kinds)
    fig, axes = plt.subplots(1, ncol, figsize=(5.5 * ncol, 4), squeeze=False)
    ax = axes[0, 0]
    for name, v in res["corruptions"].items():
        ax.plot([0, *v["levels"]], [res["clean_acc"], *v["acc"]], marker="o", ms=3, label=name)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("corruptions")
    ax.grid(alpha=0.3)
    if res["corruptions"]:
        ax.legend(fontsize=7)
    if kinds:
        ax = axes[0, 1]
        for k in kinds:
            ax.plot([0, *res[k]["eps"]], [res["clean_acc"], *res[k]["acc"]], marker="o", label=k)
        ax.set_xlabel("ε (pixel scale, L∞)")
        ax.set_ylim(0, 1)
        ax.set_title("adversarial attacks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(res['run']).name}: robustness on {res['dataset']} ({res['n']:,} images)")
    data = png_bytes(fig, dpi=100, tight_layout=True)
    atomic_write_bytes(path, data)
    return data


def _html_table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table class='robustness'><tr>{th}</tr>{body}</table>"


def html_section(res: dict, png: bytes | None = None) -> str:
    """A self-contained HTML fragment (a <section>) for the run's report."""
    parts = [
        "<section id='robustness'><h2>Robustness</h2>",
        f"<p>{res['n']:,} test images of {html.escape(res['dataset'])}, seed {res['seed']}; "
        f"clean accuracy {res['clean_acc']:.4f}"
        + (
            f", mean corruption accuracy {res['mean_corruption_acc']:.4f}"
            if "mean_corruption_acc" in res
            else ""
        )
        + ".</p>",
    ]
    if res["corruptions"]:
        parts.append(_html_table(*table_rows(res)))
    h, r = attack_rows(res)
    if r:
        note = ""
        if "pgd" in res:
            p = res["pgd"]
            note = (
                f"<p>PGD: {p['steps']} steps of size {p['step_size']}, random start; "
                "L∞ in [0, 1] pixel scale.</p>"
            )
        parts.append(_html_table(h, r) + note)
    if png:
        parts.append(
            "<img alt='robustness curves' src='data:image/png;base64,"
            + base64.b64encode(png).decode()
            + "'>"
        )
    parts.append("</section>")
    return "\n".join(parts) + "\n"


# -- out-of-distribution ---------------------------------------------------------------

OOD_NOISE = "noise"


def _ood_images(name: str, ev: _Eval, data_dir, limit: int | None, seed: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images of another dataset (or noise) in the run's geometry."""
    inp = ev.meta["input"]
    c, size = int(inp["channels"]), int(inp["size"])
    n = limit or ev.n
    if name == OOD_NOISE:
        g = torch.Generator().manual_seed(_seed_for(seed, "ood-noise"))
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
def _logits(ev: _Eval, x_uint8: torch.Tensor) -> torch.Tensor:
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
    ev = _Eval(target, device, data_dir, limit)
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
