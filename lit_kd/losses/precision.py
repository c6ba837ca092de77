"""The one precision rule of every lit_kd loss (see :mod:`lit_kd.losses`)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["loss_dtype", "promote"]


def loss_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a loss computes in: the widest floating dtype of its inputs, at least float32.

    bfloat16/float16 inputs (mixed precision) are promoted to float32; float64 inputs stay float64
    (so gradient checks and golden tests in float64 keep their precision). Integer tensors (labels)
    do not take part.
    """
    dtype = torch.float32
    for tensor in tensors:
        if tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def promote(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` cast to :func:`loss_dtype` of all of them (floating tensors only; others as they are)."""
    dtype = loss_dtype(*tensors)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
