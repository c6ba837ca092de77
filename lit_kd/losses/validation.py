"""Input checks shared by the logit losses: clear errors instead of silent broadcasting."""

from __future__ import annotations

import torch
from torch import Tensor


def check_logit_pair(student_logits: Tensor, teacher_logits: Tensor, loss_name: str) -> None:
    """A ValueError unless both logits are ``(batch, classes)`` tensors of the same shape."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{loss_name}: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; teacher and student must predict the same classes "
            "for the same batch."
        )
    if student_logits.dim() != 2:
        raise ValueError(
            f"{loss_name} expects (batch, classes) logits, got shape {tuple(student_logits.shape)}; flatten extra "
            "dimensions (e.g. tokens) into the batch first."
        )


def check_class_targets(target: Tensor, logits: Tensor, loss_name: str) -> None:
    """A ValueError unless ``target`` holds one integer class index in ``[0, classes)`` per row of ``logits``."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{loss_name} needs integer class indices as target, got dtype {target.dtype}.")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{loss_name} needs one class index per sample: target of shape ({logits.shape[0]},), got "
            f"{tuple(target.shape)}. Convert one-hot or soft labels with .argmax(dim=1)."
        )
    num_classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"{loss_name}: target indices must lie in [0, {num_classes - 1}] for {num_classes} classes, got values in "
            f"[{int(target.min())}, {int(target.max())}]."
        )
