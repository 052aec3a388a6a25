"""Small per-epoch snapshots of a classifier's first layers, for the explore page's epoch
slider: ``<run>/snapshots/epoch-NNN.safetensors`` (read back by ``runs/snapshots.py``) holds the parameters and buffers of the
first modules of ``model.features`` up to the second conv layer (or only the first when
two would be large), a few KB for LeNet-5. Written atomically by rank 0 at each epoch end.
"""

from __future__ import annotations

from torch import nn

from cnnlab.runs.files import atomic_write_bytes
from cnnlab.runs.snapshots import snapshot_file
from cnnlab.train.callbacks import Callback

MAX_VALUES = 20_000  # per snapshot: 80 KB of float32 at most, unless conv1 alone is larger
MAX_CONVS = 2


def first_layers(model: nn.Module, max_values: int = MAX_VALUES, max_convs: int = MAX_CONVS):
    """The state-dict keys of the first modules of ``model.features`` that a snapshot keeps:
    everything up to the ``max_convs``-th conv layer, stopping earlier when the next conv
    would take the snapshot over ``max_values`` numbers (the first conv is always kept)."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)  # DDP
    feats = getattr(model, "features", None)
    if not isinstance(feats, nn.Sequential):
        return []
    keys: list[str] = []
    total, convs, pending = 0, 0, []
    for name, mod in feats.named_children():
        own = {f"features.{name}.{k}": v for k, v in mod.state_dict().items()}
        size = sum(v.numel() for v in own.values() if v.is_floating_point())
        if isinstance(mod, nn.Conv2d):
            if convs >= max_convs or (convs and total + size > max_values):
                break
            convs += 1
            keys += pending + list(own)
            pending = []
        else:
            pending += list(own)  # kept once a later conv is (BN after a conv is kept)
            if convs:
                keys += pending
                pending = []
        total += size
    return [k for k in keys if not k.endswith("num_batches_tracked")]


class WeightSnapshots(Callback):
    """Save the first layers' weights after every epoch (rank 0 only)."""

    def __init__(self, max_values: int = MAX_VALUES):
        self.max_values = max_values
        self.keys: list[str] | None = None

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if not trainer.dist.main:
            return
        from safetensors.torch import save

        model = getattr(trainer.model, "_orig_mod", trainer.model)
        model = getattr(model, "module", model)
        if self.keys is None:
            self.keys = first_layers(model, self.max_values)
        if not self.keys:
            return
        state = model.state_dict()
        tensors = {k: state[k].detach().float().cpu().contiguous() for k in self.keys}
        meta = {"epoch": str(int(epoch)), "format": "cnnlab-snapshot/1"}
        for k in ("test_acc", "val_acc", "train_loss"):
            if isinstance(metrics.get(k), (int, float)):
                meta[k] = repr(float(metrics[k]))
        atomic_write_bytes(snapshot_file(trainer.run_dir, epoch), save(tensors, metadata=meta))
