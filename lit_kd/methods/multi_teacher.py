"""Multi-teacher distillation: the trainable part, a learned weight per teacher.

The losses are in :mod:`lit_kd.losses.multi_teacher`; the LightningModule of the method will be
added to this file later.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LearnedTeacherWeights"]


class LearnedTeacherWeights(nn.Module):
    r"""One learnable weight per teacher: :math:`w = \mathrm{softmax}(\theta)`, :math:`\theta \in \mathbb{R}^K`.

    Its output is the ``weights`` argument of :func:`lit_kd.losses.ensemble_soft_targets` and
    :func:`lit_kd.losses.multi_teacher_kd_loss`, which then train :math:`\theta` together with the
    student. The softmax keeps the weights positive and summing to one. Note that the distillation
    loss alone rewards putting all weight on the teacher the student already matches best;
    regularize or schedule the weights' learning rate accordingly.

    Args:
        num_teachers: the number of teachers K (at least one).
        initial_logits: the starting :math:`\theta` (default zeros: equal weights 1/K); a floating
            tensor keeps its dtype.
    """

    def __init__(self, num_teachers: int, initial_logits: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if num_teachers < 1:
            raise ValueError(f"num_teachers must be at least 1, got {num_teachers}.")
        if initial_logits is None:
            initial = torch.zeros(num_teachers)
        else:
            initial = torch.as_tensor(initial_logits)
            if not initial.is_floating_point():
                initial = initial.to(torch.get_default_dtype())
            if initial.shape != (num_teachers,):
                raise ValueError(f"initial_logits must hold one number per teacher ({num_teachers}); "
                                 f"got shape {tuple(initial.shape)}.")
        self.logits = nn.Parameter(initial.clone())

    def forward(self) -> Tensor:
        """The teacher weights, shape ``(K,)``, positive and summing to one."""
        return torch.softmax(self.logits, dim=0)
