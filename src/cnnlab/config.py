"""Configs as dataclasses; YAML recipes and ``--set a.b=value`` overrides on top.

Precedence: defaults → recipe YAML → ``--set`` flags (then CLI shortcuts like
``--epochs``). The resolved config is written into the run directory and every
checkpoint. Keys under ``model`` and ``data`` that are not fields of those sections are
options of the chosen model builder / dataset loader, validated against its signature.
An unknown key or a bad value raises ConfigError listing the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import ConfigError, choices_msg


@dataclass
class ModelConfig:
    name: str = "lenet5"
    args: dict = field(default_factory=dict)  # builder options: activation, init, ...


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
    val_fraction: float = 0.0  # validation split carved from the training set
    train_limit: int | None = None  # use only the first N training images (fixed order)
    # semi-supervised: keep N labelled images per class (chosen by train.seed), the rest of
    # the training set is unlabelled (its labels are dropped)
    labels_per_class: int | None = None
    args: dict = field(default_factory=dict)  # dataset options (synthetic: size, channels, ...)


@dataclass
class OptimConfig:
    name: str = "adam"
    # 1e-2 with batch 256: the defaults' fastest time to accuracy (docs/performance.md)
    lr: float = 1e-2
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
    threads: int = 0  # CPU threads (0 = every available core; 1 when measured busy)
    grad_clip: float = 0.0
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
    diagnostics: bool = True  # gradient flow + activation stats → <run>/gradients.jsonl
    report: bool = False  # write <run>/report.html when training ends (`cnnlab train`: on)
    # semi-supervised (with data.labels_per_class): none, pseudo_label, mean_teacher, fixmatch
    semi: str = "none"
    semi_threshold: float = 0.95  # pseudo_label/fixmatch: confidence to keep a pseudo-label
    semi_ratio: int = 7  # unlabelled images per labelled image in a step (FixMatch's mu)
    semi_weight: float = 1.0  # weight of the unlabelled loss
    semi_rampup: float = 0.0  # fraction of training over which the unlabelled weight ramps up
    semi_align: bool = True  # distribution alignment of the pseudo-label targets (ReMixMatch)
    ema: float = 0.0  # EMA teacher decay (0 = off; mean_teacher uses 0.99 when 0)
    # what a step computes (train/task.py): auto, classify, adversarial, semi, gan;
    # auto picks it from the config (see resolve_task)
    task: str = "auto"


@dataclass
class RunConfig:
    name: str | None = None
    runs_dir: str = "runs"
    save_best: bool = True


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
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            f = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return f
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
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
        )
    sec_name, key = parts[0], ".".join(parts[1:])
    sec = getattr(cfg, sec_name)
    hints = _hints(type(sec))
    if key in hints and key != "args":
        setattr(sec, key, coerce(value, hints[key], dotted))
    elif key.startswith("args."):
        sec.args[key[5:]] = value
    elif sec_name in ("model", "data"):
        sec.args[key] = value  # a builder/loader option, checked in validate()
    else:
        valid = [k for k in hints if k != "args"]
        raise ConfigError(f"unknown config key {dotted!r}; {sec_name} keys: {', '.join(valid)}")


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
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: Config, overrides: list[str] | dict | None) -> Config:
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        parsed = []
        for o in overrides:
            if "=" not in o:
                raise ConfigError(f"--set needs key=value, got {o!r} (e.g. --set optim.lr=0.01)")
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
            raise ConfigError(f"config section {sec!r} must be a mapping, got {body!r}")
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
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {p}: invalid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {p}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"recipe {p}: cannot read it ({e.strerror})") from None
    return from_dict(d)
