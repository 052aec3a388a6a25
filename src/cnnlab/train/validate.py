"""A config checked against the registries (models, datasets, losses, optimisers,
schedules) and the ranges of its values, before anything is built; then against the
data it loaded and the model it built, before the first step."""

from __future__ import annotations

from cnnlab.config import (
    GAN_MODELS,
    TASKS,
    Config,
    check_values,
    gan_model_name,
    resolve_task,
)
from cnnlab.errors import ConfigError, choices_msg

CUDA_GRAPH_MODES = ("auto", "true", "false", "step", "model")


PRECISIONS = ("auto", "fast", "fp32", "bf16", "fp16")


def validate(cfg: Config) -> Config:
    """Check names against the registries and values against their ranges."""
    check_names(cfg)
    check_values(cfg)
    check_modes(cfg)
    return cfg


def check_names(cfg: Config) -> None:
    """The task, model, dataset (with their options), augmentation, trackers, optimiser,
    schedule and loss, each against its registry."""
    from cnnlab.data.augment import parse_augment
    from cnnlab.data.datasets import DATASETS
    from cnnlab.models.base import MODELS
    from cnnlab.registry import check_kwargs
    from cnnlab.train.losses import LOSSES
    from cnnlab.train.optim import OPTIMIZERS, SCHEDULES
    from cnnlab.train.trackers import parse_report_to
    from cnnlab.train.trackers import require as require_trackers

    task = resolve_task(cfg)
    if task not in TASKS:
        raise ConfigError(choices_msg("train.task", cfg.train.task, TASKS))
    if task == "gan":
        check_gan(cfg)
    else:
        entry = MODELS.get(cfg.model.name)
        check_kwargs(
            "model",
            entry.name,
            entry.builder,
            cfg.model.args,
            skip=("in_channels", "num_classes", "input_size"),
        )
    spec = DATASETS.get(cfg.data.name)
    fields = [f"data.{k}" for k in vars(cfg.data) if k != "args"]  # what a typo may mean
    check_kwargs("dataset", spec.name, spec.loader, cfg.data.args, skip=("folder",), also=fields)
    parse_augment(cfg.data.augment)
    require_trackers(parse_report_to(cfg.run.report_to))
    OPTIMIZERS.get(cfg.optim.name)
    SCHEDULES.get(cfg.sched.name)
    LOSSES.get(cfg.train.loss)


def check_modes(cfg: Config) -> None:
    """The settings chosen by name: semi-supervised method, precision, channels-last,
    adversarial training, fine-tuning, CUDA graphs and device."""
    t = cfg.train
    semis = ("none", "pseudo_label", "mean_teacher", "fixmatch")
    if t.semi not in semis:
        raise ConfigError(choices_msg("semi-supervised method", t.semi, semis))
    if t.semi != "none" and not cfg.data.labels_per_class:
        raise ConfigError(
            f"train.semi={t.semi} needs unlabelled data: set data.labels_per_class=N "
            "(e.g. --set data.labels_per_class=100)"
        )
    if t.precision not in PRECISIONS:
        raise ConfigError(choices_msg("precision", t.precision, PRECISIONS))
    if t.channels_last.lower() not in ("auto", "true", "false"):
        raise ConfigError(
            choices_msg("channels_last value", t.channels_last, ("auto", "true", "false"))
        )
    from cnnlab.train.adversarial import check_config

    check_config(t)
    from cnnlab.train.finetune import check_config as check_finetune

    check_finetune(cfg)
    if t.cuda_graph.lower() not in CUDA_GRAPH_MODES:
        raise ConfigError(choices_msg("cuda_graph value", t.cuda_graph, CUDA_GRAPH_MODES))
    dev = t.device.lower()
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ConfigError(f"unknown device {t.device!r}; choose one of: auto, cpu, cuda, cuda:N")


def check_gan(cfg: Config) -> Config:
    """The GAN task's settings. Also settles ``model.name`` to the variant the ``gan``
    section asks for (gan.conditional, gan.aux_weight), so the run's config.yaml, its name
    and its checkpoint all say which GAN it is."""
    g, t, name = cfg.gan, cfg.train, cfg.model.name.strip().lower()
    if name not in GAN_MODELS:
        raise ConfigError(
            f"train.task=gan needs a GAN model, not {cfg.model.name!r}; "
            f"set model.name to one of: {', '.join(GAN_MODELS)}"
        )
    if cfg.model.args:
        raise ConfigError(
            f"unknown GAN model option(s) {', '.join(sorted(cfg.model.args))}; GAN settings "
            "are gan.<key>: conditional, aux_weight, z_dim, width, real_label, judge, "
            "eval_samples, grid"
        )
    checks = [
        (g.aux_weight >= 0, f"gan.aux_weight must be ≥ 0, got {g.aux_weight}"),
        (
            name != "dcgan-ac" or g.aux_weight > 0,
            "model dcgan-ac (AC-GAN) needs gan.aux_weight > 0 (e.g. --set gan.aux_weight=1)",
        ),
        (
            g.aux_weight == 0 or g.conditional or name != "dcgan",
            "gan.aux_weight > 0 (AC-GAN) needs a conditional GAN; add --conditional",
        ),
        (t.batch_size >= 2, f"train.batch_size must be ≥ 2 for a GAN, got {t.batch_size}"),
        (
            0 <= cfg.optim.beta1 < 1 and 0 <= cfg.optim.beta2 < 1,
            "optim.beta1 and optim.beta2 must be in [0, 1)",
        ),
        (0 < g.real_label <= 1, f"gan.real_label must be in (0, 1], got {g.real_label}"),
        (g.z_dim >= 1, f"gan.z_dim must be ≥ 1, got {g.z_dim}"),
        (g.width >= 1, f"gan.width must be ≥ 1, got {g.width}"),
        (g.eval_samples >= 10, f"gan.eval_samples must be ≥ 10, got {g.eval_samples}"),
        (g.grid >= 1, f"gan.grid must be ≥ 1, got {g.grid}"),
        (
            cfg.data.train_limit is None or cfg.data.train_limit >= 2,
            f"data.train_limit must be ≥ 2 for a GAN, got {cfg.data.train_limit}",
        ),
        (
            t.threads == "auto-measure" or t.threads >= 0,
            f"train.threads must be ≥ 0 or auto-measure, got {t.threads}",
        ),
        # settings the GAN task does not read: refused rather than silently ignored
        (
            cfg.data.resize is None and not cfg.data.grayscale,
            "a GAN takes no data.resize or data.grayscale",
        ),
        (not cfg.data.labels_per_class, "a GAN takes no data.labels_per_class"),
        (t.adversarial.strip().lower() == "none", "a GAN takes no train.adversarial"),
        (cfg.data.sampler == "random", "a GAN takes no data.sampler"),
        (
            t.class_weights is None or str(t.class_weights).strip().lower() == "none",
            "a GAN takes no train.class_weights",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    g.conditional = g.conditional or name != "dcgan"
    cfg.model.name = gan_model_name(cfg)
    return cfg


def check_input(model, cfg: Config) -> None:
    """One forward pass of a single blank image, so a model that cannot take the
    data's image size fails here in one line instead of in the first step."""
    import torch

    args = getattr(model, "cnnlab_args", None)
    if not isinstance(args, dict) or "input_size" not in args:
        return
    c, s = int(args.get("in_channels", 1)), int(args["input_size"])
    model = getattr(model, "_orig_mod", model)
    p = next(model.parameters(), None)
    if p is None:
        return
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, c, s, s, device=p.device, dtype=p.dtype)
            model(x)
    except RuntimeError as e:
        raise ConfigError(
            f"model {args.get('name', cfg.model.name)} cannot take {c}×{s}×{s} "
            f"images ({str(e).splitlines()[0][:160]}); give it larger images "
            "(data.resize, or the dataset's size option)"
        ) from None
    finally:
        model.train(was)
