"""Nothing cnnlab reads from a file it is handed can run code: checkpoints are
safetensors, torch.load is only ever called with weights_only=True, the CIFAR pickles go
through a restricted unpickler, YAML is parsed with safe_load."""

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.data.formats import read_cifar_batch, safe_unpickle
from cnnlab.errors import CheckpointError, DataError
from cnnlab.runs.checkpoint import load_checkpoint

SRC = Path(cnnlab.__file__).resolve().parent
MARKER = "/tmp/cnnlab-security-pwned"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _sources():
    return [(p, p.read_text()) for p in SRC.rglob("*.py")]


def test_no_unsafe_deserialisation_in_the_package():
    for path, text in _sources():
        rel = path.relative_to(SRC).as_posix()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{rel}: torch.load without weights_only"
        assert not re.search(r"\bpickle\.loads?\(|\bdill\b|\bjoblib\.load", text), rel
        assert not re.search(r"yaml\.(unsafe_)?load\(|yaml\.full_load", text), rel
        if rel != "data/formats.py":
            assert "Unpickler" not in text, rel


def test_hostile_pickle_posing_as_a_checkpoint_runs_nothing(tmp_path):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    p = tmp_path / "last.safetensors"
    p.write_bytes(pickle.dumps({"model": _Evil()}))  # what a torch.save trap would hold
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    p = tmp_path / "cifar"
    p.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused"):
        read_cifar_batch(p)
    assert not os.path.exists(MARKER)


def test_restricted_unpickler_admits_numpy_but_no_other_codec(tmp_path):
    p = tmp_path / "ok"
    p.write_bytes(pickle.dumps({b"data": np.arange(5, dtype=np.uint8)}, protocol=2))
    assert safe_unpickle(p)[b"data"].tolist() == [0, 1, 2, 3, 4]

    class Codec:
        def __reduce__(self):
            import _codecs

            return (_codecs.encode, ("x" * 10, "zlib_codec"))

    p.write_bytes(pickle.dumps(Codec(), protocol=2))
    with pytest.raises(DataError, match="refused.*zlib_codec"):
        safe_unpickle(p)


def test_torch_load_weights_only_refuses_code(tmp_path):
    """The rule the package follows for .pt files: weights_only=True never runs code."""
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Evil()}, p)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(p, weights_only=True)
    assert not os.path.exists(MARKER)
