"""Download logic against a local HTTP server on 127.0.0.1 serving generated files."""

import hashlib
import http.server
import threading
from functools import partial

import pytest

from cnnlab.data.datasets import DATASETS, DatasetSpec, fetch, load_dataset
from cnnlab.data.download import download
from cnnlab.errors import DataError

from ..conftest import MNIST_NAMES, make_idx_dataset


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def sha(p):
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def test_download_ok_and_atomic(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"hello" * 1000)
    dest = tmp_path / "out" / "f.bin"
    download([f"{url}/f.bin"], dest, sha(root / "f.bin"))
    assert dest.read_bytes() == b"hello" * 1000
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]


def test_download_wrong_checksum_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"tampered")
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(DataError, match="checksum mismatch"):
        download([f"{url}/f.bin"], dest, "sha256:" + "0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_download_falls_back_to_next_mirror(server, tmp_path):
    root, url = server
    (root / "good").mkdir()
    (root / "good" / "f.bin").write_bytes(b"ok")
    dest = tmp_path / "f.bin"
    download([f"{url}/missing/f.bin", f"{url}/good/f.bin"], dest, sha(root / "good" / "f.bin"))
    assert dest.read_bytes() == b"ok"


def test_dataset_download_from_local_mirror(server, tmp_path, monkeypatch):
    root, url = server
    make_idx_dataset(root, n_train=20, n_test=10)
    files = {n: sha(root / n) for n in MNIST_NAMES}
    spec = DatasetSpec(
        "test-mnist-dl", "test", DATASETS.get("mnist").loader, files=files, mirrors=[url + "/"]
    )
    monkeypatch.setitem(DATASETS._items, spec.name, spec)
    target = tmp_path / "data"
    folder = fetch(spec, target)
    assert folder == target / "test-mnist-dl"
    ds = load_dataset("test-mnist-dl", target)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_y.shape == (10,)
    assert not any(p.name.endswith(".part") for p in folder.iterdir())


def test_dataset_wrong_checksum_explains_where_to_put_files(server, tmp_path, monkeypatch):
    root, url = server
    make_idx_dataset(root, n_train=20, n_test=10)
    files = {n: "sha256:" + "1" * 64 for n in MNIST_NAMES}
    spec = DatasetSpec(
        "test-mnist-bad", "test", DATASETS.get("mnist").loader, files=files, mirrors=[url + "/"]
    )
    monkeypatch.setitem(DATASETS._items, spec.name, spec)
    with pytest.raises(DataError) as e:
        fetch(spec, tmp_path / "data")
    msg = str(e.value)
    assert "checksum mismatch" in msg and "put train-images-idx3-ubyte.gz" in msg
    assert str(tmp_path / "data" / "test-mnist-bad") in msg
    assert not any((tmp_path / "data" / "test-mnist-bad").iterdir())


def test_offline_error_names_files_and_folder(tmp_path, monkeypatch):
    spec = DATASETS.get("mnist")
    monkeypatch.setattr(spec, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(tmp_path / "nowhere" / "mnist") in msg
