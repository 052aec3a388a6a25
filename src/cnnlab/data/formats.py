"""Readers (and writers, for tests and conversions) of the datasets' official formats.

- IDX (MNIST, Fashion-MNIST): big-endian header ``0 0 <dtype> <ndim>`` then ``ndim``
  32-bit sizes, then the data; raw or gzip-compressed.
- CIFAR-10 "python version" batches: pickles of ``{b'data': uint8 (N, 3072),
  b'labels': [...]}``, read through a restricted unpickler that can only rebuild numpy
  arrays — a hostile file cannot run code.

Every problem becomes a :class:`DataError` naming the file and what is wrong. Sizes read
from headers are checked against the file's size before anything is allocated: a raw
IDX file must hold exactly the declared bytes; a gzip one must declare no more than
deflate's 1032:1 limit allows and what its gzip trailer records (the stream's length),
and its stream is then decompressed in 1 MiB pieces straight into the array (no second
copy), so a header that lies costs no more memory than the data really there.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {v.newbyteorder(">") if v.itemsize > 1 else v: k for k, v in IDX_DTYPES.items()}
# deflate cannot expand data by more than 1032:1; a header promising more is lying.
_MAX_GZIP_RATIO = 1032
_MAX_BYTES = 1 << 33  # 8 GiB: ten times EMNIST's largest file
_CHUNK = 1 << 20


def _gzip_isize(path: Path) -> int:
    """The gzip trailer's record of the uncompressed length (mod 2**32)."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _read_exact(f, n: int, path: Path, dims) -> np.ndarray:
    """``n`` bytes from ``f`` into a new uint8 array, 1 MiB at a time: memory grows only
    as real data arrives (np.empty's pages are untouched until written)."""
    out = np.empty(n, dtype=np.uint8)
    view = memoryview(out)
    got = 0
    while got < n:
        k = f.readinto(view[got : got + min(_CHUNK, n - got)])
        if not k:
            raise DataError(
                f"{path}: truncated: header {dims} needs {n:,} data bytes, found {got:,}"
            )
        got += k
    return out


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array, validating the header."""
    path = Path(path)
    try:
        size_on_disk = path.stat().st_size
        gz = _is_gzip(path)
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: truncated IDX file (no 4-byte header)")
            if head[0] != 0 or head[1] != 0:
                raise DataError(
                    f"{path}: not an IDX file (bad magic number {head.hex()}); "
                    "expected the official MNIST-format files"
                )
            code, ndim = head[2], head[3]
            if code not in IDX_DTYPES:
                raise DataError(f"{path}: unknown IDX data type 0x{code:02x}")
            if not 1 <= ndim <= 8:
                raise DataError(f"{path}: IDX header claims {ndim} dimensions (1-8 allowed)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = IDX_DTYPES[code]
            expected = math.prod(dims) * dtype.itemsize
            limit = size_on_disk * _MAX_GZIP_RATIO if gz else size_on_disk - 4 - 4 * ndim
            if expected > _MAX_BYTES or (gz and expected > limit):
                raise DataError(
                    f"{path}: IDX header claims dimensions {dims} ({expected:,} bytes), "
                    f"impossible for a {size_on_disk:,}-byte file"
                )
            if not gz and expected != limit:
                what = "truncated" if expected > limit else "has trailing bytes"
                raise DataError(
                    f"{path}: {what}: header {dims} needs {expected:,} data bytes, "
                    f"file holds {limit:,}"
                )
            if gz:
                total = 4 + 4 * ndim + expected
                isize = _gzip_isize(path)
                if isize != total % (1 << 32):
                    raise DataError(
                        f"{path}: IDX header claims dimensions {dims} ({total:,} bytes with "
                        f"the header) but the gzip stream records {isize:,} bytes: "
                        "truncated or corrupt"
                    )
            data = _read_exact(f, expected, path, dims)
            if gz and f.read(1):
                raise DataError(f"{path}: has trailing bytes after the {dims} data")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated file ({e})") from None
    arr = data.view(dtype).reshape(dims)  # writable, the only copy
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as IDX (gzip if ``compress`` or the name ends in .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if key not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    body = struct.pack(">BBBB", 0, 0, _IDX_CODES[key], arr.ndim)
    body += struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(key).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body)
    path.write_bytes(body)


class _Refused(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """numpy's protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``; any
    other codec (compression, rot13, ...) has no business in a CIFAR batch."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"it asks for the {encoding!r} codec")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only what CIFAR's pickles contain: numpy arrays and dtypes."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"it asks for {module}.{name}")
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        # Walk the opcodes first: a length field that promises more bytes than the file
        # holds (b"B\x00\x00\x00\x04" claims 64 MiB) would make the C unpickler
        # allocate that much before noticing; genops reads lazily and just fails.
        for _ in pickletools.genops(raw):
            pass
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise DataError(
            f"{path}: refused: not a CIFAR batch file ({e}; only numpy arrays are allowed)"
        ) from None
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes
        raise DataError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


def _get(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def read_cifar_batch(
    path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch → (uint8 (N, 3, 32, 32), int64 (N,))."""
    path = Path(path)
    d = safe_unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR batch, found {type(d).__name__}")
    data = _get(d, "data")
    labels = _get(d, "labels")
    if labels is None:
        labels = _get(d, "fine_labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: CIFAR batch lacks 'data' array or 'labels'")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: CIFAR 'data' must be uint8 (N, 3072), found {data.dtype} {data.shape}"
        )
    ints = (
        labels.dtype.kind in "iu"
        if isinstance(labels, np.ndarray)
        else isinstance(labels, list)
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels)
    )
    try:
        if not ints:
            raise TypeError
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: CIFAR 'labels' are not a list of integers") from None
    if y.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {y.size} labels")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def read_cifar_meta(path: str | os.PathLike) -> list[str] | None:
    d = safe_unpickle(path)
    names = _get(d, "label_names") if isinstance(d, dict) else None
    if not isinstance(names, list):
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def write_cifar_batch(path: str | os.PathLike, images: np.ndarray, labels, meta_names=None) -> None:
    """Write a CIFAR-format batch (for tests); ``images`` uint8 (N, 3, 32, 32)."""
    d = {
        b"batch_label": b"generated",
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), 3072),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    Path(path).write_bytes(pickle.dumps(d, protocol=2))
