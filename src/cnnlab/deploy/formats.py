"""The export formats as files: TorchScript and torch.export programs written with their
metadata inside, any export loaded back as a runner (ONNX Runtime, TorchScript,
torch.export), its metadata read back, and what its input is."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from cnnlab.deploy.onnx_runtime import META_KEY, ort_session, read_onnx_metadata, to_layout
from cnnlab.deploy.wrappers import DtypeGuard, Uint8Model, export_dims, io_spec
from cnnlab.errors import CnnlabError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}


def write_torchscript(wrapper, example, md) -> bytes:
    """The traced graph, behind a dtype guard, with the metadata as ``cnnlab.json``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(wrapper, example, check_trace=False)
        ts = torch.jit.script(DtypeGuard(ts, isinstance(wrapper, Uint8Model)))
        buf = io.BytesIO()
        torch.jit.save(ts, buf, _extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


def write_exported_program(wrapper, example, md) -> bytes:
    """A torch.export program (batch, and a uint8 graph's height and width, dynamic) with the
    metadata as ``cnnlab.json``."""
    name, _, axes = io_spec(wrapper)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(wrapper, (example,), dynamic_shapes={name: export_dims(axes)})
        buf = io.BytesIO()
        torch.export.save(ep, buf, extra_files={f"{META_KEY}.json": json.dumps(md)})
    return buf.getvalue()


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


def export_input(u8: np.ndarray, md: dict) -> np.ndarray:
    """uint8 images (B, C, S, S) → what the export takes, as its metadata says."""
    if md["input"]["dtype"] == "uint8":
        return to_layout(u8, md["input"]["layout"])
    return u8.astype(np.float32) / np.float32(255.0)


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
