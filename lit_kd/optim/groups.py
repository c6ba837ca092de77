"""Parameter groups with big_vision's decay semantics: only kernels are decayed, by ``s(t)·λ·θ``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

__all__ = ["ParamsLike", "is_kernel", "decay_groups", "torch_weight_decay"]

ParamsLike = Iterable[Tensor] | Iterable[tuple[str, Tensor]]


def is_kernel(param: Tensor, name: str | None = None) -> bool:
    """Whether a parameter is a convolution/dense kernel (decayed): at least 2-D and, when its name
    is known, named ``*weight``. Biases and normalization scales/shifts are 1-D; with names,
    ViT-style ``pos_embed`` / ``cls_token`` tensors are excluded too."""
    if param.ndim < 2:
        return False
    return name is None or name.rsplit(".", 1)[-1].endswith("weight")


def decay_groups(params: ParamsLike, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into ``[{kernels, weight_decay}, {the rest, weight_decay=0}]``.

    ``params`` are tensors or ``(name, tensor)`` pairs (``named_parameters()``); names make the
    rule stricter (see :func:`is_kernel`). Empty groups are dropped.
    """
    items = list(params)
    if not items:
        raise ValueError("the optimizer got no parameters")
    if any(isinstance(item, dict) for item in items):
        raise TypeError("pass parameters or (name, parameter) pairs, not parameter groups: the groups are "
                        "built here (kernels decayed, biases and normalization parameters not)")
    named = isinstance(items[0], tuple)
    kernels, others = [], []
    for item in items:
        name, param = item if named else (None, item)
        (kernels if is_kernel(param, name) else others).append(item)
    groups = [{"params": kernels, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def torch_weight_decay(lr: float, weight_decay: float) -> float:
    """PyTorch's decoupled ``weight_decay`` coefficient that removes big_vision's ``s(t)·λ·θ`` per step:
    ``λ / lr`` (PyTorch scales its decay by the scheduled learning rate)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr} (the decay is converted to PyTorch's weight_decay / lr)")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return weight_decay / lr
