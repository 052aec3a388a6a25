"""cnnlab — train, understand, stress-test and ship a classic image classifier."""

__version__ = "0.1.0"

from .api import evaluate, predict  # noqa: E402
from .config import Config, load_recipe  # noqa: E402
from .data.datasets import Dataset, list_datasets, load_dataset  # noqa: E402
from .errors import CnnlabError  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .runs import load_model  # noqa: E402
from .train import Trainer, TrainResult, train  # noqa: E402

__all__ = [
    "__version__",
    "Config",
    "CnnlabError",
    "Dataset",
    "TrainResult",
    "Trainer",
    "create_model",
    "evaluate",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "load_recipe",
    "predict",
    "train",
]
