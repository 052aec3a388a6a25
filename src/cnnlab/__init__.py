"""cnnlab — train, understand, stress-test and ship a classic image classifier.

The names below are the Python API. They load lazily (PEP 562), so ``import cnnlab`` and
the ``cnnlab`` command start without importing torch until a name is used.
"""

from __future__ import annotations

import importlib

from cnnlab._version import __version__

# public name -> the module that defines it
_API = {
    "Config": "cnnlab.config",
    "load_recipe": "cnnlab.config",
    "CnnlabError": "cnnlab.errors",
    "Dataset": "cnnlab.data.datasets",
    "list_datasets": "cnnlab.data.datasets",
    "load_dataset": "cnnlab.data.datasets",
    "create_model": "cnnlab.models",
    "list_models": "cnnlab.models",
    "load_model": "cnnlab.runs.load",
    "Trainer": "cnnlab.train.trainer",
    "TrainResult": "cnnlab.train.trainer",
    "fit": "cnnlab.train.api",
    "find_lr": "cnnlab.train.lr_find",
    "evaluate": "cnnlab.inference",
    "predict": "cnnlab.inference",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
