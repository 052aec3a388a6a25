"""What an export says about itself: the metadata written into the file (ONNX
``metadata_props``, an extra file in TorchScript and ``.pt2``) and beside it (the sidecar
``<file>.json``), and what the server reports as its model.

The input's dtype, layout, range and shape; what the outputs mean; the preprocessing
steps in order (``inference.pixels``'s, each saying whether the graph does it); the
classes, the normalisation, the model, the run it came from (a name, no local path), its
out-of-distribution threshold and its test-time-augmentation views; the cnnlab version.
"""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab._version import __version__
from cnnlab.analysis.ood import load_ood
from cnnlab.inference.pixels import LIGHT_BORDER, LUMA, light_on_dark, norm_stats
from cnnlab.inference.views import views_record
from cnnlab.runs.load import resolve_checkpoint, run_dir_of

EXPORT_FORMAT = "cnnlab-export/1"
INPUT_KINDS = ("float", "uint8")
LAYOUTS = ("NHWC", "NCHW")
MAX_SIDE = 4096  # the uint8 graph's largest image side


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
    grey = "grey = {} R + {} G + {} B (ITU-R 601-2)".format(*LUMA)
    return [
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
            "detail": grey if c == 1 else "RGB",
            "in_graph": u8 and c == 1 and ic == 3,  # a 1-channel graph takes grey already
        },
        {"op": "resize", "size": [s, s], "filter": "bilinear", "antialias": True, "in_graph": u8},
        {
            "op": "invert",
            "when": f"the border's mean is above {LIGHT_BORDER} of 255 (dark ink on a light "
            "background)",
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


def io_metadata(
    meta: dict, input_kind: str, layout: str, in_channels: int | None
) -> tuple[dict, list[dict]]:
    """The graph's input and its outputs, as the metadata describes them."""
    c, s = meta["input"]["channels"], meta["input"]["size"]
    logits = {
        "name": "logits",
        "shape": ["batch", len(meta["classes"])],
        "meaning": "logits (unnormalised scores; softmax gives probabilities)",
    }
    if input_kind != "uint8":
        pixels = {
            "name": "pixels",
            "shape": ["batch", c, s, s],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW",
        }
        return pixels, [logits]
    ic = in_channels or c
    shape = (
        ["batch", "height", "width", ic] if layout == "NHWC" else ["batch", ic, "height", "width"]
    )
    images = {
        "name": "images",
        "shape": shape,
        "dtype": "uint8",
        "range": [0, 255],
        "layout": layout,
        "height_width": [1, MAX_SIDE],
        "model_size": [s, s],
    }
    probs = {
        "name": "probabilities",
        "shape": ["batch", len(meta["classes"])],
        "meaning": "softmax of the logits",
    }
    return images, [logits, probs]


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
    """The metadata of an export of the run ``source`` (checkpoint metadata ``meta``)."""
    mean, std = norm_stats(meta)
    run = run_dir_of(source)
    input_md, outputs = io_metadata(meta, input_kind, layout, in_channels)
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
        "tta": views_record(meta),
        "cnnlab_version": __version__,
    }


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
