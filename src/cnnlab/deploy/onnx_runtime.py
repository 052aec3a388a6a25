"""ONNX Runtime sessions and an export's metadata, without torch: what a serving-only
install (``pip install cnnlab`` without the ``train`` extra) needs to run an exported
``.onnx`` file. ``deploy/export.py`` writes what this reads."""

from __future__ import annotations

import json

import numpy as np

from cnnlab.errors import CnnlabError

META_KEY = "cnnlab"  # ONNX metadata_props key / extra-file name (cnnlab.json) holding metadata


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


def to_layout(u8: np.ndarray, layout: str) -> np.ndarray:
    """uint8 (B, C, S, S) → the export's layout."""
    return np.ascontiguousarray(u8.transpose(0, 2, 3, 1) if layout == "NHWC" else u8)


__all__ = ["META_KEY", "ort_session", "read_onnx_metadata", "session_metadata", "to_layout"]
