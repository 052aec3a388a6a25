import gzip
import os
import pickle

import numpy as np
import pytest

from cnnlab.data.formats import (
    read_cifar_batch,
    read_idx,
    safe_unpickle,
    write_cifar_batch,
    write_idx,
)
from cnnlab.errors import DataError


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 4) % 100).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a, compress=gz)
    b = read_idx(p)
    assert b.shape == (2, 3, 4) and b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, b)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_idx_truncated_raw_and_gzip(tmp_path):
    a = np.zeros((10, 28, 28), np.uint8)
    raw = tmp_path / "raw"
    write_idx(raw, a, compress=False)
    data = raw.read_bytes()
    raw.write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"raw: truncated"):
        read_idx(raw)
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(gz)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(cut)


def test_idx_lying_header_is_refused_without_allocating(tmp_path):
    p = tmp_path / "lie.gz"
    # claims 4e9 × 4e9 bytes in a file of a few dozen
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x02" + (4_000_000_000).to_bytes(4, "big") * 2))
    with pytest.raises(DataError, match="impossible"):
        read_idx(p)


def test_idx_unknown_dtype_and_dims(tmp_path):
    p = tmp_path / "d"
    p.write_bytes(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="data type"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="dimensions"):
        read_idx(p)


def test_cifar_roundtrip(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (7, 3, 32, 32)).astype(np.uint8)
    y = [0, 1, 2, 3, 4, 5, 9]
    write_cifar_batch(tmp_path / "b", x, y)
    xr, yr = read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(xr, x)
    assert yr.tolist() == y and yr.dtype == np.int64


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnlab-pwned",))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = "/tmp/cnnlab-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError, match="refused"):
        safe_unpickle(p)
    assert not os.path.exists(marker)


def test_cifar_bad_shapes(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(
        pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, protocol=2)
    )
    with pytest.raises(DataError, match="3072"):
        read_cifar_batch(p)
    p.write_bytes(
        pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    )
    with pytest.raises(DataError, match="3 images but 2 labels"):
        read_cifar_batch(p)
    p.write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="corrupt"):
        read_cifar_batch(p)


def test_a_gzip_idx_declaring_a_huge_size_is_refused_with_bounded_memory(tmp_path):
    """A real ~100 KB gzip file whose header declares 100 MB and whose stream holds one
    byte less: refused from the gzip trailer before decompressing, in a child process
    whose peak memory is measured."""
    import struct
    import subprocess
    import sys
    import zlib

    from cnnlab.data import formats

    n = 100 * 1000 * 1000
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n // 10000, 100, 100))
        zeros = bytes(1 << 22)
        left = n - 1
        while left:
            k = min(left, len(zeros))
            f.write(zeros[:k])
            left -= k
    assert path.stat().st_size * 1032 > n  # within deflate's ratio: only the trailer tells
    code = (
        "import resource, sys\n"
        "from cnnlab.data.formats import read_idx\n"
        "from cnnlab.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_idx(sys.argv[1])\nexcept DataError as e:\n    print('refused', e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(formats.__file__))))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=src), check=True)  # fmt: skip
    first, grew_kib = out.stdout.splitlines()
    assert first.startswith("refused") and "gzip stream records" in first
    assert int(grew_kib) < 20 * 1024, f"peak memory grew by {int(grew_kib) / 1024:.0f} MiB"
    assert zlib  # the file above is a real deflate stream


def test_a_gzip_idx_is_read_in_pieces_without_a_second_copy(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (300, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", arr, compress=True)
    got = read_idx(tmp_path / "x.gz")
    assert np.array_equal(got, arr) and got.flags.writeable and got.base is not None
