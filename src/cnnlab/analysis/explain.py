"""Attribution maps (Captum) and a look inside the network, for a trained run.

Every map attributes the *predicted* class, on [0, 1] pixels; the methods, and why the
explained model is a copy, are described in :mod:`~cnnlab.analysis.attribution`.

Outputs in ``<run>/explain/``: ``attributions.png`` (image, prediction, overlay per
method), ``filters.png`` (first conv layer), ``feature_maps.png`` (every conv layer, one
image), ``attention.png`` (models with attention blocks), ``explain.json``; and
``<run>/explain.html`` embedding them (self-contained, base64).

The work is split by job: :mod:`~cnnlab.analysis.attribution` computes the maps,
:mod:`~cnnlab.analysis.explain_plots` draws the figures, :mod:`~cnnlab.analysis.explain_page`
writes the files and the page; this module picks the test images, runs those steps in
order (:func:`explain`) and re-exports their public names.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from cnnlab.analysis.attacks import Normalized
from cnnlab.analysis.attribution import (
    METHODS,
    PLAIN_BORDER,
    SHORT,
    attribute,
    conv_layers,
    explainable_copy,
    heat,
    last_conv,
    object_mask,
    on_object_fraction,
    parse_methods,
    plain_background,
)
from cnnlab.analysis.explain_page import save_explain
from cnnlab.analysis.explain_plots import (
    feature_maps,
    plot_attention,
    plot_attributions,
    plot_feature_maps,
    plot_filters,
)
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.progress import progress
from cnnlab.runs.load import loader_for, open_run
from cnnlab.runtime.device import resolve_device

__all__ = [
    "METHODS",
    "PLAIN_BORDER",
    "SELECTIONS",
    "SHORT",
    "attribute",
    "conv_layers",
    "explain",
    "explainable_copy",
    "feature_maps",
    "heat",
    "last_conv",
    "object_mask",
    "on_object_fraction",
    "parse_methods",
    "plain_background",
    "plot_attention",
    "plot_attributions",
    "plot_feature_maps",
    "plot_filters",
    "select_indices",
]

SELECTIONS = ("random", "first", "wrong")


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
    _check_settings(n, ig_steps, internal_batch_size, perturbations_per_eval)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model, meta, ds, run_dir = open_run(target, "best", dev, data_dir)
    loader = loader_for(meta, ds.test_x, ds.test_y, dev)
    model01 = Normalized(explainable_copy(model), loader.mean, loader.std).to(dev).eval()
    chosen = _choose(model01, loader, n, select, indices, seed)
    idx = torch.tensor(chosen, device=dev)
    x01, y = _pixels(loader, idx), loader.y[idx]
    prob, pred = _answers(model01, x01)
    one = _feature_map_image(image, chosen, len(loader.y))
    dark = float(np.mean(meta["input"]["mean"])) < 0.5
    settings = dict(
        ig_steps=ig_steps,
        internal_batch_size=internal_batch_size,
        perturbations_per_eval=perturbations_per_eval,
    )
    maps, timing, onobj, obj_area = _attribute_all(model01, x01, pred, meths, dark, settings)
    classes = meta["classes"]
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
    x1 = _pixels(loader, torch.tensor([one], device=dev))
    images = _figures(model01, x01, x1, (labels, preds, prob.tolist()), maps, classes)
    res["feature_map_image"] = one
    res["seconds"] = time.perf_counter() - t0
    if save:
        res["outputs"] = save_explain(res, images)
    return res


def _check_settings(n: int, ig_steps: int, internal_batch_size: int, per_eval: int) -> None:
    if n < 1:
        raise CnnlabError(f"-n must be ≥ 1, got {n}")
    if not 2 <= ig_steps <= 10_000:
        raise CnnlabError(f"--ig-steps must be between 2 and 10,000, got {ig_steps}")
    if internal_batch_size < 1 or per_eval < 1:
        raise CnnlabError("the internal batch sizes must be ≥ 1")


def _answers(model01, x01) -> tuple[torch.Tensor, torch.Tensor]:
    """The predicted class's probability and the predicted class, per image."""
    with torch.no_grad():
        p = torch.softmax(model01(x01).float(), 1)
    return p.max(1)


def _feature_map_image(image: int | None, chosen: list[int], total: int) -> int:
    """The test image whose feature and attention maps are drawn: ``--image`` or the first."""
    one = image if image is not None else chosen[0]
    if not 0 <= one < total:
        raise CnnlabError(f"--image {one} out of range; the test set has {total} images")
    return one


def _pixels(loader, idx) -> torch.Tensor:
    """The loader's test images at ``idx`` as [0, 1] pixels (B, C, H, W), unaugmented."""
    return loader.pixels(loader.x[idx], False)


def _choose(model01, loader, n, select, indices, seed) -> list[int]:
    """The test images to explain; "wrong" scores the whole test set first."""
    if select == "wrong" and not indices:
        step = 1000
        all01 = torch.cat(
            [_pixels(loader, slice(i, i + step)) for i in range(0, len(loader.y), step)]
        )
        chosen = select_indices(model01, all01, loader.y, n, select, indices, seed)
    else:
        chosen = select_indices(model01, None, loader.y, n, select, indices, seed)
    if not chosen:
        raise CnnlabError("no test image fits the selection (no misclassified image?)")
    return chosen


def _attribute_all(model01, x01, pred, meths, dark: bool, settings: dict):
    """Each method's heat maps, seconds and (on a plain background) mean share on the
    object, and the object's mean area (None without a plain background)."""
    maps, timing, onobj = {}, {}, {}
    # "attribution on object" needs an object to find: only on a plain background
    plain = plain_background(x01, dark)
    with progress("explain", len(meths)) as bar:
        for m in meths:
            bar.describe(f"explain: {SHORT[m]} on {len(x01)} images")
            tm = time.perf_counter()
            if m == "gradcam" and last_conv(model01) is None:
                bar.advance()
                continue  # a model without conv layers (an MLP): nothing to map
            a = attribute(model01, x01, pred, m, **settings)
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
    return maps, timing, onobj, obj_area


def _figures(model01, x01, x1, answers, maps: dict, classes) -> dict[str, bytes]:
    """The PNGs: attribution grid for x01, filters, feature and attention maps for x1.
    ``answers`` is (labels, predictions, probabilities), one per image of x01."""
    labels, preds, probs = answers
    images: dict[str, bytes] = {}
    images["attributions"] = plot_attributions(x01, labels, preds, probs, maps, classes)
    convs = conv_layers(model01)
    if convs:
        images["filters"] = plot_filters(convs[0][1])
        images["feature_maps"] = plot_feature_maps(feature_maps(model01, x1), x1)
    att = plot_attention(model01, x1)
    if att is not None:
        images["attention"] = att
    return images
