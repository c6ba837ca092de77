"""MEAL V2: the trainable part, the discriminator on the final outputs.

Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without
Tricks" (arXiv 2020). The losses are :func:`lit_kd.losses.meal_v2_loss` and
:func:`lit_kd.losses.meal_v2_discriminator_loss`; the LightningModule of the method will be added
to this file later.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_kd.losses import meal_v2_discriminator_loss

__all__ = ["MealV2Discriminator"]


class MealV2Discriminator(nn.Module):
    r"""The discriminator of MEAL V2: tells the student's logits from the teachers' averaged logits.

    Three fully connected layers :math:`C \to \lfloor C/r \rfloor \to \lfloor C/r^2 \rfloor \to 2`
    (the official code writes them as 1×1 convolutions on a 1×1 map, which is the same map), each
    followed by a ReLU, as in the official ``models/discriminator.py``, including the ReLU after the
    last layer: the two scores fed to the sigmoid are never negative, so the predicted probability
    of each answer is at least 1/2. ``relu_on_scores=False`` drops that last ReLU.

    Args:
        num_classes: C, the width of the logits (1000 for ImageNet in the paper).
        reduction: r, the width ratio between consecutive layers (8 in the official training).
        relu_on_scores: apply the ReLU to the two output scores (official: True).
    """

    def __init__(self, num_classes: int, reduction: int = 8, relu_on_scores: bool = True) -> None:
        super().__init__()
        hidden = num_classes // reduction
        inner = hidden // reduction
        if reduction < 1 or inner < 1:
            raise ValueError(f"num_classes={num_classes} with reduction={reduction} leaves an empty layer "
                             f"({num_classes} -> {hidden} -> {inner}); use a smaller reduction.")
        self.layers = nn.ModuleList([nn.Linear(num_classes, hidden), nn.Linear(hidden, inner), nn.Linear(inner, 2)])
        self.relu_on_scores = relu_on_scores

    def forward(self, logits: Tensor) -> Tensor:
        """The two scores (student, teacher) of each row of ``logits`` ``(B, C)``: ``(B, 2)``."""
        hidden = torch.relu(self.layers[0](logits))
        hidden = torch.relu(self.layers[1](hidden))
        scores = self.layers[2](hidden)
        return torch.relu(scores) if self.relu_on_scores else scores

    def loss(self, student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> Tensor:
        """:func:`~lit_kd.losses.meal_v2_discriminator_loss` of the student's logits against the
        average of the teachers' logits (logits, not probabilities, as in the official code)."""
        if not teacher_logits:
            raise ValueError("Pass at least one teacher's logits.")
        teacher_mean = torch.stack(list(teacher_logits)).mean(dim=0)
        return meal_v2_discriminator_loss(self(student_logits), self(teacher_mean))
