"""Tasks: what a training step computes (classification, adversarial training, the
semi-supervised methods, the GAN). :func:`make_task` picks the one a config asks for."""

from __future__ import annotations

from cnnlab.train.task import Task
from cnnlab.train.tasks.classify import AdversarialTask, ClassifyTask
from cnnlab.train.tasks.semi import SemiTask


def task_name(cfg) -> str:
    """semi with ``data.labels_per_class``, adversarial with ``train.adversarial``, else
    classify."""
    if cfg.data.labels_per_class:
        return "semi"
    if cfg.train.adversarial not in ("none", "", None):
        return "adversarial"
    return "classify"


def make_task(cfg) -> Task:
    return {"classify": ClassifyTask, "adversarial": AdversarialTask, "semi": SemiTask}[
        task_name(cfg)
    ]()
