"""cnnlab — train, understand, stress-test and ship a classic image classifier.

The names below are the Python API. They load lazily (PEP 562), so ``import cnnlab`` and
the ``cnnlab`` command start without importing torch until a name is used.
"""

from __future__ import annotations

import importlib
import os

from cnnlab._version import __version__

# OpenMP threads that reach a barrier sleep rather than spin. The thread count is fixed
# (same count, same numbers, whatever the load), so on a busy machine a spinning thread
# burns the time slice its partner needs: LeNet-5's step ran 9-13× slower on 2 threads
# at load average 10 with spinning than with sleeping, with bit-identical results. Read
# by the OpenMP runtime when torch loads, so set before any torch import; a user's own
# OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
