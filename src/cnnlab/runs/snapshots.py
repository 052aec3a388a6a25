"""A run's weight snapshots: ``<run>/snapshots/epoch-NNN.safetensors``, the first layers'
parameters after each epoch (written by the trainer's ``WeightSnapshots`` callback, read by
the explore page's epoch slider)."""

from __future__ import annotations

from pathlib import Path

import torch

FOLDER = "snapshots"


def snapshot_file(run_dir, epoch: int) -> Path:
    return Path(run_dir) / FOLDER / f"epoch-{int(epoch):03d}.safetensors"


def read_snapshots(run_dir) -> list[tuple[int, dict, dict[str, torch.Tensor]]]:
    """The run's snapshots in epoch order: (epoch, metadata, tensors); [] when it has none."""
    from safetensors import safe_open

    folder = Path(run_dir) / FOLDER
    out = []
    for f in sorted(folder.glob("epoch-*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(f), "pt") as sf:
                meta = dict(sf.metadata() or {})
                tensors = {k: sf.get_tensor(k).float() for k in sf.keys()}
            out.append((int(meta.get("epoch", f.stem.split("-")[1])), meta, tensors))
        except Exception:  # noqa: BLE001 - a damaged snapshot is skipped, never fatal
            continue
    return sorted(out, key=lambda t: t[0])
