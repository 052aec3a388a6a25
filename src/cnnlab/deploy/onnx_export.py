"""ONNX: the graph exported by torch (the torch.export-based exporter, the legacy one as
the fallback), the metadata written into its ``metadata_props``, and int8 quantisation in
ONNX Runtime (static, calibrated on training images, or dynamic)."""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab._version import __version__
from cnnlab.deploy.metadata import flat_metadata
from cnnlab.deploy.onnx_runtime import META_KEY
from cnnlab.deploy.wrappers import export_dims, io_spec
from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.runs.load import load_run_dataset, loader_for

OPSET = 18


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
                    dynamic_shapes={name: export_dims(axes)},
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


def with_onnx_metadata(data: bytes, md: dict) -> bytes:
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


class Calibration:
    """ONNX Runtime CalibrationDataReader over training images (pixels in [0, 1])."""

    def __init__(self, x: np.ndarray, batch: int = 64):
        self.batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.it = iter(self.batches)

    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"pixels": b}

    def rewind(self):
        self.it = iter(self.batches)


def quantize(data: bytes, mode: str, meta: dict, data_dir, n_calib: int = 512) -> bytes:
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
            calib = calibration_pixels(meta, data_dir, n_calib)
            quantize_static(
                str(src),
                str(dst),
                Calibration(calib),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        return dst.read_bytes()


def calibration_pixels(meta: dict, data_dir, n: int) -> np.ndarray:
    ds = load_run_dataset(meta, data_dir)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds.train_x), generator=g)[:n]
    loader = loader_for(meta, ds.train_x[idx], ds.train_y[idx], "cpu")
    return loader.pixels(loader.x, train=False).numpy()
