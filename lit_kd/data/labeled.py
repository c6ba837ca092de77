"""An in-memory labelled image set: the storage of every data set small enough to hold as ``uint8``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LabeledImages"]


@dataclass
class LabeledImages:
    """A labelled image set held in memory.

    Attributes:
        images: ``uint8`` tensor ``N×3×H×W``.
        targets: ``int64`` tensor ``N`` of class indices.
        classes: class names; ``targets`` index into it.
    """

    images: Tensor
    targets: Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N×3×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.targets.dtype != torch.int64 or self.targets.shape != (self.images.shape[0],):
            raise ValueError(f"targets must be int64 of shape ({self.images.shape[0]},), got {self.targets.dtype} "
                             f"{tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])
