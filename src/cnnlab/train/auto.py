"""Settings chosen from the data for an image folder (``--dataset imagefolder``).

The defaults are MNIST's (LeNet-5, batch 256, Adam at 1e-2): on a few hundred phone
photos they give one optimiser step per epoch, a 12 M-parameter LeNet at 224 px and a
diverging LR. So before a folder run starts, :func:`choose` looks at the folder
(``data/survey.py``: counts, classes, sizes, channels — headers only) and fills in every
key of :data:`AUTO_KEYS` that the user did not give (defaults → recipe → ``--set`` →
flags: anything named in one of those wins). Each choice comes with its reason, printed
as the run's first lines; ``--set train.auto=false`` keeps the plain defaults.

The rules (measured on a folder of 398 photos, docs/your-own-images.md):

* **photos** (colour, median shorter side ≥ :data:`PHOTO_SIDE` px): ``alexnet-cifar``
  (AlexNet's five convs with batch norm, 3×3 kernels) at 64 px for fewer than 1,000
  training images, 96 px below 5,000, else 128 px — a small input keeps a small data set's
  model small (32 px lost 11 points on the walk-through's photos); Adam at 1e-3; crop
  padding of 1/8 of the side.
* **pretrained** (``model.init_from=imagenet``): ``alexnet-torchvision`` at 224 px with
  ImageNet's mean and std, Adam at 1e-4.
* **batch**: at most :data:`MAX_BATCH`, and at most a quarter of the training images (a
  power of two, ≥ 4 steps per epoch) — batch 256 on 221 images is one step per epoch.
  Smaller images keep their model; a batch shrunk below 256 gets its LR scaled by
  √(batch / 256).
* **epochs**: about :data:`TARGET_STEPS` optimiser steps, between 15 and 60 epochs.
* **validation**: below 2,000 training images, 20 % (not 10 %) is carved for validation,
  and with fewer than :data:`SMOOTH_BELOW` validation images the best checkpoint is
  chosen on the 3-epoch mean validation accuracy (``train.select=smooth``), not on one
  noisy epoch.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from cnnlab.config import SECTIONS, Config, get_value, load_recipe, set_value
from cnnlab.data.survey import FolderSurvey, survey_folder

PHOTO_SIDE = 64  # median shorter side from which a folder counts as photos
MAX_BATCH = 32  # photos: batch 32 with Adam at 1e-3, the best hand-tuned setting measured
TARGET_STEPS = 120  # optimiser steps a small folder gets (the epochs follow)
MIN_EPOCHS, MAX_EPOCHS = 15, 60
SMALL_TRAIN = 2000  # below this, a larger validation share
SMALL_VAL_FRACTION = 0.2
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMOOTH_BELOW = 200  # validation images under which one epoch's accuracy is too noisy
AUTO_KEYS = (
    "model.name",
    "data.size",
    "data.pad",
    "data.val_fraction",
    "train.batch_size",
    "optim.lr",
    "train.epochs",
    "train.select",
    "data.channels",  # these three with model.init_from=imagenet
    "data.mean",
    "data.std",
)


@dataclass
class Choice:
    key: str
    value: Any
    why: str


def explicit_keys(config=None, recipe=None, overrides=None, flag_keys=()) -> set[str]:
    """The ``section.key`` names the user gave: in a config dict or object (the keys
    differing from the defaults), a recipe, ``--set`` overrides or the flags (given as
    the keys they set)."""
    given: set[str] = set(flag_keys)
    defaults = Config().to_dict()

    def add_dict(d: dict, only_changed: bool) -> None:
        for sec, body in (d or {}).items():
            if sec in SECTIONS and isinstance(body, dict):
                for k, v in body.items():
                    if not only_changed or defaults.get(sec, {}).get(k, object()) != v:
                        given.add(f"{sec}.{k}")

    if isinstance(config, Config):
        add_dict(config.to_dict(), only_changed=True)
    elif isinstance(config, dict):
        add_dict(config, only_changed=False)
    if recipe:
        add_dict(load_recipe(recipe).to_dict(), only_changed=True)
        from cnnlab.config import find_recipe, safe_yaml

        raw = safe_yaml(find_recipe(recipe).read_text(encoding="utf-8"), str(recipe))
        if isinstance(raw, dict):  # a recipe that repeats a default still names it
            add_dict(raw, only_changed=False)
    if isinstance(overrides, dict):
        given.update(k.strip() for k in overrides)
    else:
        given.update(o.split("=", 1)[0].strip() for o in overrides or [] if "=" in o)
    return {k[: -len(".args")] if k.endswith(".args") else k for k in given}


def _pow2_at_most(n: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, n)))))


class Picks:
    """The choices made so far: :meth:`pick` sets a key that is not in ``given`` and
    records why."""

    def __init__(self, cfg: Config, given: set[str]) -> None:
        self.cfg, self.given, self.out = cfg, given, []

    def pick(self, key: str, value: Any, why: str) -> None:
        if key not in self.given:
            self.out.append(Choice(key, value, why))
            set_value(self.cfg, key, value)


def plan(sv: FolderSurvey, cfg: Config, given: set[str]) -> list[Choice]:
    """What to set, and why, for the keys not in ``given`` (a pure function of the
    survey and the config: tests call it on made-up surveys)."""
    picks = Picks(cfg, given)
    photos = not sv.grey and sv.median_short >= PHOTO_SIDE
    n_train, n_val = plan_split(sv, picks)
    pretrained = str(cfg.model.init_from).lower() == "imagenet"
    plan_input(sv, picks, n_train, photos, pretrained)
    photos = photos or pretrained
    plan_batch(picks, n_train, photos, pretrained)
    plan_length(picks, n_train, n_val, photos)
    return picks.out


def plan_split(sv: FolderSurvey, picks: Picks) -> tuple[int, int]:
    """The validation share; returns (training images, validation images)."""
    cfg, n_pool = picks.cfg, sv.n_train
    # validation: carved from the training pool unless a val/ folder is kept as validation
    if not sv.n_val_given and n_pool < SMALL_TRAIN and cfg.data.val_fraction > 0:
        picks.pick(
            "data.val_fraction",
            SMALL_VAL_FRACTION,
            f"{n_pool:,} training images: 10 % would leave too few to choose a checkpoint on",
        )
    n_val = sv.n_val_given or int(round(n_pool * cfg.data.val_fraction))
    n_train = max(1, n_pool - (0 if sv.n_val_given else n_val))
    if cfg.data.train_limit:
        n_train = min(n_train, int(cfg.data.train_limit))
    return n_train, n_val


def plan_input(sv: FolderSurvey, picks: Picks, n_train: int, photos: bool, pretrained: bool):
    """The model, the input size and normalisation, and the crop padding."""
    cfg, pick = picks.cfg, picks.pick
    if pretrained:
        pick("model.name", "alexnet-torchvision", "the model torchvision's ImageNet weights fit")
        pick(
            "data.size", min(224, sv.median_short), "the input size the ImageNet weights learnt at"
        )
        pick("data.channels", 3, "the ImageNet weights take colour input (grey is replicated)")
        pick("data.mean", list(IMAGENET_MEAN), "the ImageNet weights' input normalisation")
        pick("data.std", list(IMAGENET_STD), "the ImageNet weights' input normalisation")
    elif photos:
        pick(
            "model.name",
            "alexnet-cifar",
            "colour photos: AlexNet's convs with batch norm (LeNet-5 is made for 28-px digits)",
        )
        side = 64 if n_train < 1000 else 96 if n_train < 5000 else 128
        side = min(side, sv.median_short)
        pick(
            "data.size",
            side,
            f"{n_train:,} training images: a small input keeps the model small "
            f"(the photos' median shorter side is {sv.median_short:,} px)",
        )
    if pretrained or photos:
        size = int(get_value(cfg, "data.size", 0) or sv.median_short)
        if "crop" in str(cfg.data.augment) or cfg.data.augment == "auto":
            pick("data.pad", max(2, size // 8), "random crops shift by up to 1/8 of the side")


def plan_batch(picks: Picks, n_train: int, photos: bool, pretrained: bool) -> None:
    """The batch size, and the learning rate that goes with it."""
    cfg, pick = picks.cfg, picks.pick
    cap = MAX_BATCH if photos else cfg.train.batch_size
    batch = min(cap, _pow2_at_most(n_train / 4))
    if batch != cfg.train.batch_size:
        pick(
            "train.batch_size",
            batch,
            f"at most a quarter of the {n_train:,} training images "
            f"({n_train // batch} steps per epoch)",
        )
    bs = cfg.train.batch_size
    if cfg.optim.lr != "auto":
        if pretrained and cfg.optim.name == "adam":
            pick("optim.lr", 1e-4, "Adam's fine-tuning rate: trained weights need small steps")
        elif photos and cfg.optim.name == "adam" and cfg.model.name.startswith("alexnet"):
            pick("optim.lr", 1e-3, "Adam's rate for a batch-norm AlexNet at a small batch")
        elif bs < 256 and "train.batch_size" not in picks.given and cfg.optim.name == "adam":
            lr = float(f"{cfg.optim.lr * math.sqrt(bs / 256):.2g}")
            pick(
                "optim.lr", lr, f"the default {cfg.optim.lr:g} × √({bs}/256) for the smaller batch"
            )


def plan_length(picks: Picks, n_train: int, n_val: int, photos: bool) -> None:
    """The epochs, and how the best checkpoint is chosen."""
    cfg, pick = picks.cfg, picks.pick
    bs = cfg.train.batch_size
    steps = max(1, n_train // bs)
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps))))
    if photos or (epochs != cfg.train.epochs and steps * cfg.train.epochs < TARGET_STEPS):
        pick("train.epochs", epochs, f"about {TARGET_STEPS} optimiser steps at {steps} per epoch")
    if 0 < n_val < SMOOTH_BELOW and cfg.train.select == "val":
        pick(
            "train.select",
            "smooth",
            f"{n_val} validation images (one image = {100 / n_val:.1f} points): the best "
            "checkpoint is chosen on the 3-epoch mean validation accuracy",
        )


def choose(cfg: Config, given: set[str]) -> tuple[list[str], list[str]]:
    """Fill in the :data:`AUTO_KEYS` not given for an image folder run, in place. Returns
    (lines to print first, warnings). Nothing happens for other datasets, with
    ``train.auto=false``, or with a folder the loader will refuse (its error comes then)."""
    if cfg.data.name != "imagefolder" or not cfg.data.data_dir:
        return [], []
    from cnnlab.errors import CnnlabError

    args = cfg.data.args
    try:
        sv = survey_folder(
            cfg.data.data_dir,
            float(args.get("test_fraction", 0.2)),
            int(args.get("split_seed", 0)),
        )
    except (CnnlabError, TypeError, ValueError):
        return [], []
    lines = [describe(sv), sv.split_line()]
    warnings = []
    if cfg.train.auto:
        chosen = plan(sv, cfg, given)
        lines += [f"auto: {c.key}={c.value} — {c.why}" for c in chosen]
        if chosen:
            lines.append(
                "auto: (any of these: --set KEY=VALUE or a flag wins; --set train.auto=false "
                "keeps the defaults)"
            )
    n_val = sv.n_val_given or int(round(sv.n_train * cfg.data.val_fraction))
    if 0 < n_val < SMOOTH_BELOW:
        how = {
            "smooth": "the best checkpoint is chosen on the 3-epoch mean validation accuracy",
            "val": "the best checkpoint is one epoch's validation accuracy — noisy "
            "(--set train.select=smooth averages 3 epochs)",
        }.get(cfg.train.select, "")
        warnings.append(
            f"warning: validation has only {n_val} images (one image = {100 / n_val:.1f} "
            f"points of accuracy); {how}"
        )
    return lines, warnings


def apply(cfg: Config, config=None, recipe=None, overrides=None, flag_keys=(), quiet=False):
    """:func:`choose` with the keys the user gave (:func:`explicit_keys`), its lines printed
    (stdout; warnings on stderr) unless ``quiet`` or not the first rank. Returns ``cfg``."""
    lines, warnings = choose(cfg, explicit_keys(config, recipe, overrides, flag_keys))
    if not quiet and os.environ.get("RANK", "0") == "0":
        for line in lines:
            print(line, flush=True)
        for line in warnings:
            print(line, file=sys.stderr, flush=True)
    return cfg


def describe(sv: FolderSurvey) -> str:
    counts = " · ".join(f"{c} {n:,}" for c, n in zip(sv.classes, sv.per_class, strict=True))
    if len(sv.classes) > 6:
        counts = f"{min(sv.per_class):,} to {max(sv.per_class):,} per class"
    kind = "grey" if sv.grey else "colour"
    return (
        f"folder: {sv.n_train:,} training images in {len(sv.classes)} classes ({counts}), "
        f"{sv.n_test:,} test; {kind}, median {sv.median_short:,} × {sv.median_long:,} px "
        f"(largest side {sv.max_long:,}; {sv.sampled} headers read)"
    )
