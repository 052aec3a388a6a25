"""Where a dataset's files are looked for and how missing ones are fetched.

A :class:`DatasetSpec` says which files a dataset needs and where to download them from.
They are looked for, in order, in ``data_dir``, ``$CNNLAB_DATA``, the user cache dir and
``/usr/share/datasets/<name>``; each of those may hold the files itself or a ``<name>/``
folder with them. Missing files are downloaded (mirrors, checksums, atomic) into the
first writable location; offline, the error says which files to put where.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.datatypes import Dataset
from cnnlab.data.download import check_digest, download
from cnnlab.errors import DataError

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
    return all(find_variant(folder, f) is not None for f in spec.files) and all(
        (folder / d).is_dir() for d in spec.dirs
    )


def find_variant(folder: Path, fname: str) -> Path | None:
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
