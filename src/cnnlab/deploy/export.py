"""Export a trained run to ONNX, TorchScript or a torch.export program — with proven parity.

The exported graph is ``inference.model.PixelModel``: it takes **float32 pixels in [0, 1]**,
shape ``(B, C, S, S)`` (B dynamic; C, S the model's input channels and size) and returns
logits.
The dataset normalisation ``(x - mean) / std`` is folded into the graph, so a client only
decodes, resizes and divides by 255. Float rather than uint8 input keeps the graph
differentiable (saliency) and quantisable by ONNX Runtime's calibrators.

Every export is checked against the original model on the run's real test images (max
|Δlogit| ≤ 1e-4 and 100% top-1 agreement for fp32); the report is printed and saved as
``<export>.parity.json``. ``int8=True`` (ONNX only) quantises with ONNX Runtime and reports
the test-accuracy delta instead. Files are written to a temp name and renamed.

``input_kind="uint8"`` exports ``wrappers.Uint8Model`` instead: decoded uint8 images of
any size in (N, H, W, C) or (N, C, H, W) go in; the conversion to float, the grey conversion
(RGB input for a grey model), the resize, the scaling and (optionally) the auto-invert run
inside the graph, and both logits and probabilities come out — a C++ or JavaScript client
sends decoded pixels and nothing else.

Beside every export: ``<file>.json`` (the metadata sidecar, for runtimes whose API cannot
read ONNX metadata), ``<file>.golden.json`` (a few test images with the export's expected
top-k, checked by ``cnnlab verify``) and ``<file>.parity.json``. The metadata says, as
separate ONNX ``metadata_props`` keys too, the input's dtype, layout, range and shape, what
the outputs mean, the preprocessing steps in order, the classes, the model and the cnnlab
version; its JSON also the OOD threshold and the TTA views. Paths in it are relative to the
run (no local absolute paths).

The parts: ``wrappers.py`` (the graphs), ``metadata.py`` (what an export says about
itself), ``onnx_export.py`` (ONNX and int8), ``formats.py`` (TorchScript and torch.export
files, loading any export back); here the export itself, its parity check, golden set
and the set of files written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cnnlab._version import __version__
from cnnlab.deploy.formats import (
    FORMATS,
    load_runner,
    write_exported_program,
    write_torchscript,
)
from cnnlab.deploy.metadata import INPUT_KINDS, LAYOUTS, export_metadata
from cnnlab.deploy.onnx_export import onnx_bytes, quantize, with_onnx_metadata
from cnnlab.deploy.onnx_runtime import to_layout
from cnnlab.deploy.wrappers import Uint8Model, example_images, example_pixels
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.inference.model import PixelModel, pixel_model
from cnnlab.inference.pixels import light_background
from cnnlab.runs.files import (
    FILE_MODE,
    atomic_write_text,
    fsync_dir,
    io_error,
    unlink_quietly,
)
from cnnlab.runs.load import load_run_dataset, loader_for, run_dir_of

QUANT_MODES = ("static", "dynamic")
MAX_ABS_LOGIT_DIFF = 1e-4
UINT8_LOGIT_DIFF = 1e-3  # the in-graph resize at scale 1 adds float rounding
GOLDEN_TOL = 1e-3  # |Δlogit| a runtime may differ by on the golden images (fp32)


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


class Reference(NamedTuple):
    """The run's test images and what the original model answers on them."""

    pixels: torch.Tensor  # (N, C, S, S) in [0, 1]
    logits: np.ndarray  # the original model's, on what the export's graph will see
    labels: np.ndarray
    dataset: str


def reference(meta: dict, wrapper: PixelModel, data_dir, limit, run, inverts: bool) -> Reference:
    """The original model on the run's test images, prepared exactly as evaluation prepares
    them; ``inverts``: as a uint8 graph that inverts light backgrounds sees them."""
    pix, norm, y, ds = run_test_data(meta, data_dir, limit, run_dir_of(run))
    if inverts:  # the reference sees what the graph's invert does
        flip = light_background(pix * 255, torch.cat).reshape(-1, 1, 1, 1)
        norm = wrapper.normalize(torch.where(flip, 1 - pix, pix))
    with torch.no_grad():
        ref = _logits(lambda x: wrapper.model(x).float().numpy(), norm)
    return Reference(pix, ref, y.numpy(), ds.name)


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


def check_options(fmt: str, int8: bool, quant: str, input_kind: str, layout: str, golden: int):
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


def export_graph(wrapper: PixelModel, meta: dict, input_kind, input_channels, layout, invert):
    """(the graph to export, an example input to trace it with, its input channels)."""
    c = meta["input"]["channels"]
    if input_kind != "uint8":
        if input_channels or invert:
            raise CnnlabError("--input-channels and --invert need --input uint8")
        return wrapper, example_pixels(meta), c
    ic = input_channels or c
    if ic not in (c, 3) or (ic == 3 and c != 1 and c != 3):
        raise CnnlabError(f"--input-channels must be {c}" + (" or 3" if c == 1 else ""))
    graph = Uint8Model(wrapper, meta["input"]["size"], ic, layout, invert).eval()
    return graph, example_images(meta, layout, ic), ic


def parity(runner, ref: Reference, u8: np.ndarray | None, layout: str) -> tuple[np.ndarray, dict]:
    """The export's logits on the reference images (``u8`` in its layout for a uint8
    graph, else the [0, 1] pixels) and how far they are from the original model's."""

    def feed(sl):
        return to_layout(u8[sl], layout) if u8 is not None else ref.pixels[sl].numpy()

    n = len(ref.pixels)
    got = np.concatenate([np.asarray(runner(feed(slice(i, i + 500)))) for i in range(0, n, 500)])
    # the dynamic batch axis: one image and an odd batch give the same logits
    single = np.asarray(runner(feed(slice(0, 1))))
    odd = np.asarray(runner(feed(slice(0, min(3, n)))))
    acc_ref = float((ref.logits.argmax(1) == ref.labels).mean())
    acc_exp = float((got.argmax(1) == ref.labels).mean())
    return got, {
        "max_abs_logit_diff": float(np.abs(got - ref.logits).max()),
        "top1_agreement": float((got.argmax(1) == ref.logits.argmax(1)).mean()),
        "batch_invariance_max_diff": float(
            max(np.abs(single - got[:1]).max(), np.abs(odd - got[: len(odd)]).max())
        ),
        "accuracy_reference": acc_ref,
        "accuracy_export": acc_exp,
        "accuracy_delta": acc_exp - acc_ref,
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
    check_options(fmt, int8, quant, input_kind, layout, golden)
    t0 = time.perf_counter()
    wrapper, meta = pixel_model(run, which)
    graph, example, ic = export_graph(wrapper, meta, input_kind, input_channels, layout, invert)
    out = Path(out) if out else default_out(run, fmt, int8, input_kind)
    if out.is_dir():  # --out DIR: the default file name inside it
        out = out / default_out(run, fmt, int8, input_kind).name

    exporter = "torch.jit.trace" if fmt == "torchscript" else "torch.export"
    if fmt == "onnx":
        data, exporter = onnx_bytes(graph, example, onnx_exporter)
    md = export_metadata(
        meta, run, fmt, exporter, quant if int8 else None, input_kind, layout, ic, invert
    )
    report: dict = {"export": str(out), "format": fmt, "exporter": exporter}
    if check or int8:
        inverts = input_kind == "uint8" and invert
        ref = reference(meta, wrapper, data_dir, parity_images, run, inverts)
        report.update(dataset=ref.dataset, split="test", images=int(len(ref.labels)))

    if fmt == "onnx":
        data = with_onnx_metadata(quantize(data, quant, meta, data_dir) if int8 else data, md)
    elif fmt == "torchscript":
        data = write_torchscript(graph, example, md)
    else:
        data = write_exported_program(graph, example, md)

    gold = None
    if check or int8:
        u8 = np.rint(ref.pixels.numpy() * 255).astype(np.uint8)  # the test images, 8-bit
        if ic == 3 and meta["input"]["channels"] == 1:  # grey given as RGB: the graph converts
            u8 = np.repeat(u8, 3, axis=1)
        got, diffs = parity(
            load_runner(data, fmt), ref, u8 if input_kind == "uint8" else None, layout
        )
        report.update(diffs)
        if int8:
            report.update(int8=quant, passed=True)
        else:
            tol = MAX_ABS_LOGIT_DIFF if input_kind == "float" else UINT8_LOGIT_DIFF
            ok = diffs["max_abs_logit_diff"] <= tol and diffs["top1_agreement"] == 1.0
            report.update(
                tolerance=tol, passed=bool(ok and diffs["batch_invariance_max_diff"] <= tol)
            )
        if golden:
            gold = {**golden_set(u8, ref.labels, got, golden), "input": md["input"]}
    report.update(
        bytes=len(data),
        seconds=round(time.perf_counter() - t0, 2),
        metadata={k: md[k] for k in ("classes", "input", "normalization", "source_run")},
        cnnlab_version=__version__,
    )
    return write_export(out, data, md, gold, report)


def write_export(out: Path, data: bytes, md: dict, gold: dict | None, report: dict) -> dict:
    """The export's files, written as one set once its parity check passed (the report
    alone, and an error, when it failed); returns the report."""
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
