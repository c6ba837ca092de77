"""Bringing two feature maps to one spatial size before a feature loss compares them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_feature_maps", "pool_to_common_size"]


def check_feature_maps(student_feature: Tensor, teacher_feature: Tensor, loss_name: str) -> None:
    """A ValueError unless both are ``(B, C, H, W)`` maps of the same batch (channels may differ)."""
    if student_feature.dim() != 4 or teacher_feature.dim() != 4:
        raise ValueError(
            f"{loss_name} compares feature maps (B, C, H, W); got student {tuple(student_feature.shape)} and "
            f"teacher {tuple(teacher_feature.shape)}. Tap convolutional stages (or NCHW-formatted ViT stages)."
        )
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"{loss_name} needs the same batch for both networks; got {student_feature.shape[0]} student and "
            f"{teacher_feature.shape[0]} teacher samples."
        )


def pool_to_common_size(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Both maps at the smaller height and the smaller width of the two, by adaptive average pooling.

    A map already at that size is returned unchanged. This is how the RepDistiller/mdistiller
    feature losses (AT, NST, VID, FT, FSP) match sizes: the larger map is average-pooled down to
    the smaller one. Those implementations pool to a square ``(H, H)`` taken from the height alone;
    for square maps, the usual case, the two agree, and non-square maps keep their aspect here.
    """
    size = (min(first.shape[-2], second.shape[-2]), min(first.shape[-1], second.shape[-1]))
    if tuple(first.shape[-2:]) != size:
        first = F.adaptive_avg_pool2d(first, size)
    if tuple(second.shape[-2:]) != size:
        second = F.adaptive_avg_pool2d(second, size)
    return first, second
