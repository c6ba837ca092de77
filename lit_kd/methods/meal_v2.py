"""MEAL V2: ensemble soft labels without one-hot labels, plus a discriminator on the final outputs.

Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without
Tricks" (arXiv 2020). The losses are :func:`lit_kd.losses.meal_v2_loss` and
:func:`lit_kd.losses.meal_v2_discriminator_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import meal_v2_discriminator_loss, meal_v2_loss
from lit_kd.methods.multi_teacher import MultiTeacherDistillation
from lit_kd.models import ModelSpec

__all__ = ["MealV2Discriminator", "MealV2"]


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


class MealV2(MultiTeacherDistillation):
    r"""MEAL V2 (Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on
    ImageNet without Tricks", arXiv 2020): the student learns from the average of several frozen
    teachers' probabilities alone, no one-hot labels, with a discriminator on the final outputs.

    .. math::
        L = \lambda_{sim}\,\frac{1}{B}\sum_b \mathrm{KL}\Big(\frac{1}{K}\sum_k \mathrm{softmax}(z^k_b)
            \,\Big\|\, \mathrm{softmax}(z^s_b)\Big) + \lambda_D\, L_D\big(D(z^s), D(\bar z^t)\big)
            \;[+\, \lambda_{CE}\,\mathrm{CE}(z^s, y)]

    the similarity loss (:func:`~lit_kd.losses.meal_v2_loss`, temperature 1) and the discriminator
    loss (:func:`~lit_kd.losses.meal_v2_discriminator_loss`) of :class:`MealV2Discriminator` :math:`D`
    on the student's logits and on the mean of the teachers' logits. As in the official training
    (szq0214/MEAL-V2, ``train.py``), the student and the discriminator minimize the **same** sum
    together, with one optimizer: no gradient reversal, no alternating steps (the authors describe
    the discriminator as a regularizer that keeps the student's outputs from collapsing onto the
    ensemble's). The discriminator is a trainable part of the method (optimized and checkpointed,
    not exported). The cross-entropy weight is 0 by default, so unlabelled batches train too.

    Official quirks: the similarity loss there is the soft cross-entropy (the KL plus the
    ensemble's entropy, same gradients): ``official=True`` returns that value. The official
    discriminator has its own learning rate (``--d_lr 1e-4``), but the learning-rate regime
    overwrites every parameter group's rate at each epoch, so in effect it trains at the student's
    rate, which is what one optimizer here does. The paper starts the student from pretrained
    weights (set ``student.checkpoint``), trains 180 ImageNet epochs with SGD lr 0.01 (0.001 after
    epoch 100), momentum 0.9, no weight decay.

    Args:
        teachers: the frozen teachers (specs or modules), at least one.
        ce_weight: weight of the cross-entropy with labels (MEAL V2: 0, labels not needed).
        similarity_weight: weight of the similarity loss.
        discriminator_weight: weight of the discriminator loss (official: 1).
        discriminator_reduction: width ratio r of the discriminator's layers ``C -> C/r -> C/r² -> 2``
            (official: 8, for 1000 classes; use 2 for 10 classes).
        discriminator_relu_on_scores: the official ReLU after the discriminator's last layer.
        official: the similarity loss as the official soft cross-entropy (same gradients).
        **kwargs: the :class:`~lit_kd.methods.multi_teacher.MultiTeacherDistillation` arguments
            (``num_classes``, ``logit_standardization``, ``check_teacher``, ...); the temperature is 1.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teachers: Sequence[ModelSpec | nn.Module],
        ce_weight: float = 0.0,
        similarity_weight: float = 1.0,
        discriminator_weight: float = 1.0,
        discriminator_reduction: int = 8,
        discriminator_relu_on_scores: bool = True,
        official: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teachers, temperature=1.0, ce_weight=ce_weight, **kwargs)
        classes = self.teacher_classes or self.num_classes
        if classes is None:
            raise ValueError("MealV2 sizes its discriminator by the number of classes, and the teachers do not declare "
                             "it: set num_classes.")
        self.discriminator = MealV2Discriminator(classes, discriminator_reduction, discriminator_relu_on_scores)
        self.similarity_weight = similarity_weight
        self.discriminator_weight = discriminator_weight
        self.official = official

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {**super().trainable_modules(), "discriminator": self.discriminator}

    def ensemble_terms(self, student_logits: Tensor, teacher_logits: list[Tensor],
                       batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        similarity = meal_v2_loss(self.distillation_logits(student_logits),
                                  [self.distillation_logits(t) for t in teacher_logits], official=self.official)
        terms = {"similarity": (self.similarity_weight, similarity)}
        if self.discriminator_weight != 0:
            # The discriminator reads the raw logits (the student's and the mean of the teachers'), as officially.
            adversarial = self.discriminator.loss(student_logits, teacher_logits)
            terms["discriminator"] = (self.discriminator_weight, adversarial)
        return terms
