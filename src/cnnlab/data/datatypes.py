"""The in-memory dataset every loader returns: uint8 image tensors, labels, class names and
normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Dataset:
    """A small image dataset held as uint8 tensors (N, C, H, W)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # the dataset's default training augmentation
    source: str = ""
    n_train: int | None = None  # loaded for evaluation only: the training set's size

    @property
    def num_train(self) -> int:
        """Training images, whether or not they were loaded (``split="test"``)."""
        return self.n_train if self.n_train is not None else len(self.train_x)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, classes={self.num_classes})"
        )
