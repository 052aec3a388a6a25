"""Tasks: what a training step computes (classification, adversarial training, the
semi-supervised methods, the GAN). :func:`make_task` picks the one a config asks for."""

from __future__ import annotations

from cnnlab.config import resolve_task
from cnnlab.train.task import Task
from cnnlab.train.tasks.classify import AdversarialTask, ClassifyTask
from cnnlab.train.tasks.gan import GanTask
from cnnlab.train.tasks.semi import SemiTask


def task_name(cfg) -> str:
    """``train.task``, or for auto: gan for a GAN model, semi with
    ``data.labels_per_class``, adversarial with ``train.adversarial``, else classify."""
    return resolve_task(cfg)


def make_task(cfg) -> Task:
    return {
        "classify": ClassifyTask,
        "adversarial": AdversarialTask,
        "semi": SemiTask,
        "gan": GanTask,
    }[task_name(cfg)]()
