"""Downloads from a list of mirrors with checksum verification, written atomically.

A file is streamed into a temporary file in the destination folder, its digest checked,
fsynced, then renamed into place: an interrupted or failed download leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from cnnlab.errors import DataError
from cnnlab.progress import progress

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_digest(path: str | os.PathLike, checksum: str | None) -> bool:
    """``checksum`` is ``"sha256:<hex>"`` or ``"md5:<hex>"`` (None: anything passes)."""
    if not checksum:
        return True
    algo, _, want = checksum.partition(":")
    return file_digest(path, algo) == want.lower()


def download(
    urls: list[str], dest: str | os.PathLike, checksum: str | None = None, timeout: float = 20.0
) -> Path:
    """Fetch ``dest`` from the first mirror that answers with the right bytes.

    Raises DataError listing every mirror's failure when none succeeds.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                req = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
                with (
                    urllib.request.urlopen(req, timeout=timeout) as resp,
                    progress(f"downloading {dest.name}", resp.length) as bar,
                ):
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        bar.advance(len(block))
                out.flush()
                os.fsync(out.fileno())
            if not check_digest(tmp, checksum):
                algo = checksum.partition(":")[0]
                errors.append(f"{url}: checksum mismatch ({algo} {file_digest(tmp, algo)})")
                continue
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"{url}: {reason}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"could not download {dest.name}: " + "; ".join(errors))
