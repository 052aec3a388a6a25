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
"""

from __future__ import annotations

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
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
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
META_KEY = "cnnlab"  # ONNX metadata_props key / extra-file name (cnnlab.json) holding metadata
MAX_ABS_LOGIT_DIFF = 1e-4
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
        return self.model((pixels - self.mean) / self.std)


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


def export_metadata(meta: dict, source, fmt: str, exporter: str, int8: str | None = None) -> dict:
    inp = meta["input"]
    mean, std = norm_stats(meta)
    run = run_dir_of(source)
    return {
        "format": EXPORT_FORMAT,
        "export_format": fmt,
        "exporter": exporter,
        "int8": int8,
        "classes": list(meta["classes"]),
        "input": {
            "name": "pixels",
            "shape": ["batch", inp["channels"], inp["size"], inp["size"]],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW",
        },
        "normalization": {"mean": mean, "std": std, "folded": True},
        "model": meta.get("model", {}),
        "dataset": meta.get("dataset"),
        "source_run": str(Path(run).resolve()),
        "checkpoint": str(resolve_checkpoint(source).resolve()),
        "epoch": meta.get("epoch"),
        "test_acc": (meta.get("metrics") or {}).get("test_acc"),
        "ood": load_ood(run),
        "cnnlab_version": __version__,
    }


# --------------------------------------------------------------------------- writers


def onnx_bytes(wrapper: nn.Module, example: torch.Tensor, exporter: str) -> tuple[bytes, str]:
    """ONNX bytes via the torch.export-based (dynamo) exporter; the legacy TorchScript
    exporter is the fallback for graphs the new one cannot take (and on request)."""
    if exporter not in ("dynamo", "legacy", "auto"):
        raise CnnlabError(choices_msg("ONNX exporter", exporter, ("auto", "dynamo", "legacy")))
    errors = []
    if exporter in ("auto", "dynamo"):
        with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = Path(td) / "m.onnx"
            try:
                prog = torch.onnx.export(
                    wrapper,
                    (example,),
                    input_names=["pixels"],
                    output_names=["logits"],
                    dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=65536)}},
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
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue(), "legacy" + (" (dynamo failed)" if errors else "")


def _with_onnx_metadata(data: bytes, md: dict) -> bytes:
    import onnx

    m = onnx.load_from_string(data)
    del m.metadata_props[:]
    flat = {
        META_KEY: json.dumps(md),
        "classes": json.dumps(md["classes"]),
        "input_shape": json.dumps(md["input"]["shape"]),
        "normalization": json.dumps(md["normalization"]),
        "source_run": md["source_run"],
        "cnnlab_version": md["cnnlab_version"],
    }
    for k, v in flat.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "cnnlab"
    m.producer_version = __version__
    return m.SerializeToString()


def read_onnx_metadata(path_or_bytes) -> dict:
    """The cnnlab metadata of an exported ONNX file (from its metadata_props)."""
    return session_metadata(ort_session(path_or_bytes), path_or_bytes)


def session_metadata(sess, source) -> dict:
    """The cnnlab metadata of an ONNX Runtime session's model (``source`` names it)."""
    md = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in md:
        raise CnnlabError(f"{source}: not a cnnlab export (no '{META_KEY}' metadata)")
    return json.loads(md[META_KEY])


def ort_session(path_or_bytes, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise CnnlabError(
            f"cannot load ONNX model {str(path_or_bytes)[:80]}: {str(e)[:160]}"
        ) from None


def _write_torchscript(wrapper, example, md) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(wrapper, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(ts, buf, _extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


def _write_exported_program(wrapper, example, md) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(wrapper, (example,), dynamic_shapes={"pixels": {0: batch}})
        buf = io.BytesIO()
        torch.export.save(ep, buf, extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


# --------------------------------------------------------------------------- runners


def load_runner(path_or_bytes, fmt: str, threads: int = 0):
    """A callable float32 ndarray (B, C, S, S) in [0,1] → logits ndarray, for an export."""
    if fmt == "onnx":
        sess = ort_session(path_or_bytes, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            m = torch.jit.load(src, map_location="cpu").eval()
        else:
            m = torch.export.load(src).module()

    def run(x):
        with torch.no_grad():
            return m(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

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


def run_test_data(meta: dict, data_dir=None, limit: int | None = None):
    """(pixels01 float (N, C, S, S), normalised (N, C, S, S), labels) from the run's test split,
    prepared exactly as evaluation prepares them."""
    ds = load_run_dataset(meta, data_dir)
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


def _logits(fn, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + batch])) for i in range(0, len(x), batch)])


# --------------------------------------------------------------------------- export


def default_out(run, fmt: str, int8: bool = False) -> Path:
    name = "model" + (".int8" if int8 else "") + FORMATS[fmt]
    return run_dir_of(run) / "export" / name


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
    t0 = time.perf_counter()
    wrapper, meta = pixel_model(run, which)
    model = wrapper.model
    example = example_pixels(meta)
    out = Path(out) if out else default_out(run, fmt, int8)
    if out.is_dir():  # --out DIR: the default file name inside it
        out = out / default_out(run, fmt, int8).name

    exporter = "torch.jit.trace" if fmt == "torchscript" else "torch.export"
    if fmt == "onnx":
        data, exporter = onnx_bytes(wrapper, example, onnx_exporter)
    md = export_metadata(meta, run, fmt, exporter, quant if int8 else None)

    report: dict = {"export": str(out), "format": fmt, "exporter": exporter}
    if check or int8:
        pix, norm, y, ds = run_test_data(meta, data_dir, parity_images)
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

    if check or int8:
        runner = load_runner(data, fmt)
        got = _logits(runner, pix.numpy())
        labels = y.numpy()
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        acc_ref = float((ref.argmax(1) == labels).mean())
        acc_exp = float((got.argmax(1) == labels).mean())
        # the dynamic batch axis: one image and an odd batch give the same logits
        single = np.asarray(runner(pix[:1].numpy()))
        odd = np.asarray(runner(pix[: min(3, len(pix))].numpy()))
        batch_diff = float(max(np.abs(single - got[:1]).max(), np.abs(odd - got[: len(odd)]).max()))
        report.update(
            max_abs_logit_diff=float(np.abs(got - ref).max()),
            top1_agreement=agree,
            batch_invariance_max_diff=batch_diff,
            accuracy_reference=acc_ref,
            accuracy_export=acc_exp,
            accuracy_delta=acc_exp - acc_ref,
        )
        if int8:
            report.update(int8=quant, passed=True)
        else:
            report.update(
                tolerance=MAX_ABS_LOGIT_DIFF,
                passed=bool(
                    report["max_abs_logit_diff"] <= MAX_ABS_LOGIT_DIFF
                    and agree == 1.0
                    and batch_diff <= MAX_ABS_LOGIT_DIFF
                ),
            )
    report.update(
        bytes=len(data),
        seconds=round(time.perf_counter() - t0, 2),
        metadata={k: md[k] for k in ("classes", "input", "normalization", "source_run")},
        cnnlab_version=__version__,
    )
    parity_path = out.with_name(out.name + ".parity.json")
    report["parity_file"] = str(parity_path)
    if "passed" in report and not report["passed"]:
        atomic_write_text(parity_path, json.dumps(report, indent=1))
        raise CnnlabError(
            f"parity check failed: max |Δlogit| {report['max_abs_logit_diff']:.2e} "
            f"(≤ {MAX_ABS_LOGIT_DIFF:g}), top-1 agreement {report['top1_agreement']:.4%}; "
            f"nothing exported (report in {parity_path})"
        )
    atomic_write_bytes(out, data)
    atomic_write_text(parity_path, json.dumps(report, indent=1))
    return report


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
