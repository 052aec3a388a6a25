"""A run's per-epoch snapshots of its first layers, as files: where they live and how
they are read back (the explore page's epoch slider). ``train/snapshots.py`` writes them:
``<run>/snapshots/epoch-NNN.safetensors``, the parameters and buffers of the first modules
of ``model.features``, a few KB for LeNet-5."""

from __future__ import annotations

from pathlib import Path

FOLDER = "snapshots"


def snapshot_file(run_dir, epoch: int) -> Path:
    return Path(run_dir) / FOLDER / f"epoch-{int(epoch):03d}.safetensors"


def read_snapshots(run_dir) -> list[tuple[int, dict, dict]]:
    """The run's snapshots in epoch order: (epoch, metadata, {name: float tensor}); [] when
    it has none."""
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
