"""Configs as dataclasses; YAML recipes and ``--set a.b=value`` overrides on top.

Precedence: defaults → recipe YAML → ``--set`` flags (then CLI shortcuts like
``--epochs``). The resolved config is written into the run directory and every
checkpoint. Keys under ``model`` and ``data`` that are not fields of those sections are
options of the chosen model builder / dataset loader, validated against its signature.
An unknown key or a bad value raises ConfigError listing the valid choices.

Parsing is bounded: a recipe of more than ``MAX_RECIPE_BYTES``, nested deeper than
``MAX_DEPTH`` or expanding (through YAML aliases, a "billion laughs") to more than
``MAX_NODES`` values is refused before it is used, integers of more than a few thousand
digits are refused, and an error message shows at most a short excerpt of a value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import ConfigError, choices_msg, did_you_mean


@dataclass
class ModelConfig:
    name: str = "lenet5"
    args: dict = field(default_factory=dict)  # builder options: activation, init, ...
    # fine-tuning: start from a cnnlab run, a checkpoint, a torchvision AlexNet .pth or a
    # .safetensors state dict (the classifier is re-initialised when the classes differ)
    init_from: str | None = None


@dataclass
class DataConfig:
    name: str = "mnist-sample"
    data_dir: str | None = None
    download: bool = True
    augment: str = (
        "auto"  # comma list of crop, flip, noise, erase; 'auto' = dataset default; 'none'
    )
    pad: int = 2  # padding for random crop
    resize: int | None = None  # resize on the device (e.g. 224 for AlexNet)
    grayscale: bool = False  # RGB → gray (the article's optional preprocessing)
    # validation split carved from the training set (stratified, seeded by train.seed): the
    # best checkpoint and early stopping use it; 0 = none (then no best, only last)
    val_fraction: float = 0.1
    train_limit: int | None = None  # use only the first N training images (fixed order)
    # semi-supervised: keep N labelled images per class (chosen by train.seed), the rest of
    # the training set is unlabelled (its labels are dropped)
    labels_per_class: int | None = None
    # how a training epoch draws its images: random (a permutation) or balanced (every
    # class equally often, with replacement; seeded, so a resumed run draws the same)
    sampler: str = "random"
    args: dict = field(default_factory=dict)  # dataset options (synthetic: size, channels, ...)


@dataclass
class OptimConfig:
    name: str = "adam"
    # 1e-2 with batch 256: the defaults' fastest time to accuracy (docs/performance.md)
    lr: float | typing.Literal["auto"] = 1e-2  # auto: chosen by an LR range test (lr-find)
    backbone_lr_mult: float = 1.0  # fine-tuning: the backbone's LR = lr × this
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class SchedConfig:
    name: str = "onecycle"  # constant, step, cosine, onecycle, plateau
    warmup_epochs: float = 0.0
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step/plateau: decay factor
    min_lr: float = 0.0  # cosine: floor
    pct_start: float = 0.25  # onecycle: fraction of steps spent rising
    patience: int = 3  # plateau: epochs without improvement


@dataclass
class TrainConfig:
    epochs: int = 20
    # 256 (with optim.lr 1e-2): 98 % on the MNIST sample in 1.4× less time than 64 / 3e-3
    batch_size: int = 256
    eval_batch_size: int = 1000
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    # per-class loss weights: none (null), auto (inverse class frequency, mean 1 over the training
    # images) or a list of one number > 0 per class
    class_weights: list[float] | str | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    # auto (bf16 on CUDA, fp32 on CPU); fast (bf16 for models of ≥ 1M parameters where it
    # is native: AVX512-BF16/AMX CPUs, CUDA; else fp32); fp32; bf16; fp16
    precision: str = "auto"
    channels_last: str = "auto"  # auto (CUDA: true; CPU: false, measured faster), true, false
    compile: bool = False
    # CUDA graphs: step = the whole step (batch, augmentation, forward, backward, optimiser)
    # in one graph; model = forward/backward only; auto/true = step where it can, else model
    cuda_graph: str = "auto"
    # CPU threads: 0 = every available core (the same on every run of this machine, so the
    # same numbers whatever its load); auto-measure = one thread when a quick measurement
    # finds the cores busy (faster under load, but the numbers then follow the load)
    threads: int | typing.Literal["auto-measure"] = 0
    grad_clip: float = 0.0
    # --resume reuses the numerics a run trained with (threads, precision, layout, library
    # versions) and refuses when they cannot be had here; false: continue anyway, warned
    exact_resume: bool = True
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N steps (0 = epochs only)
    nan_policy: str = "stop"  # non-finite loss: stop (free) or skip the step + lower LR (syncs)
    nan_lr_factor: float = 0.5  # skip: LR multiplier applied at each skipped step
    # robust training: none, fgsm, pgd (L∞ attacks in [0, 1] pixel scale; train/adversarial.py)
    adversarial: str = "none"
    eps: float = 0.1  # attack radius in pixel units (0.1 ≈ 25 grey levels)
    adv_steps: int = 7  # PGD steps
    adv_step_size: float = 0.0  # 0 = 2.5·eps/steps (PGD), 1.25·eps (FGSM)
    adv_random_start: bool = True
    steps_per_epoch: int = 0  # labels_per_class runs: steps per epoch (0 = auto)
    early_stop: int = 0  # patience in epochs on val_acc (needs data.val_fraction > 0); 0 = off
    # the best checkpoint: val (the epoch's validation accuracy) or smooth (its mean over the
    # last 3 epochs: a small validation set's single epochs are noise)
    select: str = "val"
    # imagefolder: choose model, input size, batch, LR, epochs and the validation share from
    # the folder for every such key not given (train/auto.py); false = the plain defaults
    auto: bool = True
    diagnostics: bool = True  # gradient flow + activation stats → <run>/gradients.jsonl
    report: bool = False  # write <run>/report.html when training ends (`cnnlab train`: on)
    snapshots: bool = True  # first layers' weights each epoch → <run>/snapshots/ (explore)
    # semi-supervised (with data.labels_per_class): none, pseudo_label, mean_teacher, fixmatch
    semi: str = "none"
    semi_threshold: float = 0.95  # pseudo_label/fixmatch: confidence to keep a pseudo-label
    semi_ratio: int = 7  # unlabelled images per labelled image in a step (FixMatch's mu)
    semi_weight: float = 1.0  # weight of the unlabelled loss
    semi_rampup: float = 0.0  # fraction of training over which the unlabelled weight ramps up
    semi_align: bool = True  # distribution alignment of the pseudo-label targets (ReMixMatch)
    # a moving average of the weights, decay per step (0 = off): the average is evaluated,
    # selected and saved (semi-supervised: the teacher; mean_teacher uses 0.99 when 0)
    ema: float = 0.0
    # evaluate every epoch on the mean of the image's and its mirror image's softmax (needs
    # flip in data.augment: the run then trained on mirror images)
    eval_flip: bool = False
    # what a step computes (train/task.py): auto, classify, adversarial, semi, gan;
    # auto picks it from the config (see resolve_task)
    task: str = "auto"
    freeze: str = "none"  # fine-tuning: none, features (the convs) or body (all but classifier)
    unfreeze_at: int = 0  # the epoch the frozen part starts training (0 = stays frozen)


@dataclass
class RunConfig:
    name: str | None = None
    runs_dir: str = "runs"
    save_best: bool = True
    # experiment trackers: none, or tensorboard and/or mlflow, comma-separated
    report_to: str = "none"


@dataclass
class GanConfig:
    """The GAN task's own settings; data, epochs, batch, seed, device and Adam's lr/betas
    come from the shared sections. The variant (model.name) follows from these two:
    aux_weight > 0 → dcgan-ac, conditional → dcgan-conditional, else dcgan."""

    conditional: bool = False  # class label into G and D (a cGAN)
    aux_weight: float = 0.0  # > 0: AC-GAN (D also classifies; class loss with this weight)
    z_dim: int = 100
    width: int = 64  # generator/discriminator base channels (DCGAN paper: 64+)
    real_label: float = 1.0  # < 1 for one-sided label smoothing (Salimans et al. 2016)
    judge: str | None = None  # a classifier run that scores samples (Fréchet distance, fidelity)
    eval_samples: int = 2000  # real and generated images per score
    grid: int = 8  # fixed-noise grid: grid×grid images (conditional: classes × grid)


# The GAN models (models/gan.py's registry, kept in step by a test): config sits below
# models, so it names them instead of looking them up.
GAN_MODELS = ("dcgan", "dcgan-conditional", "dcgan-ac")
TASKS = ("auto", "classify", "adversarial", "semi", "gan")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        for sec in ("model", "data"):  # builder options flattened into the section
            extra = d[sec].pop("args")
            d[sec].update(extra)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def copy(self) -> Config:
        return from_dict(self.to_dict())


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}

MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_RUN_NAME = 100  # characters (a path component is at most 255 bytes)
MAX_SEED = 2**32 - 1  # numpy's and CUDA's seeds are 32-bit


def short(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters — never the
    full expansion of a huge or alias-bombed value."""
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxlong, r.maxother = limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_bounded(value: Any, where: str) -> Any:
    """Refuse a parsed YAML value nested deeper than MAX_DEPTH or holding more than
    MAX_NODES values once its aliases are expanded. Counted without expanding anything:
    a shared node is sized once and its size reused."""
    sizes: dict[int, int] = {}

    def size(v: Any, depth: int) -> int:
        if not isinstance(v, (dict, list, tuple)):
            return 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if id(v) in sizes:
            return sizes[id(v)]
        items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        n = 1
        for item in items:
            n += size(item, depth + 1)
            if n > MAX_NODES:
                raise ConfigError(
                    f"{where}: expands to more than {MAX_NODES:,} values (YAML aliases?); "
                    "a config is far smaller"
                )
        sizes[id(v)] = n
        return n

    size(value, 0)
    return value


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside quotes (a cheap look before parsing)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with the bounds above; any failure is one ConfigError line."""
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters; a recipe is at most 1 MiB")
    if _flow_depth(text) > MAX_DEPTH:  # the YAML scanner is quadratic in this depth
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML ({short(str(e).splitlines()[0], 160)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{where}: invalid value ({short(str(e), 120)})") from None
    return check_bounded(value, where)


def check_run_name(name: str) -> str:
    """A run name is a folder name inside --runs-dir: letters, digits and ``. _ - + = @``,
    with ``/`` between such parts (no ``..``, no leading ``/``, no spaces, no control
    characters, at most MAX_RUN_NAME characters)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("run.name must not be empty")
    if len(name) > MAX_RUN_NAME:
        raise ConfigError(
            f"run name {short(name, 40)} is {len(name)} characters long; use at most {MAX_RUN_NAME}"
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") or not re.fullmatch(r"[\w.+=@-]+", p) for p in parts):
        raise ConfigError(
            f"run name {short(name, 60)} is not a folder name inside --runs-dir: use "
            "letters, digits and . _ - (no '..', no leading '/', no spaces or control "
            "characters)"
        )
    return name


def check_values(cfg: Config) -> Config:
    """Ranges of values the registries do not know about: optimiser constants, the seed,
    data sizes and the run name."""
    o, d, t = cfg.optim, cfg.data, cfg.train
    checks = [
        (0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum:g}"),
        (0 <= o.beta1 < 1, f"optim.beta1 must be in [0, 1), got {o.beta1:g}"),
        (0 <= o.beta2 < 1, f"optim.beta2 must be in [0, 1), got {o.beta2:g}"),
        (o.eps > 0, f"optim.eps must be > 0, got {o.eps:g}"),
        (
            0 <= t.seed <= MAX_SEED,
            f"train.seed must be in [0, {MAX_SEED}], got {short(t.seed, 30)}",
        ),
        (d.resize is None or d.resize >= 8, "data.resize must be ≥ 8 pixels"),
        (
            d.resize is None or d.resize <= 4096,
            f"data.resize must be at most 4096 pixels, got {short(d.resize, 30)}",
        ),
    ]
    checks += imbalance_checks(cfg)
    size = d.args.get("size")
    if size is not None:
        ok = isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096
        checks.append(
            (ok, f"data.size must be an integer in [8, 4096] pixels, got {short(size, 30)}")
        )
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    check_pad(d.pad)
    check_class_weights(t.class_weights)
    if cfg.run.name is not None:
        check_run_name(cfg.run.name)
    return cfg


MAX_PAD = 1024  # pixels; 1e6 would ask for terabytes


def check_pad(pad: int, side: int | None = None) -> None:
    """data.pad pads every image on each side before a random crop: 0 to MAX_PAD pixels,
    and, once the data's image ``side`` is known, at most that (more only adds zeros)."""
    if not 0 <= pad <= MAX_PAD:
        raise ConfigError(f"data.pad must be in [0, {MAX_PAD}] pixels, got {short(pad, 30)}")
    if isinstance(side, int) and pad > side:
        raise ConfigError(
            f"data.pad={pad} is larger than the {side}-pixel images it pads; "
            f"use at most {side} (the default is 2)"
        )


SAMPLERS = ("random", "balanced")
SELECTS = ("val", "smooth")


def imbalance_checks(cfg: Config) -> list[tuple[bool, str]]:
    """data.sampler and train.select (train.class_weights: :func:`check_class_weights`)."""
    return [
        (
            cfg.data.sampler in SAMPLERS,
            choices_msg("data.sampler", cfg.data.sampler, SAMPLERS),
        ),
        (
            cfg.train.select in SELECTS,
            choices_msg("train.select", cfg.train.select, SELECTS),
        ),
    ]


def check_class_weights(spec, classes: int | None = None) -> None:
    """train.class_weights: none, auto or a list of numbers > 0 — once the data is loaded,
    one per class (``classes`` of them)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("none", "auto")):
        return
    values = list(spec) if isinstance(spec, (list, tuple)) else None
    positive = values is not None and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in values
    )
    if positive and len(values) == (classes or len(values)) and len(values) > 0:
        return
    if classes is None:
        raise ConfigError(
            "train.class_weights must be none, auto or a list of numbers > 0 (one per class), "
            f"got {short(spec, 40)}"
        )
    got = f"{len(values)} values" if values is not None else repr(spec)
    raise ConfigError(
        f"train.class_weights must be none, auto or a list of {classes} numbers > 0 (one per "
        f"class), got {got[:60]}"
    )


def _section_cls(name: str):
    return {
        "model": ModelConfig,
        "data": DataConfig,
        "optim": OptimConfig,
        "sched": SchedConfig,
        "train": TrainConfig,
        "run": RunConfig,
        "gan": GanConfig,
    }[name]


def resolve_task(cfg: Config) -> str:
    """The task a config trains: ``train.task``, or for ``auto`` gan when the model is a
    GAN, semi with ``data.labels_per_class``, adversarial with ``train.adversarial``,
    else classify."""
    task = cfg.train.task.strip().lower()
    if task != "auto":
        return task
    if cfg.model.name.strip().lower() in GAN_MODELS:
        return "gan"
    if cfg.data.labels_per_class:
        return "semi"
    if cfg.train.adversarial.strip().lower() != "none":
        return "adversarial"
    return "classify"


def gan_model_name(cfg: Config) -> str:
    """The GAN variant the ``gan`` section asks for; a conditional model.name
    (dcgan-conditional, dcgan-ac) also makes it conditional."""
    conditional = cfg.gan.conditional or cfg.model.name.strip().lower() in GAN_MODELS[1:]
    if cfg.gan.aux_weight > 0:
        return "dcgan-ac"
    return "dcgan-conditional" if conditional else "dcgan"


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        for a in args:  # a named value a field also takes (optim.lr: auto)
            if typing.get_origin(a) is typing.Literal and str(value).lower() in a.__args__:
                return str(value).lower()
        return coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where} must be true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and len(value) > 100:
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        try:
            f = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {short(value)}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {short(value)}")
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {short(value)}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where} must be a finite number, got {short(value)}")
        return f
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {short(value)}")
        return str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {short(value)}")
        return dict(value)
    return value


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` (``model.activation``, ``optim.lr``) with type coercion."""
    parts = dotted.strip().split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"unknown config key {dotted!r}; keys look like section.key with section one of: "
            + ", ".join(SECTIONS)
            + did_you_mean(dotted, all_keys())
        )
    sec_name, key = parts[0], ".".join(parts[1:])
    sec = getattr(cfg, sec_name)
    hints = _hints(type(sec))
    if key in hints and key != "args":
        value = coerce(value, hints[key], dotted)
        if dotted.strip() == "model.name":
            value = normalise_model_name(value)
        elif dotted.strip() == "data.data_dir" and value:
            value = os.path.abspath(os.path.expanduser(value))  # a run read from elsewhere
        setattr(sec, key, value)
    elif key.startswith("args."):
        sec.args[key[5:]] = value
    elif sec_name in ("model", "data"):
        sec.args[key] = value  # a builder/loader option, checked in validate()
    else:
        valid = [k for k in hints if k != "args"]
        raise ConfigError(
            f"unknown config key {dotted!r}; {sec_name} keys: {', '.join(valid)}"
            + did_you_mean(dotted, all_keys())
        )


def all_keys() -> list[str]:
    """Every ``section.key`` of the schema (builder and loader options aside)."""
    return [f"{s}.{k}" for s in SECTIONS for k in _hints(_section_cls(s)) if k != "args"]


def normalise_model_name(name: object) -> str:
    """Model names are lower case (``LeNet5`` → ``lenet5``), as the run's name is made of it."""
    return str(name).strip().lower()


def get_value(cfg: Config, dotted: str, default: Any = None) -> Any:
    """Read ``section.key`` (the inverse of set_value); an option the config leaves unset
    reads as ``default``."""
    parts = dotted.strip().split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key {dotted!r}")
    sec_name, key = parts[0], ".".join(parts[1:])
    sec = getattr(cfg, sec_name)
    if key in _hints(type(sec)) and key != "args":
        return getattr(sec, key)
    key = key[5:] if key.startswith("args.") else key
    return sec.args.get(key, default)


def parse_scalar(text: str) -> Any:
    if _flow_depth(text) > MAX_DEPTH:
        raise ConfigError(f"--set value {short(text, 40)} is nested too deeply")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value {short(text, 40)} is nested too deeply") from None
    except (ValueError, OverflowError):  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"--set value {short(text, 40)} is not a usable value") from None
    return check_bounded(value, f"--set value {short(text, 40)}")


def apply_overrides(cfg: Config, overrides: list[str] | dict | None) -> Config:
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        parsed = []
        for o in overrides:
            if "=" not in o:
                raise ConfigError(
                    f"--set needs key=value, got {short(o)} (e.g. --set optim.lr=0.01)"
                )
            k, v = o.split("=", 1)
            parsed.append((k, parse_scalar(v)))
        items = parsed
    for k, v in items:
        set_value(cfg, k, v)
    return cfg


def from_dict(d: dict | None) -> Config:
    cfg = Config()
    if not d:
        return cfg
    if not isinstance(d, dict):
        raise ConfigError("a recipe must be a YAML mapping of sections (model, data, optim, ...)")
    for sec, body in d.items():
        if sec not in SECTIONS:
            raise ConfigError(choices_msg("config section", sec, SECTIONS))
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config section {sec!r} must be a mapping, got {short(body)}")
        for k, v in body.items():
            set_value(cfg, f"{sec}.{k}", v)
    return cfg


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship inside the package (``cnnlab/recipes/*.yaml``)."""
    root = resources.files("cnnlab") / "recipes"
    return sorted(e.name[:-5] for e in root.iterdir() if e.name.endswith(".yaml"))


def find_recipe(path: str | os.PathLike):
    """A recipe file by path (``my.yaml``, ``recipes/lenet5-mnist.yaml``) or by the name of
    a shipped recipe (``lenet5-mnist``, with or without ``.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.suffix and p.with_name(p.name + ".yaml").is_file():
        return p.with_name(p.name + ".yaml")
    name = p.name if p.suffix else p.name + ".yaml"
    shipped = resources.files("cnnlab") / "recipes" / name
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"recipe {str(path)!r} not found: give a YAML file's path or a shipped recipe's name "
        f"({', '.join(shipped_recipes())})"
    )


def load_recipe(path: str | os.PathLike) -> Config:
    """A config from a recipe (see :func:`find_recipe`) on top of the defaults."""
    p = find_recipe(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {p}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"recipe {p}: cannot read it ({e.strerror})") from None
    return from_dict(safe_yaml(text, f"recipe {p}"))
