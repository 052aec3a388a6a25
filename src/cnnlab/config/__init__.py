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

The package by job: ``sections`` (the sections and their defaults), ``schema`` (the
Config, ``section.key`` access with type coercion, a Config from a dict, the task it
trains), ``bounds`` (bounded YAML parsing, short values for messages), ``sources``
(recipes by path or name, ``--set`` overrides) and ``checks`` (value ranges). Callers
import every name from ``cnnlab.config``.
"""

from cnnlab.config.bounds import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_RECIPE_BYTES,
    check_bounded,
    parse_scalar,
    safe_yaml,
    short,
)
from cnnlab.config.checks import (
    MAX_PAD,
    MAX_RUN_NAME,
    MAX_SEED,
    SAMPLERS,
    SELECTS,
    check_class_weights,
    check_pad,
    check_run_name,
    check_values,
    imbalance_checks,
)
from cnnlab.config.schema import (
    SECTIONS,
    Config,
    all_keys,
    coerce,
    from_dict,
    gan_model_name,
    get_value,
    normalise_model_name,
    resolve_task,
    set_value,
)
from cnnlab.config.sections import (
    GAN_MODELS,
    TASKS,
    DataConfig,
    GanConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TrainConfig,
)
from cnnlab.config.sources import apply_overrides, find_recipe, load_recipe, shipped_recipes

__all__ = [
    "GAN_MODELS",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_PAD",
    "MAX_RECIPE_BYTES",
    "MAX_RUN_NAME",
    "MAX_SEED",
    "SAMPLERS",
    "SECTIONS",
    "SELECTS",
    "TASKS",
    "Config",
    "DataConfig",
    "GanConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedConfig",
    "TrainConfig",
    "all_keys",
    "apply_overrides",
    "check_bounded",
    "check_class_weights",
    "check_pad",
    "check_run_name",
    "check_values",
    "coerce",
    "find_recipe",
    "from_dict",
    "gan_model_name",
    "get_value",
    "imbalance_checks",
    "load_recipe",
    "normalise_model_name",
    "parse_scalar",
    "resolve_task",
    "safe_yaml",
    "set_value",
    "shipped_recipes",
    "short",
]
