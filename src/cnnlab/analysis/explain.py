"""Attribution maps (Captum) and a look inside the network, for a trained run.

Methods (all attribute the *predicted* class, on [0, 1] pixels — the model is wrapped
in :class:`~cnnlab.analysis.attacks.Normalized`, so the baseline "black image" is a real
image and the maps are in pixel space):

- ``saliency``: |∂logit/∂x| (Simonyan et al. 2014);
- ``integrated_gradients``: path integral from a black image (Sundararajan et al. 2017),
  ``internal_batch_size`` bounds memory on big inputs;
- ``gradcam``: Grad-CAM on the last conv layer (Selvaraju et al. 2017), upsampled;
- ``occlusion``: score drop when a square patch is blacked out, ``perturbations_per_eval``
  bounds memory;
- ``guided_backprop``: ReLU gradients with negative parts removed (Springenberg et al. 2015).

Captum's hooks do not work with in-place ReLUs, so the explained model is a deep copy with
``inplace=False`` everywhere; the run's model is never touched.

Outputs in ``<run>/explain/``: ``attributions.png`` (image, prediction, overlay per
method), ``filters.png`` (first conv layer), ``feature_maps.png`` (every conv layer, one
image), ``attention.png`` (models with attention blocks), ``explain.json``; and
``<run>/explain.html`` embedding them (self-contained, base64).
"""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.attacks import Normalized
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.figures import png_bytes
from cnnlab.progress import progress
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.load import loader_for, open_run
from cnnlab.runtime.device import resolve_device

METHODS = ("saliency", "integrated_gradients", "gradcam", "occlusion", "guided_backprop")
SELECTIONS = ("random", "first", "wrong")
SHORT = {
    "saliency": "saliency",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
    "occlusion": "occlusion",
    "guided_backprop": "guided backprop",
}


def parse_methods(text: str | None) -> tuple[str, ...]:
    if text in (None, "", "all"):
        return METHODS
    out = tuple(p.strip() for p in str(text).split(",") if p.strip())
    for m in out:
        if m not in METHODS:
            raise CnnlabError(choices_msg("attribution method", m, METHODS))
    return out


def explainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every in-place op made out-of-place (Captum hooks)."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "last_attention")]


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The network's Conv2d layers in order, without those inside attention blocks."""
    inside = [n + "." for n, _ in _attention_modules(model) if n]
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not any(n.startswith(p) for p in inside)
    ]


def last_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = conv_layers(model)
    return convs[-1][1] if convs else None


def attribute(
    model01: nn.Module,
    x01: torch.Tensor,
    target: torch.Tensor,
    method: str,
    ig_steps: int = 50,
    internal_batch_size: int = 128,
    perturbations_per_eval: int = 64,
    return_delta: bool = False,
):
    """Attributions (B, C, H, W) of ``target`` for pixel inputs x01 (B, C, H, W).

    ``model01`` takes [0, 1] pixels (use :class:`Normalized`) and must be an
    :func:`explainable_copy`. With ``return_delta`` (integrated gradients): (attr, delta).
    """
    from captum import attr as ca

    with warnings.catch_warnings():
        # Captum warns that it sets requires_grad and hooks ReLUs: both intended here
        warnings.filterwarnings("ignore", category=UserWarning, module="captum")
        x01 = x01.detach()
        if method == "saliency":
            return ca.Saliency(model01).attribute(x01, target=target, abs=True)
        if method == "integrated_gradients":
            ig = ca.IntegratedGradients(model01)
            return ig.attribute(
                x01,
                baselines=torch.zeros_like(x01),
                target=target,
                n_steps=ig_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=return_delta,
            )
        if method == "gradcam":
            layer = last_conv(model01)
            if layer is None:
                raise CnnlabError("Grad-CAM needs a conv layer; this model has none")
            cam = ca.LayerGradCam(model01, layer).attribute(
                x01, target=target, relu_attributions=True
            )
            up = ca.LayerAttribution.interpolate(cam, tuple(x01.shape[-2:]), "bilinear")
            return up.expand_as(x01)
        if method == "occlusion":
            c, h, _ = x01.shape[1:]
            k = max(3, h // 7)
            s = max(1, k // 2)
            return ca.Occlusion(model01).attribute(
                x01,
                sliding_window_shapes=(c, k, k),
                strides=(c, s, s),
                baselines=0.0,
                target=target,
                perturbations_per_eval=perturbations_per_eval,
            )
        if method == "guided_backprop":
            return ca.GuidedBackprop(model01).attribute(x01, target=target)
        raise CnnlabError(choices_msg("attribution method", method, METHODS))


def heat(a: torch.Tensor, method: str) -> np.ndarray:
    """One attribution (C, H, W) → a [0, 1] map (H, W) for display.

    Magnitude for gradient methods (sign flips with the input's contrast); the positive
    part for Grad-CAM and occlusion (evidence *for* the class). Scaled by the 99th
    percentile so a few hot pixels do not wash out the rest.
    """
    a = a.detach().float().cpu()
    m = a.clamp(min=0).sum(0) if method in ("gradcam", "occlusion") else a.abs().sum(0)
    q = torch.quantile(m.flatten(), 0.99)
    if q <= 0:
        q = m.max().clamp(min=1e-12)
    return (m / q).clamp(0, 1).numpy()


def object_mask(x01: torch.Tensor, dark_background: bool) -> torch.Tensor:
    """Where the object is, for light-on-dark images: pixels brighter than 0.1."""
    g = x01.mean(0)
    return g > 0.1 if dark_background else g < 0.9


PLAIN_BORDER = 0.9  # share of border pixels that must be background for a plain background


def plain_background(x01: torch.Tensor, dark_background: bool) -> bool:
    """Whether the images (B, C, H, W) lie on a plain background, so that
    :func:`object_mask` finds the object: on average at least 90 % of the pixels of each
    image's border (its outer 1/14 of the side, 2 px at 28 px) are background. True for
    digits and Fashion-MNIST's garments; false for photos, where a "bright" or "not white"
    pixel says nothing about the object."""
    g = x01.detach().float().cpu().mean(1)  # (B, H, W)
    w = max(1, g.shape[-1] // 14)
    ring = torch.ones_like(g[0], dtype=torch.bool)
    ring[w:-w, w:-w] = False
    background = (g <= 0.1) if dark_background else (g >= 0.9)
    return bool(background[:, ring].float().mean() >= PLAIN_BORDER)


def on_object_fraction(a: torch.Tensor, x01: torch.Tensor, method: str, dark: bool) -> float:
    h = torch.from_numpy(heat(a, method))
    mask = object_mask(x01.cpu(), dark)
    return float((h * mask).sum() / h.sum().clamp(min=1e-12))


def select_indices(
    model01: nn.Module,
    x01: torch.Tensor,
    y: torch.Tensor,
    n: int,
    select: str,
    indices: list[int] | None,
    seed: int,
    batch_size: int = 1000,
) -> list[int]:
    total = len(y)
    if indices:
        bad = [i for i in indices if not 0 <= i < total]
        if bad:
            raise CnnlabError(f"image index {bad[0]} out of range; the test set has {total} images")
        return list(indices)
    if select not in SELECTIONS:
        raise CnnlabError(choices_msg("selection", select, SELECTIONS))
    n = min(n, total)
    if select == "first":
        return list(range(n))
    if select == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(total, generator=g)[:n].sort().values.tolist()
    # most confidently wrong: highest probability on a wrong class
    conf, pred = [], []
    with torch.no_grad():
        for i in range(0, total, batch_size):
            p = torch.softmax(model01(x01[i : i + batch_size]).float(), 1)
            c, k = p.max(1)
            conf.append(c)
            pred.append(k)
    conf, pred = torch.cat(conf).cpu(), torch.cat(pred).cpu()
    wrong = (pred != y.cpu()).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)]
    return order[:n].tolist()


def _show_image(ax, x01: torch.Tensor) -> None:
    img = x01.detach().cpu().float()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img[:3].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attributions(x01, labels, preds, probs, maps: dict, classes) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(maps)
    n, cols = len(x01), 1 + len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.75 * n), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        _show_image(ax, x01[i])
        ok = preds[i] == labels[i]
        ax.set_title(
            f"{classes[labels[i]]}\n→ {classes[preds[i]]} {probs[i]:.2f}",
            fontsize=7,
            color="black" if ok else "red",
        )
        for j, m in enumerate(methods, 1):
            ax = axes[i, j]
            _show_image(ax, x01[i])
            ax.imshow(maps[m][i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(SHORT[m], fontsize=8)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def plot_filters(conv: nn.Conv2d) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = conv.weight.detach().float().cpu()  # (out, in, k, k)
    out = w.shape[0]
    cols = min(8, out)
    rows = math.ceil(out / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.25 * rows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= out:
            continue
        f = w[i]
        if f.shape[0] == 3:
            f = (f - f.min()) / (f.max() - f.min() + 1e-12)
            ax.imshow(f.permute(1, 2, 0).numpy())
        else:
            v = f.abs().max().item() or 1.0
            ax.imshow(f.mean(0).numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"first-layer filters {tuple(w.shape)}", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def feature_maps(model01: nn.Module, x01: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Outputs (C, H, W) of every conv layer for one image x01 (1, C, H, W)."""
    out, hooks = [], []
    for name, m in conv_layers(model01):
        hooks.append(
            m.register_forward_hook(lambda _m, _i, o, name=name: out.append((name, o[0].detach())))
        )
    try:
        with torch.no_grad():
            model01(x01)
    finally:
        for h in hooks:
            h.remove()
    return out


def plot_feature_maps(maps, x01: torch.Tensor, max_channels: int = 16) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + min(max_channels, max(m.shape[0] for _, m in maps))
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.1 * cols, 1.25 * len(maps)), squeeze=False)
    for r, (name, m) in enumerate(maps):
        ax = axes[r, 0]
        _show_image(ax, x01[0])
        ax.set_ylabel(name.replace("model.", ""), fontsize=7)
        for c in range(1, cols):
            ax = axes[r, c]
            ax.axis("off")
            if c - 1 < m.shape[0]:
                ax.imshow(m[c - 1].float().cpu().numpy(), cmap="viridis")
                if r == 0 or c - 1 < 1:
                    ax.set_title(f"{tuple(m.shape[1:])}" if c == 1 else str(c - 1), fontsize=6)
    fig.suptitle("feature maps (first channels of every conv layer)", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def plot_attention(model01: nn.Module, x01: torch.Tensor) -> bytes | None:
    """Per attention block and head: how much each position is attended (mean over queries)."""
    mods = _attention_modules(model01)
    if not mods:
        return None
    with torch.no_grad():
        model01(x01)
    rows = []
    for name, m in mods:
        a = getattr(m, "last_attention", None)
        if a is None or a.dim() != 4:
            continue
        hw = a.shape[-1]
        side = int(round(math.sqrt(hw)))
        if side * side != hw:
            continue  # non-square maps: nothing sensible to draw on the image
        rows.append((name, a[0].float().mean(1).reshape(-1, side, side).cpu()))  # (heads, s, s)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.7 * len(rows)), squeeze=False)
    size = tuple(x01.shape[-2:])
    for r, (name, att) in enumerate(rows):
        _show_image(axes[r, 0], x01[0])
        axes[r, 0].set_ylabel(name.replace("model.", ""), fontsize=7)
        up = F.interpolate(att[:, None], size=size, mode="nearest")[:, 0]  # (heads, H, W)
        for hd in range(1, cols):
            ax = axes[r, hd]
            ax.axis("off")
            if hd - 1 < len(up):
                _show_image(ax, x01[0])
                ax.imshow(up[hd - 1].numpy(), cmap="jet", alpha=0.5)
                ax.set_title(f"head {hd - 1}", fontsize=7)
    fig.suptitle("attention received per position (mean over queries)", fontsize=9)
    fig.tight_layout(pad=0.3)
    return png_bytes(fig, dpi=90)


def _html(res: dict, images: dict[str, bytes]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{i}</td><td>{e(t)}</td><td>{e(p)}</td><td>{q:.3f}</td></tr>"
        for i, t, p, q in zip(res["indices"], res["true"], res["pred"], res["prob"], strict=True)
    )
    onobj = "".join(
        f"<li>{e(SHORT[m])}: {v:.2f}</li>" for m, v in res.get("on_object_fraction", {}).items()
    )
    imgs = "".join(
        f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(data).decode()}'>"
        for title, data in images.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>cnnlab explain: {e(res['run'])}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>Explanations: {e(Path(res['run']).name)}</h1>"
        f"<p>{len(res['indices'])} {e(res['dataset'])} test images ({e(res['select'])}); "
        f"methods: {e(', '.join(SHORT[m] for m in res['methods']))}; attributions of the "
        f"predicted class; {res['seconds']:.1f}s on {e(res['device'])}.</p>"
        + (
            "<p>Share of attribution on the object (the pixels that are not background; the "
            f"object covers {res['object_area']:.2f} of the image on average):</p><ul>{onobj}</ul>"
            if onobj
            else "<p>No share of attribution on the object: these images have no plain "
            "background to tell the object from.</p>"
            if res.get("object_area", 0) is None
            else ""
        )
        + f"{imgs}<h2>Images</h2><table><tr><th>index</th><th>true</th><th>predicted</th>"
        f"<th>p</th></tr>{rows}</table></body></html>\n"
    )


def explain(
    target,
    n: int = 16,
    select: str = "random",
    indices: list[int] | None = None,
    methods: str | None = None,
    seed: int = 0,
    image: int | None = None,
    device: str = "auto",
    data_dir=None,
    ig_steps: int = 50,
    internal_batch_size: int = 128,
    perturbations_per_eval: int = 64,
    save: bool = True,
) -> dict:
    """Attribution grids, filters, feature maps and attention maps for a run's test images."""
    meths = parse_methods(methods)
    if n < 1:
        raise CnnlabError(f"-n must be ≥ 1, got {n}")
    if not 2 <= ig_steps <= 10_000:
        raise CnnlabError(f"--ig-steps must be between 2 and 10,000, got {ig_steps}")
    if internal_batch_size < 1 or perturbations_per_eval < 1:
        raise CnnlabError("the internal batch sizes must be ≥ 1")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model, meta, ds, run_dir = open_run(target, "best", dev, data_dir)
    loader = loader_for(meta, ds.test_x, ds.test_y, dev)
    model01 = Normalized(explainable_copy(model), loader.mean, loader.std).to(dev).eval()
    classes = meta["classes"]

    def pixels(idx):
        return loader.pixels(loader.x[idx], False)

    if select == "wrong" and not indices:
        all01 = torch.cat([pixels(slice(i, i + 1000)) for i in range(0, len(loader.y), 1000)])
        chosen = select_indices(model01, all01, loader.y, n, select, indices, seed)
        del all01
    else:
        chosen = select_indices(model01, None, loader.y, n, select, indices, seed)
    if not chosen:
        raise CnnlabError("no test image fits the selection (no misclassified image?)")
    idx = torch.tensor(chosen, device=dev)
    x01, y = pixels(idx), loader.y[idx]
    with torch.no_grad():
        p = torch.softmax(model01(x01).float(), 1)
    prob, pred = p.max(1)
    one = image if image is not None else chosen[0]
    if not 0 <= one < len(loader.y):
        raise CnnlabError(f"--image {one} out of range; the test set has {len(loader.y)} images")
    maps, timing, onobj = {}, {}, {}
    dark = float(np.mean(meta["input"]["mean"])) < 0.5
    # "attribution on object" needs an object to find: only on a plain background
    plain = plain_background(x01, dark)
    with progress("explain", len(meths)) as bar:
        for m in meths:
            bar.describe(f"explain: {SHORT[m]} on {len(chosen)} images")
            tm = time.perf_counter()
            if m == "gradcam" and last_conv(model01) is None:
                bar.advance()
                continue  # a model without conv layers (an MLP): nothing to map
            a = attribute(
                model01,
                x01,
                pred,
                m,
                ig_steps=ig_steps,
                internal_batch_size=internal_batch_size,
                perturbations_per_eval=perturbations_per_eval,
            )
            maps[m] = [heat(a[i], m) for i in range(len(a))]
            timing[m] = time.perf_counter() - tm
            if plain:
                onobj[m] = float(
                    np.mean([on_object_fraction(a[i], x01[i], m, dark) for i in range(len(a))])
                )
            bar.advance()
    obj_area = (
        float(np.mean([object_mask(x01[i].cpu(), dark).float().mean() for i in range(len(x01))]))
        if plain
        else None
    )
    labels, preds = y.tolist(), pred.tolist()
    res = {
        "run": str(run_dir),
        "dataset": ds.name,
        "device": str(dev),
        "select": "indices" if indices else select,
        "indices": chosen,
        "true": [classes[i] for i in labels],
        "pred": [classes[i] for i in preds],
        "prob": prob.tolist(),
        "methods": list(maps),
        "method_seconds": timing,
        "on_object_fraction": onobj,
        "object_area": obj_area,
    }
    x1 = pixels(torch.tensor([one], device=dev))
    images: dict[str, bytes] = {}
    images["attributions"] = plot_attributions(x01, labels, preds, prob.tolist(), maps, classes)
    convs = conv_layers(model01)
    if convs:
        images["filters"] = plot_filters(convs[0][1])
        images["feature_maps"] = plot_feature_maps(feature_maps(model01, x1), x1)
    att = plot_attention(model01, x1)
    if att is not None:
        images["attention"] = att
    res["feature_map_image"] = one
    res["seconds"] = time.perf_counter() - t0
    if save:
        out = Path(res["run"]) / "explain"
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for name, data in images.items():
            atomic_write_bytes(out / f"{name}.png", data)
            files.append(str(out / f"{name}.png"))
        atomic_write_text(out / "explain.json", json.dumps(res, indent=1))
        titles = {
            "attributions": "Attribution maps",
            "filters": "First-layer filters",
            "feature_maps": f"Feature maps (test image {one})",
            "attention": f"Attention maps (test image {one})",
        }
        page = Path(res["run"]) / "explain.html"
        atomic_write_text(page, _html(res, {titles[k]: v for k, v in images.items()}))
        res["outputs"] = [*files, str(out / "explain.json"), str(page)]
    return res
