"""Property-based fuzzing (hypothesis) of everything that parses untrusted input: the IDX
and CIFAR readers, image decoding for `predict`, and the config parser. Random and
mutated inputs may only produce a result or a clean typed error — never another
exception, a hang or a huge allocation from a lying header."""

import gzip
import io
import os
import pickle
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.config import Config, apply_overrides, from_dict, load_recipe
from cnnlab.data.formats import read_cifar_batch, read_idx, write_cifar_batch, write_idx
from cnnlab.data.images import load_image
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.train.validate import validate

# examples per property; CNNLAB_FUZZ_EXAMPLES=5000 for a long random campaign
N = int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=N,
    deadline=None,  # the machine is shared: wall-clock deadlines would be flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize="CNNLAB_FUZZ_EXAMPLES" not in os.environ,  # CI: the same examples each run
)
MAX_ALLOC = 64 << 20  # no input below a few KB may make us allocate more than 64 MiB


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few random byte flips, overwrites, insertions, deletions, cuts."""
    b = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "u32"]))
        i = draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and b:
            b[i] = draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and b:
            del b[i : i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del b[i:]
        elif op == "u32" and len(b) >= i + 4:  # a lying size field
            b[i : i + 4] = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 60000])).to_bytes(
                4, "big"
            )
    return bytes(b)


def _write(data: bytes, suffix="") -> Path:
    f = tempfile.NamedTemporaryFile(delete=False, suffix=suffix)
    f.write(data)
    f.close()
    return Path(f.name)


def _bounded(fn, *args):
    """Run ``fn``; return its result or the typed error, asserting a modest peak allocation."""
    tracemalloc.start()
    try:
        return fn(*args)
    except CnnlabError as e:
        assert "\n" not in str(e), "errors are one line"
        return e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MAX_ALLOC, f"{peak:,} bytes allocated"


# -- IDX --------------------------------------------------------------------------------


def _idx_seed(gz: bool) -> bytes:
    p = _write(b"", ".gz" if gz else "")
    write_idx(p, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), compress=gz)
    data = p.read_bytes()
    p.unlink()
    return data


IDX_RAW, IDX_GZ = _idx_seed(False), _idx_seed(True)


def _check_idx(data: bytes):
    p = _write(data)
    try:
        r = _bounded(read_idx, p)
    finally:
        p.unlink()
    assert isinstance(r, (np.ndarray, DataError)), type(r)


@FUZZ
@given(st.binary(max_size=512))
def test_idx_random_bytes(data):
    _check_idx(data)


@FUZZ
@given(st.one_of(mutated(IDX_RAW), mutated(IDX_GZ)))
def test_idx_mutated(data):
    _check_idx(data)


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.booleans())
def test_idx_lying_dims_are_checked_before_allocating(dims, gz):
    head = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    body = head + bytes(64)
    _check_idx(gzip.compress(body) if gz else body)


# -- CIFAR pickles ------------------------------------------------------------------------


def _cifar_seed() -> bytes:
    p = _write(b"")
    write_cifar_batch(p, np.zeros((2, 3, 32, 32), np.uint8), [1, 2])
    data = p.read_bytes()
    p.unlink()
    return data


CIFAR = _cifar_seed()

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=20)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.binary(max_size=8), kids, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _check_cifar(data: bytes):
    p = _write(data)
    try:
        r = _bounded(read_cifar_batch, p)
    finally:
        p.unlink()
    assert isinstance(r, (tuple, DataError)), type(r)


@FUZZ
@given(st.binary(max_size=512))
def test_cifar_random_bytes(data):
    _check_cifar(data)


@FUZZ
@given(mutated(CIFAR))
def test_cifar_mutated(data):
    _check_cifar(data)


@FUZZ
@given(plain, st.integers(0, 4))
def test_cifar_wrong_structures(labels, protocol):
    """Well-formed pickles of the wrong shape: odd labels, odd types, odd nesting."""
    obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}
    _check_cifar(pickle.dumps(obj, protocol=protocol))
    _check_cifar(pickle.dumps(labels, protocol=protocol))


# -- images for predict -------------------------------------------------------------------


def _image_seeds() -> list[bytes]:
    from PIL import Image

    out = []
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "L")):
        buf = io.BytesIO()
        Image.new(mode, (9, 7)).save(buf, fmt)
        out.append(buf.getvalue())
    return out


IMAGES = _image_seeds()


def _check_image(data: bytes, channels: int):
    p = _write(data)
    try:
        r = _bounded(load_image, p, channels, 28)
    finally:
        p.unlink()
    if isinstance(r, np.ndarray):
        assert r.shape == (channels, 28, 28) and r.dtype == np.uint8
    else:
        assert isinstance(r, CnnlabError), type(r)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([1, 3]))
def test_image_random_bytes(data, c):
    _check_image(data, c)


@FUZZ
@given(st.one_of(*(mutated(s) for s in IMAGES)), st.sampled_from([1, 3]))
def test_image_mutated(data, c):
    _check_image(data, c)


@pytest.mark.parametrize("side", [8192, 10_000, 30_000])  # vs file size; our cap; PIL
def test_image_decompression_bomb_header_is_refused(side):
    """A tiny PNG whose header claims side × side pixels must not be decoded."""
    import struct
    import zlib

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    p = _write(png, ".png")
    try:
        with pytest.raises(CnnlabError, match="too large"):
            _bounded_raise(load_image, p)
    finally:
        p.unlink()


def _bounded_raise(fn, p):
    r = _bounded(fn, p, 1, 28)
    if isinstance(r, Exception):
        raise r


# -- config --------------------------------------------------------------------------------

KEYS = [f"{sec}.{k}" for sec, d in Config().to_dict().items() for k in d] + [
    "model.activation",
    "data.num_train",
    "optim.nope",
    "nope.x",
    "train",
    "",
    "a.b.c",
]
values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1e999", "-1", "nan", "[1, 2]", "{a: 1}", "null", "true", "!!python/none",
                     "&a [*a]", "0x10", "1_000", "'", "{", "- -"]),
)  # fmt: skip


def _check_config(fn, *args):
    try:
        cfg = fn(*args)
        validate(cfg)
    except (ConfigError, CnnlabError) as e:
        assert "\n" not in str(e), "errors are one line"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=12), values), max_size=5))
def test_config_overrides(pairs):
    _check_config(apply_overrides, Config(), [f"{k}={v}" for k, v in pairs])
    _check_config(apply_overrides, Config(), [k for k, _ in pairs])  # no '='


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["model", "data", "optim", "sched", "train", "run"]) | st.text(max_size=6),
        st.none() | plain | st.dictionaries(st.sampled_from([k.split(".")[-1] for k in KEYS]), plain),
        max_size=4,
    )
)  # fmt: skip
def test_config_from_dict(d):
    _check_config(from_dict, d)


@FUZZ
@given(st.one_of(st.text(max_size=200), values, mutated(Config().to_yaml().encode())))
def test_config_recipe_text(text):
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    p = _write(raw, ".yaml")
    try:
        _check_config(load_recipe, p)
    finally:
        p.unlink()
