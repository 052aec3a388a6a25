"""cnnlab — train, understand, stress-test and ship a classic image classifier.

The names below are the Python API. They load lazily (PEP 562), so ``import cnnlab`` and
the ``cnnlab`` command start without importing torch until a name is used.
"""

from __future__ import annotations

import importlib
import os

from cnnlab._version import __version__

# OpenMP threads that reach a barrier spin only briefly, then sleep. The thread count is
# fixed (same count, same numbers, whatever the load), so on a busy machine a spinning
# thread burns the time slice its partner needs. LeNet-5's step on 2 threads
# (benchmarks/omp_wait.py, results omp-wait.json): idle 0.33 s (libgomp's default spin)
# vs 0.38 s; with 4 busy loops 4.27 vs 1.35 s; with 8, 14.8 vs 3.0 s; the same bits in
# every case. Read by the OpenMP runtime when torch loads, so set before any torch
# import; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

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
