"""Checkpoints: one safetensors file each, written atomically.

Layout of ``checkpoints/last.safetensors`` / ``best.safetensors``:
- tensors ``model.<name>`` (weights), ``optim.<param>.<key>`` (optimiser state),
  ``rng.<name>`` (torch / CUDA / data-order generator states);
- metadata ``cnnlab`` (JSON: format, model args, classes, normalisation, epoch, step
  position, metrics, resolved config, optimiser/scheduler/python/numpy state) and
  ``sha256-all``: one digest over every tensor (name, dtype, shape, bytes) **and** the
  ``cnnlab`` metadata, checked on load — a flipped bit in the epoch, the step position,
  the LR or the RNG state is refused like one in the weights. (Files of the first format
  carry ``sha256`` over the tensors only; they still load.) A file with no digest at all
  is refused.

Rotation: ``save_checkpoint(..., keep_prev=prev_path)`` hard-links the current file to
``prev`` before the new one replaces it, so there is never a moment without a complete
``last`` and ``--resume`` can fall back to ``prev`` when ``last`` is damaged.

A failed write (disk full, read-only file system, missing directory — also when it is
safetensors' writer that meets it and raises its own error type) raises a one-line
CheckpointError and leaves no temp file behind; the files already there are untouched.

Nothing here unpickles: loading a checkpoint cannot run code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnnlab.errors import CheckpointError
from cnnlab.runs.files import FILE_MODE, fault, fsync_dir, io_error, unlink_quietly

FORMAT = "cnnlab-checkpoint/2"
DIGEST_KEY = "sha256-all"  # tensors + metadata (format 2)
LEGACY_DIGEST_KEY = "sha256"  # tensors only (format 1)


def _digest(tensors: dict[str, torch.Tensor], metadata: str | None = None) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(
            t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        )
    if metadata is not None:
        h.update(b"\0cnnlab-metadata\0" + metadata.encode())
    return h.hexdigest()


def _as_os_error(e: SafetensorError) -> OSError | None:
    """safetensors' writer reports an I/O failure (a full disk, a read-only file system)
    as its own error type with the OS message inside: the OSError it stands for."""
    m = re.search(r"os error (\d+)", str(e))
    if not m:
        return None
    code = int(m.group(1))
    return OSError(code, os.strerror(code))


_FAULT_COUNTS: dict[str, int] = {}


def optim_split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for pid, st in state.get("state", {}).items():
        plain[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                plain[str(pid)][k] = v
    # a graphed step keeps its LR as a device tensor and Adam "capturable": saved as a
    # plain float and False, so the checkpoint resumes anywhere (the graph sets them again)
    groups = [
        {
            k: (v.item() if torch.is_tensor(v) else False if k == "capturable" else v)
            for k, v in g.items()
        }
        for g in state.get("param_groups", [])
    ]
    return tensors, {"param_groups": groups, "plain": plain}


def optim_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, plain in meta.get("plain", {}).items():
        state[int(pid)] = dict(plain)
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    groups = meta.get("param_groups", [])
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state(
    data_generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = s
    if data_generator is not None:
        tensors["rng.data"] = data_generator.get_state()
    npst = np.random.get_state()
    plain = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict, data_generator=None) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if data_generator is not None and "rng.data" in tensors:
        data_generator.set_state(tensors["rng.data"])
    if plain.get("python"):
        v, s, g = plain["python"]
        random.setstate((v, tuple(s), g))
    if plain.get("numpy"):
        n = plain["numpy"]
        np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    keep_prev: str | os.PathLike | None = None,
) -> Path:
    """Write weights (+ optimiser state, RNG tensors in ``extra_tensors``) atomically;
    with ``keep_prev`` the file being replaced is kept under that name."""
    path = Path(path)
    sd = model.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    meta = dict(meta, format=FORMAT)
    if optimizer is not None:
        ot, om = optim_split(optimizer.state_dict())
        tensors.update(ot)
        meta["optimizer"] = om
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous().clone()
    text = json.dumps(meta, default=_json_default)
    metadata = {"cnnlab": text, DIGEST_KEY: _digest(tensors, text)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:
            err = _as_os_error(e)
            if err is None:
                raise CheckpointError(f"cannot write checkpoint {path}: {str(e)[:200]}") from None
            raise err from None
        os.chmod(tmp, FILE_MODE)  # safetensors writes a new file (0600): as documented, 0644
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # test hook: a kill halfway through writing the temp file
        fault("ckpt-half", lambda: os.truncate(tmp, os.path.getsize(tmp) // 2))
        fault("ckpt-write")
        if keep_prev is not None and path.exists():
            _rotate(path, Path(keep_prev))
            fault("ckpt-rotate")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        unlink_quietly(tmp)
        raise CheckpointError(
            io_error(path, e, "write checkpoint") + "; the previous checkpoint is left intact"
        ) from None
    except BaseException:
        unlink_quietly(tmp)
        raise
    return path


def _rotate(path: Path, prev: Path) -> None:
    """``prev`` ← the current ``path`` (a hard link: ``path`` stays complete throughout)."""
    link = prev.with_name(f".{prev.name}.link")
    try:
        if link.exists():
            link.unlink()
        os.link(path, link)
        os.replace(link, prev)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise
        # no hard links on this file system: a rename leaves a moment without ``path``,
        # and --resume then falls back to ``prev``
        os.replace(path, prev)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    if torch.is_tensor(o):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")


class Checkpoint:
    """A loaded checkpoint: ``model_state``, ``meta`` and the raw tensors."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict):
        self.path, self.tensors, self.meta = path, tensors, meta

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def optimizer_state(self) -> dict | None:
        if "optimizer" not in self.meta:
            return None
        return optim_join(self.tensors, self.meta["optimizer"])


def read_metadata(path: Path) -> dict:
    """Read only the header of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated checkpoint")
        n = int.from_bytes(raw, "little")
        if n > 100_000_000 or n > path.stat().st_size:
            raise CheckpointError(f"{path}: corrupt checkpoint header")
        header = json.loads(f.read(n))
    return header.get("__metadata__", {}) or {}


def load_checkpoint(path: str | os.PathLike, verify: bool = True) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        md = read_metadata(path)
        tensors = load_file(str(path))
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(e)[:120]})") from None
    if "cnnlab" not in md:
        raise CheckpointError(f"{path}: not a cnnlab checkpoint (no cnnlab metadata)")
    if verify:
        if DIGEST_KEY in md:
            ok = _digest(tensors, md["cnnlab"]) == md[DIGEST_KEY]
        elif LEGACY_DIGEST_KEY in md:
            ok = _digest(tensors) == md[LEGACY_DIGEST_KEY]
        else:
            raise CheckpointError(f"{path}: the checkpoint has no checksum; it cannot be trusted")
        if not ok:
            raise CheckpointError(f"{path}: checksum mismatch, the checkpoint is corrupt")
    try:
        meta = json.loads(md["cnnlab"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata") from None
    return Checkpoint(path, tensors, meta)
