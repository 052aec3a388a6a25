"""The explore page: a classifier run taken apart layer by layer in the browser.

:func:`build_bundle` gathers what the page shows — the forward pass as a list of
operations with their settings, a set of test images with their true labels, the
predictions and attribution maps (saliency, Grad-CAM) for them, and the run's per-epoch
weight snapshots — as one JSON document. Tensors travel as base64 little-endian float32
(float16 for precomputed activations), so the page decodes them into typed arrays.

Three modes, picked by size:

- ``weights``: the weights are embedded and the page runs the forward pass itself in
  plain JavaScript (every drawn stroke, every picked image); LeNet-5 is ~0.2 MB.
- ``activations``: a large model (AlexNet) in a static file: every operation's output is
  precomputed for the embedded test images; kernels of layers up to a size are embedded
  for the unit arithmetic.
- ``server``: the page served by ``cnnlab serve`` at ``/explore`` for a large model: the
  server computes the activations of any drawn or uploaded image and hands out the
  weights of a unit of a large layer on request (``/v1/explore/*``); small layers'
  weights are in the bundle as in activations mode.

:func:`export_page` writes the static, self-contained HTML (no CDN, no network);
:func:`add_explore_routes` adds the page and its endpoints to the server.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import Request

from cnnlab.analysis.explore import (
    ATTRIBUTION_METHODS,
    attribution_maps,
    fc_contributions,
    operations,
    trace,
)
from cnnlab.deploy.bodies import InputError
from cnnlab.errors import CnnlabError
from cnnlab.inference.model import pixel_model
from cnnlab.inference.pixels import light_on_dark, norm_stats
from cnnlab.progress import track
from cnnlab.runs.files import atomic_write_text
from cnnlab.runs.load import load_model, load_run_dataset, loader_for, run_dir_of
from cnnlab.runs.snapshots import read_snapshots

STATIC = Path(__file__).with_name("static")
FORMAT = "cnnlab-explore/1"
MODES = ("auto", "weights", "activations")
WEIGHTS_LIMIT = 2_000_000  # parameters: up to this the page runs the model itself
LAYER_LIMIT = 1_000_000  # activations mode: a layer's weights are embedded up to this size,
WEIGHTS_BUDGET = 2_500_000  # and while all embedded weights stay under this
ACTIVATIONS_BUDGET = 6_000_000  # activations mode: stored outputs (float16) of all test images
MAP_SIZE = 64  # attribution maps are stored at most this many pixels a side
MAX_ATTR_CLASSES = 20  # more classes: maps for the top 5 and the true class only


def b64(a, dtype: str = "<f4") -> str:
    arr = np.ascontiguousarray(np.asarray(a.detach().cpu() if torch.is_tensor(a) else a), dtype)
    return base64.b64encode(arr.tobytes()).decode("ascii")


def _tensor(t: torch.Tensor, dtype: str = "<f4") -> dict:
    return {
        "shape": list(t.shape),
        "dtype": "f16" if "2" in dtype else "f32",
        "data": b64(t, dtype),
    }


def _params(mod: torch.nn.Module) -> dict:
    return {k: _tensor(v.float()) for k, v in mod.state_dict().items() if v.is_floating_point()}


def _label(spec: dict, counts: dict) -> str:
    t = spec["type"]
    counts[t] = counts.get(t, 0) + 1
    n = counts[t]
    if t == "conv2d":
        k, s = spec["kernel"], spec["stride"]
        return f"conv{n} {spec['out']}@{k[0]}×{k[1]}" + (f"/{s[0]}" if s[0] > 1 else "")
    if t == "linear":
        return f"fc{n} {spec['in']}→{spec['out']}"
    if t in ("maxpool2d", "avgpool2d"):
        return f"{t[:3]}-pool {spec['kernel'][0]}×{spec['kernel'][1]}/{spec['stride'][0]}"
    if t == "act":
        return spec["fn"]
    if t == "adaptiveavgpool2d":
        return f"adaptive avg-pool {spec['output'][0]}×{spec['output'][1]}"
    return {"batchnorm": "batch norm", "lrn": "LRN", "zeropad2d": "zero pad"}.get(t, t)


def pick_samples(y: torch.Tensor, n: int) -> list[int]:
    """``n`` test indices, one of each class first (in class order), then the next ones."""
    y = y.cpu()
    first: dict[int, int] = {}
    for i, c in enumerate(y.tolist()):
        first.setdefault(int(c), i)
        if len(first) >= n:
            break
    chosen = [first[c] for c in sorted(first)][:n]
    for i in range(len(y)):
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


def build_bundle(
    run,
    which: str = "best",
    images: int = 12,
    mode: str = "auto",
    data_dir=None,
    download: bool = False,
    attribution: bool = True,
    served: bool = False,
) -> dict:
    """Everything the explore page shows for ``run``, as a JSON-ready dict (see the module
    docstring for the modes; ``served``: the page talks to ``cnnlab serve``)."""
    if mode not in MODES:
        raise CnnlabError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 0:
        raise CnnlabError(f"--images must be a whole number ≥ 0, got {images!r}")
    model, meta = load_model(run, which, "cpu")
    run_dir = run_dir_of(run)
    bundle = model_bundle(model, meta, mode, attribution, served, run_dir.name)
    bundle["snapshots"] = snapshots_of(run_dir, {layer["name"] for layer in bundle["layers"]})
    if images:
        try:
            ds = load_run_dataset(meta, data_dir, None, download, run_dir, split="test")
        except CnnlabError as e:
            bundle["samples_note"] = f"no test images: {e}"
            return bundle
        add_samples(bundle, model, meta, ds.test_x, ds.test_y, images)
    return bundle


def model_bundle(
    model, meta: dict, mode: str = "auto", attribution: bool = True, served: bool = False,
    name: str = "model",
) -> dict:  # fmt: skip
    """The bundle of a model without images or snapshots (:func:`build_bundle` adds them)."""
    mean, std = norm_stats(meta)
    c, s = int(meta["input"]["channels"]), int(meta["input"]["size"])
    if len(mean) != c:
        raise CnnlabError(f"{name}: normalisation has {len(mean)} channels, the model {c}")
    try:
        ops = operations(model)
    except ValueError as e:
        raise CnnlabError(f"{name}: {e}") from None
    opaque = [spec.get("what", "?") for _, _, spec in ops if spec["type"] == "opaque"]
    nparams = sum(p.numel() for p in model.parameters())
    runnable = not opaque
    if mode == "weights" and not runnable:
        raise CnnlabError(
            f"the page cannot run {opaque[0]} itself; use --mode activations (or auto)"
        )
    if mode == "auto":
        mode = "weights" if runnable and nparams <= WEIGHTS_LIMIT else "activations"
    if served and mode == "activations":
        mode = "server"
    zero_out = trace(model, torch.zeros(1, c, s, s), ops)
    embedded = embedded_layers(ops)
    layers, counts = [], {}
    for i, ((op_name, mod, spec), out) in enumerate(zip(ops, zero_out, strict=True)):
        layer = {
            "index": i,
            "name": op_name,
            "label": _label(spec, counts),
            "spec": spec,
            "shape": list(out.shape[1:]),
        }
        size = sum(p.numel() for p in mod.parameters())
        if mode == "weights" or i in embedded:  # (the first layers, for the epoch slider)
            layer["params"] = _params(mod)
        elif mode == "server":
            layer["params_on_server"] = size > 0
        layers.append(layer)

    return {
        "format": FORMAT,
        "mode": mode,
        "served": served,
        "run": name,
        "model": meta["model"],
        "parameters": nparams,
        "dataset": meta.get("dataset"),
        "classes": list(meta["classes"]),
        "epoch": meta.get("epoch"),
        "test_acc": (meta.get("metrics") or {}).get("test_acc"),
        "input": {"channels": c, "size": s, "mean": mean, "std": std},
        "light_on_dark": light_on_dark(mean),
        "opaque": opaque,
        "layers": layers,
        "attribution_methods": list(ATTRIBUTION_METHODS) if attribution else [],
        "samples": [],
        "samples_note": "",
        "snapshots": [],
    }


def embedded_layers(ops) -> set[int]:
    """Activations mode: the operations whose weights the page carries (each up to
    ``LAYER_LIMIT`` values, in order while the total stays under ``WEIGHTS_BUDGET``)."""
    out, total = set(), 0
    for i, (_, mod, _spec) in enumerate(ops):
        size = sum(p.numel() for p in mod.parameters())
        if size <= LAYER_LIMIT and total + size <= WEIGHTS_BUDGET:
            out.add(i)
            total += size
    return out


def add_samples(bundle: dict, model, meta: dict, x: torch.Tensor, y: torch.Tensor, n: int):
    """Append ``n`` of the images ``x`` (uint8, the dataset's own size; labels ``y``) to
    the bundle, preprocessed as the run's inputs were."""
    ops = operations(model)
    mean, std = norm_stats(meta)
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    if bundle["mode"] == "activations":  # every output of every image is stored
        per = sum(math.prod(layer["shape"]) for layer in bundle["layers"])
        cap = max(1, ACTIVATIONS_BUDGET // per)
        if n > cap:
            bundle["samples_note"] = (
                f"{cap} test image{'s' if cap > 1 else ''}: each one's activations take "
                f"{per * 2 / 1e6:.1f} MB here; `cnnlab serve RUN` (/explore) takes any image"
            )
            n = cap
    idx = pick_samples(y, n)
    x01 = loader_for(meta, x[idx], y[idx], "cpu").pixels(x[idx], False)
    u8 = (x01 * 255).round().clamp(0, 255).to(torch.uint8)
    attribution = bool(bundle["attribution_methods"])
    for k, i in enumerate(track(idx, "explore: test images")):
        rec = sample(
            model, ops, u8[k], int(y[i]), i, meta, mean_t, std_t, bundle["mode"], attribution
        )
        bundle["samples"].append(rec)


def sample(model, ops, u8, label, index, meta, mean_t, std_t, mode, attribution) -> dict:
    """One test image: its pixels, true label, prediction, attribution maps and (in
    activations mode) every operation's output."""
    x01 = u8[None].float() / 255
    outs = trace(model, (x01 - mean_t) / std_t, ops)
    logits = outs[-1][0]
    probs = logits.softmax(0)
    rec = {
        "index": int(index),
        "label": int(label),
        "pixels": base64.b64encode(u8.numpy().tobytes()).decode("ascii"),
        "logits": logits.tolist(),
        "pred": int(probs.argmax()),
    }
    if mode == "activations":
        rec["activations"] = activations_record(model, ops, outs, embedded_layers(ops))
    if attribution:
        k = len(meta["classes"])
        classes = list(range(k))
        if k > MAX_ATTR_CLASSES:
            classes = sorted(set(probs.topk(5).indices.tolist()) | {int(label)})
        rec["attribution"] = {
            m: {"classes": classes, **attribution_record(model, meta, x01, classes, m)}
            for m in ATTRIBUTION_METHODS
        }
    return rec


def activations_record(model, ops, outs, embedded: set[int] | None = None) -> dict:
    """Every operation's output (float16) and, for a linear layer whose weights are not
    ``embedded`` in the page (None: any), each unit's largest contributions."""
    rec = {"outputs": [b64(o[0].float().clamp(-65504, 65504), "<f2") for o in outs]}
    fc = {}
    for i, (_, mod, spec) in enumerate(ops):
        if spec["type"] == "linear" and embedded is not None and i not in embedded:
            x = outs[i - 1][0].flatten() if i else None
            idx, prod = fc_contributions(mod.weight.detach().float(), x.float(), 8)
            fc[str(i)] = {"index": b64(idx, "<i4"), "product": b64(prod), "k": idx.shape[1]}
    rec["fc_top"] = fc
    return rec


def attribution_record(model, meta, x01, classes, method) -> dict:
    try:
        maps = attribution_maps(model, *norm_stats(meta), x01, classes, method, MAP_SIZE)
    except ValueError as e:
        return {"error": str(e)}
    u8 = (maps * 255).round().to(torch.uint8)
    return {"size": int(u8.shape[-1]), "maps": b64(u8, "u1")}


def snapshots_of(run_dir: Path, op_names: set[str]) -> list[dict]:
    out = []
    for epoch, meta, tensors in read_snapshots(run_dir):
        params: dict[str, dict] = {}
        for key, t in tensors.items():
            op, _, pname = key.rpartition(".")
            if op in op_names:
                params.setdefault(op, {})[pname] = _tensor(t)
        if params:
            acc = meta.get("test_acc")
            out.append({"epoch": epoch, "test_acc": float(acc) if acc else None, "params": params})
    return out


# -------------------------------------------------------------------------------- the page


def page_html(bundle: dict | None) -> str:
    """The page with its CSS and JavaScript inlined; ``bundle`` embedded (static export)
    or ``None`` (served: the page fetches it from ``/v1/explore/bundle``)."""
    html = (STATIC / "explore.html").read_text(encoding="utf-8")
    css = (STATIC / "explore.css").read_text(encoding="utf-8")
    js = (STATIC / "explore.js").read_text(encoding="utf-8")
    data = "null" if bundle is None else json.dumps(bundle, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # the JSON cannot close its script element
    return (
        html.replace("/*EXPLORE_CSS*/", css)
        .replace("/*EXPLORE_BUNDLE*/", data)
        .replace("/*EXPLORE_JS*/", js)
    )


def export_page(
    run,
    out: str | os.PathLike | None = None,
    which: str = "best",
    images: int = 12,
    mode: str = "auto",
    data_dir=None,
    download: bool = False,
    attribution: bool = True,
) -> tuple[Path, dict]:
    """Write the self-contained explore page of ``run`` (default ``<run>/explore.html``);
    returns its path and the bundle."""
    path = Path(out) if out else run_dir_of(run) / "explore.html"
    if path.is_dir():
        raise CnnlabError(f"{path} is a directory; give a file name for --out")
    bundle = build_bundle(run, which, images, mode, data_dir, download, attribution)
    atomic_write_text(path, page_html(bundle))
    return path, bundle


# ------------------------------------------------------------------------------ the server


def pixels_from(body: dict, c: int, s: int) -> torch.Tensor:
    """A request's ``pixels`` (C·S·S integers 0-255, flat) → uint8 (1, C, S, S)."""
    px = body.get("pixels") if isinstance(body, dict) else None
    if not isinstance(px, list) or len(px) != c * s * s:
        raise InputError(f"'pixels' must be a flat list of {c}×{s}×{s} = {c * s * s} integers")
    try:
        a = np.asarray(px, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("'pixels' must hold numbers 0-255") from None
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise InputError("'pixels' must hold numbers 0-255")
    return torch.from_numpy(a.round().astype(np.uint8)).view(1, c, s, s)


class Explorer:
    """What the served explore page asks the server for, from the run's own model (loaded
    on the first request: a server that only classifies never pays for it)."""

    def __init__(self, run, which: str = "best"):
        self.run, self.which = run, which
        self.state: dict = {}

    def opened(self) -> dict:
        """The model, its operations, its input and normalisation."""
        st = self.state
        if "model" not in st:
            wrapper, meta = pixel_model(self.run, self.which)
            for p in wrapper.parameters():
                p.requires_grad_(False)
            st.update(
                model=wrapper.model,
                normalize=wrapper.normalize,
                meta=meta,
                ops=operations(wrapper.model),
                c=int(meta["input"]["channels"]),
                s=int(meta["input"]["size"]),
            )
        return st

    def bundle(self) -> dict:
        if "bundle" not in self.state:
            self.state["bundle"] = build_bundle(
                self.run, self.which, 12, "auto", None, False, True, True
            )
        return self.state["bundle"]

    def trace(self, body: dict) -> dict:
        """Every operation's output for the posted pixels."""
        st = self.opened()
        u8 = pixels_from(body, st["c"], st["s"])
        outs = trace(st["model"], st["normalize"](u8.float() / 255), st["ops"])
        return {"logits": outs[-1][0].tolist(), **activations_record(st["model"], st["ops"], outs)}

    def weights(self, layer: int, unit: int) -> dict:
        """One unit's weights and bias."""
        ops = self.opened()["ops"]
        if not 0 <= layer < len(ops):
            raise InputError(f"layer must be 0-{len(ops) - 1}, got {layer}")
        _, mod, spec = ops[layer]
        if spec["type"] not in ("conv2d", "linear"):
            raise InputError(f"layer {layer} ({spec['type']}) has no per-unit weights")
        n = mod.weight.shape[0]
        if not 0 <= unit < n:
            raise InputError(f"unit must be 0-{n - 1}, got {unit}")
        w = mod.weight[unit].detach().float()
        bias = float(mod.bias[unit]) if mod.bias is not None else 0.0
        return {"shape": list(w.shape), "data": b64(w), "bias": bias}

    def attribution(self, body: dict) -> dict:
        """A posted image's attribution map for one class, by one method."""
        st = self.opened()
        u8 = pixels_from(body, st["c"], st["s"])
        k, method, n = body.get("class"), body.get("method", "saliency"), len(st["meta"]["classes"])
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
            raise InputError(f"'class' must be a class index 0-{n - 1}")
        if method not in ATTRIBUTION_METHODS:
            raise InputError(f"'method' must be one of: {', '.join(ATTRIBUTION_METHODS)}")
        with torch.enable_grad():
            return attribution_record(st["model"], st["meta"], u8.float() / 255, [k], method)


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InputError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    return body


def add_explore_routes(app, run, which: str = "best", run_model=None) -> None:
    """``GET /explore`` (the page), ``GET /v1/explore/bundle``, ``POST /v1/explore/trace``
    (every operation's output for posted pixels), ``GET /v1/explore/weights?layer=&unit=``
    (one unit's weights) and ``POST /v1/explore/attribution``. ``run_model(fn, *args)``
    runs model work on the server's model thread. The endpoints serve the page and stay out
    of the OpenAPI schema (they are not a stable API)."""
    import asyncio

    from fastapi.responses import HTMLResponse, JSONResponse

    ex = Explorer(run, which)

    async def call(fn, *args):
        if run_model is not None:
            return await run_model(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @app.get("/explore", include_in_schema=False)
    async def explore_page():
        return HTMLResponse(page_html(None))

    @app.get("/v1/explore/bundle", include_in_schema=False)
    async def explore_bundle():
        return JSONResponse(await call(ex.bundle))

    @app.post("/v1/explore/trace", include_in_schema=False)
    async def explore_trace(request: Request):
        return JSONResponse(await call(ex.trace, await json_body(request)))

    @app.get("/v1/explore/weights", include_in_schema=False)
    async def explore_weights(layer: int, unit: int):
        return JSONResponse(await call(ex.weights, layer, unit))

    @app.post("/v1/explore/attribution", include_in_schema=False)
    async def explore_attribution(request: Request):
        return JSONResponse(await call(ex.attribution, await json_body(request)))
