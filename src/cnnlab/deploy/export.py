"""Export a trained run to ONNX, TorchScript or a torch.export program — with proven parity.

The exported graph is :class:`PixelModel`: it takes **float32 pixels in [0, 1]**, shape
``(B, C, S, S)`` (B dynamic; C, S the model's input channels and size) and returns logits.
The dataset normalisation ``(x - mean) / std`` is folded into the graph, so a client only
decodes, resizes and divides by 255. Float rather than uint8 input keeps the graph
differentiable (saliency) and quantisable by ONNX Runtime's calibrators.

Every export is checked against the original model on the run's real test images (max
|Δlogit| ≤ 1e-4 and 100% top-1 agreement for fp32); the report is printed and saved as
``<export>.parity.json``. ``int8=True`` (ONNX only) quantises with ONNX Runtime and reports
the test-accuracy delta instead. Files are written to a temp name and renamed.

``input_kind="uint8"`` exports :class:`Uint8Model` instead: decoded uint8 images of any
size in (N, H, W, C) or (N, C, H, W) go in; the conversion to float, the grey conversion
(RGB input for a grey model), the resize, the scaling and (optionally) the auto-invert run
inside the graph, and both logits and probabilities come out — a C++ or JavaScript client
sends decoded pixels and nothing else.

Beside every export: ``<file>.json`` (the metadata sidecar, for runtimes whose API cannot
read ONNX metadata), ``<file>.golden.json`` (a few test images with the export's expected
top-k, checked by ``cnnlab verify``) and ``<file>.parity.json``. The metadata says, as
separate ONNX ``metadata_props`` keys too, the input's dtype, layout, range and shape, what
the outputs mean, the preprocessing steps in order, the classes, the model and the cnnlab
version. Paths in it are relative to the run (no local absolute paths).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab._version import __version__
from cnnlab.analysis.ood import load_ood
from cnnlab.deploy.onnx_runtime import (
    META_KEY,
    ort_session,
    read_onnx_metadata,
    to_layout,
)
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.runs.files import (
    FILE_MODE,
    atomic_write_text,
    fsync_dir,
    io_error,
    unlink_quietly,
)
from cnnlab.runs.load import (
    load_model,
    load_run_dataset,
    loader_for,
    resolve_checkpoint,
    run_dir_of,
)

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
QUANT_MODES = ("static", "dynamic")
EXPORT_FORMAT = "cnnlab-export/1"
MAX_ABS_LOGIT_DIFF = 1e-4
UINT8_LOGIT_DIFF = 1e-3  # the in-graph resize at scale 1 adds float rounding
GOLDEN_TOL = 1e-3  # |Δlogit| a runtime may differ by on the golden images (fp32)
OPSET = 18


class PixelModel(nn.Module):
    """``logits = model((pixels - mean) / std)`` with pixels float in [0, 1], (B, C, S, S)."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        c = model.cnnlab_args["in_channels"] if hasattr(model, "cnnlab_args") else len(mean)
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        self.register_buffer("mean", mean.expand(c).reshape(1, c, 1, 1).clone())
        self.register_buffer("std", std.expand(c).reshape(1, c, 1, 1).clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # a no-op on float32 input; in a torch.export graph it asserts the dtype, so a .pt2
        # refuses uint8 pixels as ONNX Runtime does instead of mis-scaling them
        pixels = pixels.to(torch.float32)
        return self.model((pixels - self.mean) / self.std)


GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as Pillow's convert("L")
INPUT_KINDS = ("float", "uint8")
LAYOUTS = ("NHWC", "NCHW")
MAX_SIDE = 4096


class Uint8Model(nn.Module):
    """Preprocessing in the graph: uint8 images (N, H, W, C) or (N, C, H, W), any H, W →
    (logits, probabilities). float → grey (if RGB comes into a grey model) → bilinear
    antialiased resize to the model's size → /255 → optional auto-invert → PixelModel."""

    def __init__(self, pixels: PixelModel, size: int, in_channels: int, layout: str, invert: bool):
        super().__init__()
        self.pixels = pixels
        self.size, self.layout, self.invert = size, layout, invert
        c = pixels.mean.shape[1]
        self.to_grey = in_channels == 3 and c == 1
        self.register_buffer("grey", torch.tensor(GREY_WEIGHTS).reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.to(torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        if self.to_grey:
            x = (x * self.grey).sum(1, keepdim=True)
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
        )
        x = x / 255.0
        if self.invert:  # a light background on a light-on-dark model: 1 - x, per image
            border = torch.cat(
                [x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2
            ).mean(dim=(1, 2))
            flip = (border > 0.5).to(x.dtype).reshape(-1, 1, 1, 1)
            x = x + flip * (1 - 2 * x)
        logits = self.pixels(x)
        return logits, torch.softmax(logits, dim=1)


class _TorchScriptDtypeGuard(nn.Module):
    """TorchScript refuses a wrong dtype the way ONNX Runtime does (a trace alone would
    silently take uint8 pixels into a float model and mis-scale them)."""

    def __init__(self, inner, uint8: bool):
        super().__init__()
        self.inner = inner
        self.uint8 = uint8

    def forward(self, x: torch.Tensor):
        if self.uint8 and x.dtype != torch.uint8:
            raise RuntimeError("cnnlab export: expected uint8 images, 0-255")
        if not self.uint8 and x.dtype != torch.float32:
            raise RuntimeError("cnnlab export: expected float32 pixels in [0, 1], (B, C, S, S)")
        return self.inner(x)


def norm_stats(meta: dict) -> tuple[list[float], list[float]]:
    """The normalisation the model saw: the loader's, after an optional RGB→gray fold."""
    inp = meta["input"]
    mean, std = list(inp["mean"]), list(inp["std"])
    if inp.get("grayscale") and len(mean) == 3:
        w = (0.299, 0.587, 0.114)
        mean = [sum(a * b for a, b in zip(mean, w))]
        std = [sum(a * b for a, b in zip(std, w))]
    return mean, std


def pixel_model(run, which: str = "best") -> tuple[PixelModel, dict]:
    """The run's model on the CPU taking [0, 1] pixels (eval mode), and its metadata."""
    model, meta = load_model(run, which, "cpu")
    mean, std = norm_stats(meta)
    return PixelModel(model, mean, std).eval(), meta


def example_pixels(meta: dict, n: int = 2) -> torch.Tensor:
    """A random batch in the run's input shape, to trace or export the model with."""
    inp = meta["input"]
    return torch.rand(n, inp["channels"], inp["size"], inp["size"])


def example_images(meta: dict, layout: str, in_channels: int, n: int = 2) -> torch.Tensor:
    """A random uint8 batch, of another size than the model's, to export a Uint8Model with."""
    s = meta["input"]["size"] + 3
    shape = (n, s + 1, s, in_channels) if layout == "NHWC" else (n, in_channels, s + 1, s)
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def light_on_dark(mean) -> bool:
    """Whether the training images were light on a dark background (MNIST-like)."""
    return float(np.mean(mean)) < 0.5


def preprocessing_steps(
    meta: dict,
    input_kind: str = "float",
    layout: str = "NCHW",
    invert: bool = False,
    in_channels: int | None = None,
) -> list[dict]:
    """What happens to an image file before the model, in order; ``in_graph`` says which
    steps the export does itself and which the client must do."""
    c, s = meta["input"]["channels"], meta["input"]["size"]
    ic = in_channels or c
    mean, _ = norm_stats(meta)
    u8 = input_kind == "uint8"
    steps = [
        {
            "op": "decode",
            "detail": "decode the file (PNG, JPEG, ...) to 8-bit pixels; 16-bit "
            "images scaled to 8 bits, not clipped",
            "in_graph": False,
        },
        {
            "op": "exif_orientation",
            "detail": "rotate/flip by the EXIF Orientation tag (phone photos taken sideways), "
            "as PIL.ImageOps.exif_transpose does",
            "in_graph": False,
        },
        {"op": "alpha_composite", "detail": "transparent pixels onto white", "in_graph": False},
        {
            "op": "convert",
            "mode": "grey" if c == 1 else "RGB",
            "detail": "grey = 0.299 R + 0.587 G + 0.114 B (ITU-R 601-2)" if c == 1 else "RGB",
            "in_graph": u8 and c == 1 and ic == 3,  # a 1-channel graph takes grey already
        },
        {"op": "resize", "size": [s, s], "filter": "bilinear", "antialias": True, "in_graph": u8},
        {
            "op": "invert",
            "when": "the border's mean is above half range (dark ink on a light background)",
            "applies": light_on_dark(mean) and c == 1,
            "detail": "x → 255 - x, for a model trained light-on-dark",
            "in_graph": u8 and invert,
        },
        {
            "op": "scale",
            "detail": "divide by 255 to float32 in [0, 1]; no mean/std: the "
            "normalisation is folded into the graph",
            "in_graph": u8,
        },
        {"op": "layout", "layout": layout if u8 else "NCHW", "in_graph": False},
    ]
    return steps


def export_metadata(
    meta: dict,
    source,
    fmt: str,
    exporter: str,
    int8: str | None = None,
    input_kind: str = "float",
    layout: str = "NCHW",
    in_channels: int | None = None,
    invert: bool = False,
) -> dict:
    inp = meta["input"]
    c, s = inp["channels"], inp["size"]
    mean, std = norm_stats(meta)
    run = run_dir_of(source)
    if input_kind == "uint8":
        ic = in_channels or c
        shape = (
            ["batch", "height", "width", ic]
            if layout == "NHWC"
            else ["batch", ic, "height", "width"]
        )
        input_md = {
            "name": "images",
            "shape": shape,
            "dtype": "uint8",
            "range": [0, 255],
            "layout": layout,
            "height_width": [1, MAX_SIDE],
            "model_size": [s, s],
        }
        outputs = [
            {
                "name": "logits",
                "shape": ["batch", len(meta["classes"])],
                "meaning": "logits (unnormalised scores; softmax gives probabilities)",
            },
            {
                "name": "probabilities",
                "shape": ["batch", len(meta["classes"])],
                "meaning": "softmax of the logits",
            },
        ]
    else:
        input_md = {
            "name": "pixels",
            "shape": ["batch", c, s, s],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW",
        }
        outputs = [
            {
                "name": "logits",
                "shape": ["batch", len(meta["classes"])],
                "meaning": "logits (unnormalised scores; softmax gives probabilities)",
            }
        ]
    try:
        ckpt = resolve_checkpoint(source).resolve().relative_to(Path(run).resolve()).as_posix()
    except ValueError:
        ckpt = resolve_checkpoint(source).name
    return {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "exporter": exporter,
        "int8": int8,
        "classes": list(meta["classes"]),
        "input": input_md,
        "outputs": outputs,
        "preprocessing": preprocessing_steps(meta, input_kind, layout, invert, in_channels),
        "normalization": {"mean": mean, "std": std, "folded": True},
        "model": meta.get("model", {}),
        "dataset": meta.get("dataset"),
        "source_run": Path(run).resolve().name,
        "checkpoint": ckpt,
        "epoch": meta.get("epoch"),
        "test_acc": (meta.get("metrics") or {}).get("test_acc"),
        "ood": load_ood(run),
        "cnnlab_version": __version__,
    }


# --------------------------------------------------------------------------- writers


def io_spec(wrapper: nn.Module) -> tuple[str, list[str], dict]:
    """(input name, output names, dynamic axes) of a PixelModel or Uint8Model."""
    if isinstance(wrapper, Uint8Model):
        hw = (1, 2) if wrapper.layout == "NHWC" else (2, 3)
        return "images", ["logits", "probabilities"], {0: "batch", hw[0]: "height", hw[1]: "width"}
    return "pixels", ["logits"], {0: "batch"}


def _dims(axes: dict) -> dict:
    return {
        i: torch.export.Dim(name, min=1, max=65536 if name == "batch" else MAX_SIDE)
        for i, name in axes.items()
    }


def onnx_bytes(wrapper: nn.Module, example: torch.Tensor, exporter: str) -> tuple[bytes, str]:
    """ONNX bytes via the torch.export-based (dynamo) exporter; the legacy TorchScript
    exporter is the fallback for graphs the new one cannot take (and on request)."""
    if exporter not in ("dynamo", "legacy", "auto"):
        raise CnnlabError(choices_msg("ONNX exporter", exporter, ("auto", "dynamo", "legacy")))
    name, outputs, axes = io_spec(wrapper)
    errors = []
    if exporter in ("auto", "dynamo"):
        with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = Path(td) / "m.onnx"
            try:
                prog = torch.onnx.export(
                    wrapper,
                    (example,),
                    input_names=[name],
                    output_names=outputs,
                    dynamic_shapes={name: _dims(axes)},
                    dynamo=True,
                    opset_version=OPSET,
                    external_data=False,
                    verbose=False,
                )
                prog.save(str(f))
                return f.read_bytes(), "dynamo"
            except Exception as e:  # the new exporter fails on some graphs; fall back
                if exporter == "dynamo":
                    raise CnnlabError(f"ONNX (dynamo) export failed: {str(e)[:200]}") from None
                errors.append(str(e)[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.onnx.export(
            wrapper,
            (example,),
            buf,
            input_names=[name],
            output_names=outputs,
            dynamic_axes={name: axes, **{o: {0: "batch"} for o in outputs}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue(), "legacy" + (" (dynamo failed)" if errors else "")


def flat_metadata(md: dict) -> dict[str, str]:
    """The metadata as separate string keys, for runtimes that read ONNX metadata_props one
    key at a time (and for the sidecar's readers): nothing needs the cnnlab JSON blob."""
    inp = md["input"]
    return {
        "input_name": inp["name"],
        "input_dtype": inp["dtype"],
        "input_layout": inp["layout"],
        "input_shape": json.dumps(inp["shape"]),
        "input_range": json.dumps(inp["range"]),
        "output_names": json.dumps([o["name"] for o in md["outputs"]]),
        "output_meaning": json.dumps({o["name"]: o["meaning"] for o in md["outputs"]}),
        "classes": json.dumps(md["classes"]),
        "preprocessing": json.dumps(md["preprocessing"]),
        "normalization": json.dumps(md["normalization"]),
        "model": json.dumps(md["model"]),
        "dataset": str(md.get("dataset")),
        "source_run": md["source_run"],
        "cnnlab_version": md["cnnlab_version"],
    }


def _with_onnx_metadata(data: bytes, md: dict) -> bytes:
    import onnx

    m = onnx.load_from_string(data)
    del m.metadata_props[:]
    for k, v in {META_KEY: json.dumps(md), **flat_metadata(md)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "cnnlab"
    m.producer_version = __version__
    m.doc_string = (
        f"{md['model'].get('name', 'model')}: input {md['input']['name']} "
        f"{md['input']['dtype']} {md['input']['layout']} {md['input']['shape']} in "
        f"{md['input']['range']}; outputs " + ", ".join(o["name"] for o in md["outputs"])
    )
    return m.SerializeToString()


def _write_torchscript(wrapper, example, md) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(wrapper, example, check_trace=False)
        ts = torch.jit.script(_TorchScriptDtypeGuard(ts, isinstance(wrapper, Uint8Model)))
        buf = io.BytesIO()
        torch.jit.save(ts, buf, _extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


def _write_exported_program(wrapper, example, md) -> bytes:
    name, _, axes = io_spec(wrapper)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(wrapper, (example,), dynamic_shapes={name: _dims(axes)})
        buf = io.BytesIO()
        torch.export.save(ep, buf, extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


# --------------------------------------------------------------------------- runners


def load_runner(path_or_bytes, fmt: str, threads: int = 0):
    """A callable input ndarray (the export's dtype and layout) → logits ndarray."""
    if fmt == "onnx":
        sess = ort_session(path_or_bytes, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: np.ascontiguousarray(x)})[0]
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            m = torch.jit.load(src, map_location="cpu").eval()
        else:
            m = torch.export.load(src).module()

    def run(x):
        with torch.no_grad():
            out = m(torch.from_numpy(np.ascontiguousarray(x)))
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    return run


def read_export_metadata(path) -> dict:
    """Metadata of any cnnlab export file (format told by the file's suffix or content)."""
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"{path}: export file not found")
    if p.suffix == ".onnx":
        return read_onnx_metadata(p)
    extra = {f"{META_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if p.suffix == ".pt2":
                torch.export.load(str(p), extra_files=extra)
            else:
                torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise CnnlabError(f"{path}: not a readable export ({str(e)[:120]})") from None
    if not extra[f"{META_KEY}.json"]:
        raise CnnlabError(f"{path}: not a cnnlab export (no metadata)")
    return json.loads(extra[f"{META_KEY}.json"])


# --------------------------------------------------------------------------- data


def run_test_data(meta: dict, data_dir=None, limit: int | None = None, run_dir=None):
    """(pixels01 float (N, C, S, S), normalised (N, C, S, S), labels) from the run's test split,
    prepared exactly as evaluation prepares them."""
    ds = load_run_dataset(meta, data_dir, run_dir=run_dir, split="test")
    x, y = ds.test_x, ds.test_y
    if limit:
        x, y = x[:limit], y[:limit]
    loader = loader_for(meta, x, y, "cpu", batch_size=500)
    pix, norm = [], []
    for i in range(0, len(x), 500):
        xb = loader.x[i : i + 500]
        pix.append(loader.pixels(xb, train=False))
        norm.append(loader.prepare(xb, train=False))
    return torch.cat(pix), torch.cat(norm), y, ds


def _logits(fn, x: torch.Tensor, batch: int = 500, what: str = "parity check") -> np.ndarray:
    from cnnlab.progress import track

    starts = range(0, len(x), batch)
    return np.concatenate([np.asarray(fn(x[i : i + batch])) for i in track(starts, what)])


# --------------------------------------------------------------------------- export


def default_out(run, fmt: str, int8: bool = False, input_kind: str = "float") -> Path:
    name = "model" + (".int8" if int8 else "") + (".uint8" if input_kind == "uint8" else "")
    return run_dir_of(run) / "export" / (name + FORMATS[fmt])


def companion(out: Path, what: str) -> Path:
    """The files beside an export: ``<file>.json`` (sidecar), ``.golden.json``, ``.parity.json``."""
    return out.with_name(out.name + ("" if what == "meta" else f".{what}") + ".json")


def export_input(u8: np.ndarray, md: dict) -> np.ndarray:
    """uint8 images (B, C, S, S) → what the export takes, as its metadata says."""
    if md["input"]["dtype"] == "uint8":
        return to_layout(u8, md["input"]["layout"])
    return u8.astype(np.float32) / np.float32(255.0)


def golden_set(u8: np.ndarray, labels: np.ndarray, logits: np.ndarray, n: int, k: int = 3) -> dict:
    """``n`` test images (one per class first, clear winners only) with the export's own
    top-k and logits: what any runtime must reproduce."""
    top2 = -np.sort(-logits, axis=1)[:, :2]
    margin = top2[:, 0] - (top2[:, 1] if logits.shape[1] > 1 else 0)
    order = [int(i) for i in np.argsort(-margin) if margin[i] > 0.05]
    picked, seen = [], set()
    for i in order:  # the clearest image of each predicted class first
        if int(logits[i].argmax()) not in seen:
            seen.add(int(logits[i].argmax()))
            picked.append(i)
    picked += [i for i in order if i not in picked]
    k = min(k, logits.shape[1])
    images = []
    for i in sorted(picked[:n]):
        images.append(
            {
                "test_index": i,
                "label": int(labels[i]),
                "shape": list(u8[i].shape),
                "layout": "CHW",
                "pixels_base64": base64.b64encode(np.ascontiguousarray(u8[i]).tobytes()).decode(),
                "top_k": [int(j) for j in np.argsort(-logits[i])[:k]],
                "logits": [round(float(v), 6) for v in logits[i]],
            }
        )
    return {
        "format": "cnnlab-golden/1",
        "top_k": k,
        "logit_tolerance": GOLDEN_TOL,
        "images": images,
    }


def export(
    run,
    fmt: str = "onnx",
    out=None,
    int8: bool = False,
    quant: str = "static",
    data_dir=None,
    parity_images: int | None = 10000,
    which: str = "best",
    onnx_exporter: str = "auto",
    check: bool = True,
    input_kind: str = "float",
    layout: str = "NHWC",
    input_channels: int | None = None,
    invert: bool = False,
    golden: int = 8,
) -> dict:
    """Export ``run`` and check it against the original model; returns the parity report.

    Raises CnnlabError (and writes nothing) when parity fails for an fp32 export.
    """
    if fmt not in FORMATS:
        raise CnnlabError(choices_msg("export format", fmt, FORMATS))
    if int8 and fmt != "onnx":
        raise CnnlabError("--int8 needs --format onnx (quantisation runs in ONNX Runtime)")
    if quant not in QUANT_MODES:
        raise CnnlabError(choices_msg("quantisation mode", quant, QUANT_MODES))
    if input_kind not in INPUT_KINDS:
        raise CnnlabError(choices_msg("input kind", input_kind, INPUT_KINDS))
    if layout not in LAYOUTS:
        raise CnnlabError(choices_msg("layout", layout, LAYOUTS))
    if int8 and input_kind == "uint8":
        raise CnnlabError("--int8 takes the float input; export --input uint8 without --int8")
    if golden < 0:
        raise CnnlabError("--golden must be ≥ 0")
    t0 = time.perf_counter()
    wrapper, meta = pixel_model(run, which)
    model = wrapper.model
    c = meta["input"]["channels"]
    if input_kind == "uint8":
        ic = input_channels or c
        if ic not in (c, 3) or (ic == 3 and c != 1 and c != 3):
            raise CnnlabError(f"--input-channels must be {c}" + (" or 3" if c == 1 else ""))
        wrapper = Uint8Model(wrapper, meta["input"]["size"], ic, layout, invert).eval()
        example = example_images(meta, layout, ic)
    else:
        if input_channels or invert:
            raise CnnlabError("--input-channels and --invert need --input uint8")
        ic = c
        example = example_pixels(meta)
    out = Path(out) if out else default_out(run, fmt, int8, input_kind)
    if out.is_dir():  # --out DIR: the default file name inside it
        out = out / default_out(run, fmt, int8, input_kind).name

    exporter = "torch.jit.trace" if fmt == "torchscript" else "torch.export"
    if fmt == "onnx":
        data, exporter = onnx_bytes(wrapper, example, onnx_exporter)
    md = export_metadata(
        meta, run, fmt, exporter, quant if int8 else None, input_kind, layout, ic, invert
    )

    report: dict = {"export": str(out), "format": fmt, "exporter": exporter}
    if check or int8:
        pix, norm, y, ds = run_test_data(meta, data_dir, parity_images, run_dir_of(run))
        if input_kind == "uint8" and invert:  # the reference sees what the graph's invert does
            border = torch.cat(
                [pix[:, :, 0, :], pix[:, :, -1, :], pix[:, :, :, 0], pix[:, :, :, -1]], dim=2
            ).mean(dim=(1, 2))
            flip = (border > 0.5).reshape(-1, 1, 1, 1)
            mean_t, std_t = wrapper.pixels.mean, wrapper.pixels.std
            norm = (torch.where(flip, 1 - pix, pix) - mean_t) / std_t
        with torch.no_grad():
            ref = _logits(lambda x: model(x).float().numpy(), norm)
        report.update(dataset=ds.name, split="test", images=int(len(y)))

    if fmt == "onnx":
        if int8:
            data = _quantize(data, quant, meta, data_dir)
        data = _with_onnx_metadata(data, md)
    elif fmt == "torchscript":
        data = _write_torchscript(wrapper, example, md)
    else:
        data = _write_exported_program(wrapper, example, md)

    gold = None
    if check or int8:
        runner = load_runner(data, fmt)
        u8 = np.rint(pix.numpy() * 255).astype(np.uint8)  # the test images as 8-bit pixels
        if ic == 3 and c == 1:  # grey images given as RGB: the graph converts them back
            u8 = np.repeat(u8, 3, axis=1)
        inp = u8 if input_kind == "uint8" else None

        def feed(sl):
            return to_layout(inp[sl], layout) if inp is not None else pix[sl].numpy()

        got = np.concatenate(
            [np.asarray(runner(feed(slice(i, i + 500)))) for i in range(0, len(pix), 500)]
        )
        labels = y.numpy()
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        acc_ref = float((ref.argmax(1) == labels).mean())
        acc_exp = float((got.argmax(1) == labels).mean())
        # the dynamic batch axis: one image and an odd batch give the same logits
        single = np.asarray(runner(feed(slice(0, 1))))
        odd = np.asarray(runner(feed(slice(0, min(3, len(pix))))))
        batch_diff = float(max(np.abs(single - got[:1]).max(), np.abs(odd - got[: len(odd)]).max()))
        report.update(
            max_abs_logit_diff=float(np.abs(got - ref).max()),
            top1_agreement=agree,
            batch_invariance_max_diff=batch_diff,
            accuracy_reference=acc_ref,
            accuracy_export=acc_exp,
            accuracy_delta=acc_exp - acc_ref,
        )
        tol = MAX_ABS_LOGIT_DIFF if input_kind == "float" else UINT8_LOGIT_DIFF
        if int8:
            report.update(int8=quant, passed=True)
        else:
            report.update(
                tolerance=tol,
                passed=bool(
                    report["max_abs_logit_diff"] <= tol and agree == 1.0 and batch_diff <= tol
                ),
            )
        if golden:
            gold = golden_set(u8, labels, got, golden)
            gold["input"] = md["input"]
    report.update(
        bytes=len(data),
        seconds=round(time.perf_counter() - t0, 2),
        metadata={k: md[k] for k in ("classes", "input", "normalization", "source_run")},
        cnnlab_version=__version__,
    )
    parity_path = companion(out, "parity")
    report["parity_file"] = str(parity_path)
    if "passed" in report and not report["passed"]:
        atomic_write_text(parity_path, json.dumps(report, indent=1))
        raise CnnlabError(
            f"parity check failed: max |Δlogit| {report['max_abs_logit_diff']:.2e} "
            f"(≤ {report['tolerance']:g}), top-1 agreement {report['top1_agreement']:.4%}; "
            f"nothing exported (report in {parity_path})"
        )
    digest = hashlib.sha256(data).hexdigest()
    report["sha256"] = digest
    report["sidecar_file"] = str(companion(out, "meta"))
    files = [(out, data), (companion(out, "meta"), {**md, "sha256": digest})]
    if gold is not None:
        files.append((companion(out, "golden"), {**gold, "model_sha256": digest}))
        report["golden_file"] = str(companion(out, "golden"))
    files.append((parity_path, report))
    write_export_set(
        [(p, b if isinstance(b, bytes) else json.dumps(b, indent=1).encode()) for p, b in files]
    )
    return report


def write_export_set(files: list[tuple[Path, bytes]]) -> None:
    """An export's files (model, sidecar, golden set, parity report) as one set: each is
    staged beside its target first (where a full disk fails), then all are renamed into
    place. A failure removes what was staged and leaves an earlier export whole."""
    staged: list[tuple[str, Path]] = []
    path = files[0][0]
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, target in staged:
            os.replace(tmp, target)
    except OSError as e:
        for tmp, _ in staged:
            unlink_quietly(tmp)
        raise CnnlabError(f"{io_error(path, e)}; nothing exported") from None
    except BaseException:
        for tmp, _ in staged:
            unlink_quietly(tmp)
        raise
    fsync_dir(files[0][0].parent)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Calibration:
    """ONNX Runtime CalibrationDataReader over training images (pixels in [0, 1])."""

    def __init__(self, x: np.ndarray, batch: int = 64):
        self.batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.it = iter(self.batches)

    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"pixels": b}

    def rewind(self):
        self.it = iter(self.batches)


def _quantize(data: bytes, mode: str, meta: dict, data_dir, n_calib: int = 512) -> bytes:
    """int8 ONNX via ONNX Runtime: static (QDQ, calibrated on training images) or dynamic."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, dst = Path(td) / "fp32.onnx", Path(td) / "int8.onnx"
        src.write_bytes(data)
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(td) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:
            pass  # pre-processing only improves fusion; quantise the raw graph otherwise
        if mode == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        else:
            calib = _calibration_pixels(meta, data_dir, n_calib)
            quantize_static(
                str(src),
                str(dst),
                _Calibration(calib),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        return dst.read_bytes()


def _calibration_pixels(meta: dict, data_dir, n: int) -> np.ndarray:
    ds = load_run_dataset(meta, data_dir)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds.train_x), generator=g)[:n]
    loader = loader_for(meta, ds.train_x[idx], ds.train_y[idx], "cpu")
    return loader.pixels(loader.x, train=False).numpy()


def format_report(r: dict) -> str:
    lines = [
        f"exported {r['format']} ({r['exporter']}) → {r['export']} ({r['bytes'] / 1e3:.0f} kB)"
    ]
    if "images" in r:
        lines.append(f"parity on {r['images']} {r['dataset']} {r['split']} images:")
        if r.get("int8"):
            lines.append(
                f"  int8 ({r['int8']}): accuracy {r['accuracy_export']:.4f} vs fp32 "
                f"{r['accuracy_reference']:.4f} (Δ {r['accuracy_delta']:+.4f}), "
                f"top-1 agreement {r['top1_agreement']:.4%}, max |Δlogit| "
                f"{r['max_abs_logit_diff']:.3g}"
            )
        else:
            lines.append(
                f"  max |Δlogit| {r['max_abs_logit_diff']:.2e} (≤ {r['tolerance']:g}), "
                f"top-1 agreement {r['top1_agreement']:.2%}, batch-size invariance "
                f"{r['batch_invariance_max_diff']:.1e}, accuracy {r['accuracy_export']:.4f} "
                f"→ {'PASS' if r['passed'] else 'FAIL'}"
            )
    for k in ("sidecar_file", "golden_file"):
        if k in r:
            lines.append(f"{k.split('_')[0]} → {r[k]}")
    lines.append(f"report → {r['parity_file']}")
    return "\n".join(lines)


def export_path_kind(path) -> str | None:
    """'onnx' | 'torchscript' | 'exported-program' for a file name, else None."""
    name = os.fspath(path)
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".pt2"):
        return "exported-program"
    if name.endswith(".pt"):
        return "torchscript"
    return None
