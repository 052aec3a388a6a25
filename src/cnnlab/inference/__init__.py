"""Using a trained run: score it on a dataset, classify images with it — what ``cnnlab
eval``, ``cnnlab predict``, the report and the server share.

- ``pixels``: image → model input (decode, resize, grey, the light-on-dark check and
  inversion, [0, 1], the normalisation statistics);
- ``views``: the test-time-augmentation (TTA) views a run was trained with;
- ``answer``: model output → the one answer shape of ``predict --json`` and
  ``POST /v1/predict`` (softmax, TTA averaging, the out-of-distribution flag);
- ``model``: the run's model on [0, 1] pixels (normalisation folded in), TTA on a device;
- ``scoring``: ``score`` and ``evaluate`` (a checkpoint on a split), worst mistakes;
- ``classify``: ``predict`` (image files or arrays → answers).

``pixels``, ``views`` and ``answer`` import no torch: the server runs them on an ONNX
export without it. The names below load lazily (PEP 562), so importing this package costs
no torch either.
"""

from __future__ import annotations

import importlib

# public name -> the module of this package that defines it
_API = {
    "predict": "classify",
    "Scored": "scoring",
    "score": "scoring",
    "evaluate": "scoring",
    "tta_metrics": "scoring",
    "per_sample": "scoring",
    "worst_mistakes": "scoring",
    "confused_pairs": "scoring",
    "own_dataset": "scoring",
    "eval_name": "scoring",
    "confusion_figure": "scoring",
    "plot_confusion": "scoring",
    "PixelModel": "model",
    "pixel_model": "model",
    "average_views": "model",
    "strict_fp32": "model",
    "View": "views",
    "TTA_OPS": "views",
    "tta_views": "views",
    "trained_augment": "views",
    "describe_views": "views",
    "apply_view": "views",
    "predictions": "answer",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
