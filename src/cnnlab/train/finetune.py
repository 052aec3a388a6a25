"""Fine-tuning: start a classifier from trained weights, keep part of it frozen for the
first epochs, then train that part at a lower learning rate (fastai's ``fine_tune``).

* ``model.init_from``: a cnnlab run directory (its ``best`` checkpoint), a cnnlab
  checkpoint file, a ``.safetensors`` state dict, a ``.pth`` state dict (torchvision's
  AlexNet keys are translated), or ``imagenet``: torchvision's official ImageNet weights
  for ``alexnet-torchvision`` (:data:`IMAGENET`), downloaded once into the user cache and
  checked against the SHA-256 prefix torchvision publishes in the file's name; offline,
  an error names the file to place there. Every tensor is loaded except the final ``classifier``
  layer when the classes differ (by name where the source records them, else by shape):
  that layer starts fresh. Anything else that does not fit (another model, other input
  channels or size) is an error naming the tensor.
* ``train.freeze``: ``features`` (the convolutions) or ``body`` (everything but the final
  classifier) is frozen from epoch 1; ``train.unfreeze_at=E`` trains it from epoch E on
  (0: it stays frozen).
* ``optim.backbone_lr_mult``: the frozen part — or ``features`` when nothing is frozen —
  is its own parameter group whose learning rate is ``lr × mult``; the schedule scales
  both groups alike.

Frozen means a learning rate of 0 for the backbone's group, set at each epoch's start
from the epoch number: one optimiser throughout, a CUDA-graphed step stays valid, and a
resumed run freezes exactly as the uninterrupted one. (Its gradients are still computed,
and batch-norm statistics in it still update, as with fastai's default ``train_bn``.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError, choices_msg
from cnnlab.train.callbacks import Callback

# model → (URL, SHA-256 prefix) of torchvision's ImageNet weights (AlexNet_Weights.IMAGENET1K_V1:
# 56.5 % top-1 on ImageNet); torchvision names each file after the first 8 hex digits of its hash
IMAGENET = {
    "alexnet-torchvision": (
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79",
    )
}
PRETRAINED = ("imagenet",)  # init_from names that are not paths

# what train.freeze freezes (and what optim.backbone_lr_mult slows down)
BACKBONES = {"none": ("features",), "features": ("features",), "body": ("features", "head")}


def check_config(cfg) -> None:
    """The fine-tuning keys' values (called by the task's build, before anything is
    written)."""
    t = cfg.train
    if t.freeze not in BACKBONES:
        raise ConfigError(choices_msg("train.freeze value", t.freeze, BACKBONES))
    if t.unfreeze_at < 0:
        raise ConfigError("train.unfreeze_at must be ≥ 0 (0 = the frozen part stays frozen)")
    if t.unfreeze_at and t.freeze == "none":
        raise ConfigError("train.unfreeze_at needs something frozen: add train.freeze=features")
    if cfg.optim.backbone_lr_mult < 0:
        raise ConfigError("optim.backbone_lr_mult must be ≥ 0")


def uses_groups(cfg) -> bool:
    return cfg.train.freeze != "none" or cfg.optim.backbone_lr_mult != 1.0


def param_groups(model: nn.Module, cfg) -> list[dict] | None:
    """``[head group, backbone group]`` when fine-tuning asks for them, else None (one
    group, as always). The head group comes first: its LR is the run's reported LR."""
    if not uses_groups(cfg):
        return None
    parts = BACKBONES[cfg.train.freeze]
    missing = [p for p in parts if not isinstance(getattr(model, p, None), nn.Module)]
    if missing:
        raise ConfigError(
            f"model {cfg.model.name} has no {missing[0]!r} part to freeze or slow down "
            "(train.freeze / optim.backbone_lr_mult need a features/head/classifier model)"
        )
    back = {id(p) for part in parts for p in getattr(model, part).parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.optim.lr
    return [
        {"params": [p for p in params if id(p) not in back], "lr": lr, "name": "head"},
        {
            "params": [p for p in params if id(p) in back],
            "lr": lr * cfg.optim.backbone_lr_mult,
            "name": "backbone",
        },
    ]


def frozen_at(cfg, epoch: int) -> bool:
    t = cfg.train
    return t.freeze != "none" and (t.unfreeze_at == 0 or epoch < t.unfreeze_at)


class FreezeBackbone(Callback):
    """At each epoch's start: the backbone group's LR is 0 while frozen, its own
    (``lr × backbone_lr_mult``) after."""

    def __init__(self) -> None:
        self.frozen: bool | None = None

    def on_epoch_start(self, trainer, epoch: int) -> None:
        frozen = frozen_at(trainer.cfg, epoch)
        set_backbone_lr(trainer, 0.0 if frozen else None)
        if (
            self.frozen is not None
            and frozen != self.frozen
            and not trainer.quiet
            and trainer.dist.main
        ):
            mult = trainer.cfg.optim.backbone_lr_mult
            print(f"epoch {epoch}: {trainer.cfg.train.freeze} unfrozen (LR × {mult:g})")
        self.frozen = frozen


def set_backbone_lr(trainer, base: float | None) -> None:
    """Set the backbone group's base LR (None: its own, ``lr × backbone_lr_mult``)."""
    sched = trainer.schedule
    for i, g in enumerate(sched.groups):
        if g.get("name") == "backbone":
            trainer.base_lrs[i] = float(g["initial_lr"]) if base is None else base
            sched.base[i] = trainer.base_lrs[i] * trainer.lr_scale
    sched.apply()


def prepare(trainer, model: nn.Module) -> None:
    """Called by a classifier task's build once its model exists: loads
    ``model.init_from`` (not when resuming: the checkpoint has the weights) and adds the
    freeze schedule to the trainer's callbacks."""
    cfg = trainer.cfg
    check_config(cfg)
    if cfg.train.freeze != "none":
        trainer.callbacks.append(FreezeBackbone())
    src = cfg.model.init_from
    if not src or trainer.resume_from is not None:
        return
    if str(src).lower() in PRETRAINED:
        path = imagenet_file(cfg.model.name, cfg.data.download, quiet=trainer.quiet)
        state, classes, name = read_weights(str(path))
        note = load_weights(model, state, None, trainer.dataset.classes, src, cfg.model.name)
        if not trainer.quiet and trainer.dist.main:
            print(f"init_from imagenet ({path.name}, torchvision's ImageNet weights): {note}")
        return
    state, classes, name = read_weights(src)
    if name is not None and name != cfg.model.name:
        raise CheckpointError(
            f"model.init_from {src!r} holds a {name} model, this run trains {cfg.model.name}: "
            f"fine-tune the same model (--model {name})"
        )
    note = load_weights(model, state, classes, trainer.dataset.classes, src, cfg.model.name)
    if not trainer.quiet and trainer.dist.main:
        print(f"init_from {src}: {note}")


def weights_cache() -> Path:
    """Where downloaded weights live: ``<user cache>/cnnlab/weights`` (next to the datasets)."""
    from cnnlab.data.datasets import user_cache_dir

    return user_cache_dir().parent / "weights"


def sha256_prefix(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[: len(next(iter(IMAGENET.values()))[1])]


def imagenet_file(model_name: str, download: bool = True, quiet: bool = False) -> Path:
    """The cached ImageNet weights of ``model_name``, downloaded (with torchvision's
    hash check) when absent and ``download`` allows. Errors are one line: no such
    weights, offline (naming the file and the folder to place it in), a wrong file."""
    if model_name not in IMAGENET:
        raise ConfigError(
            f"model.init_from=imagenet: ImageNet weights exist for {', '.join(IMAGENET)} only "
            f"(this run trains {model_name}); add --model alexnet-torchvision"
        )
    url, digest = IMAGENET[model_name]
    folder = weights_cache()
    path = folder / url.rsplit("/", 1)[1]
    if not path.is_file():
        if not download:
            raise CheckpointError(
                f"model.init_from=imagenet: {path.name} is not in {folder} and data.download "
                f"is false; download {url} and place it there"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=digest, progress=not quiet)
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash: RuntimeError
            path.unlink(missing_ok=True)
            raise CheckpointError(
                f"model.init_from=imagenet: cannot download {url} ({str(e)[:80]}); on a "
                f"machine without internet, download it elsewhere and place it as {path}"
            ) from None
    got = sha256_prefix(path)
    if got != digest:
        raise CheckpointError(
            f"model.init_from=imagenet: {path} is not torchvision's file (SHA-256 starts "
            f"{got}, expected {digest}); delete it, or place the file from {url}"
        )
    return path


def read_weights(src: str) -> tuple[dict[str, torch.Tensor], list | None, str | None]:
    """(state dict, the source's class names, its model's name) of a run, checkpoint or
    weights file (a plain weights file records neither: None)."""
    from cnnlab.models.alexnet import from_torchvision_keys, read_state_dict
    from cnnlab.runs.checkpoint import load_checkpoint, read_metadata
    from cnnlab.runs.load import resolve_checkpoint

    p = Path(src)
    if not p.exists():
        raise CheckpointError(
            f"model.init_from {src!r} not found: give a run directory, a checkpoint, or a "
            ".pth / .safetensors weights file"
        )
    if p.is_dir():
        ck = load_checkpoint(resolve_checkpoint(p, "best"))
        return _classifier_state(ck), ck.meta.get("classes"), ck.meta["model"].get("name")
    if p.suffix == ".safetensors":
        if "cnnlab" in read_metadata(p):
            ck = load_checkpoint(p)
            return _classifier_state(ck), ck.meta.get("classes"), ck.meta["model"].get("name")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p)), None, None
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {src!r} as safetensors ({str(e)[:100]})") from None
    if p.suffix in (".pth", ".pt"):
        state = read_state_dict(p)
        if "classifier.6.weight" in state:  # torchvision's AlexNet
            state = from_torchvision_keys(state)
        return state, None, None
    raise CheckpointError(
        f"model.init_from {src!r}: give a run directory, a .safetensors or a .pth file"
    )


def _classifier_state(ck) -> dict[str, torch.Tensor]:
    from cnnlab.runs.layout import run_kind

    if run_kind(ck.meta) != "classify" or not isinstance(ck.meta.get("model"), dict):
        raise CheckpointError(f"{ck.path}: a {run_kind(ck.meta)} run, not a classifier")
    return ck.model_state


def load_weights(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    src_classes: list | None,
    classes: list,
    src: str = "weights",
    model_name: str = "the model",
) -> str:
    """Copy ``state`` into ``model``: every tensor, but the final classifier's when the
    classes differ (it keeps its fresh initialisation). Returns what was done, in words."""
    own = model.state_dict()
    head = [k for k in own if k.startswith("classifier.")]
    fresh = (src_classes is not None and list(src_classes) != list(classes)) or any(
        k in state and state[k].shape != own[k].shape for k in head
    )
    missing = sorted(set(own) - set(state) - (set(head) if fresh else set()))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else ""
        what += ("; " if what else "") + (
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else ""
        )
        raise CheckpointError(
            f"model.init_from {src!r} does not hold {model_name} weights ({what}); "
            "fine-tune with the source's model (--model)"
        )
    for k in own:
        if k not in head and state[k].shape != own[k].shape:
            raise CheckpointError(
                f"model.init_from {src!r}: {k} has shape {tuple(state[k].shape)}, this model "
                f"needs {tuple(own[k].shape)} (another input size or channel count?)"
            )
    keep = {k: v for k, v in state.items() if not (fresh and k in head)}
    model.load_state_dict(keep, strict=False)
    n = len(keep)
    if not fresh:
        return f"{n} tensors loaded"
    before = len(src_classes) if src_classes is not None else state[head[0]].shape[0]
    return f"{n} tensors loaded; classifier re-initialised ({before} → {len(classes)} classes)"
