"""Models by name. Importing this package registers every built-in model."""

from cnnlab.models import alexnet, lenet, mlp  # noqa: F401  (registers)
from cnnlab.models.base import (
    MODELS,
    Classifier,
    count_macs,
    count_params,
    create_model,
    list_models,
)

__all__ = ["MODELS", "Classifier", "count_macs", "count_params", "create_model", "list_models"]
