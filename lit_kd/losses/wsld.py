"""Weighted Soft Label Distillation (WSLD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_class_targets, check_logit_pair


def wsld_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 2.0,
              eps: float = 1e-7) -> Tensor:
    r"""Zhou, Song, Chen, Zhou, Wang, Yuan, Zhang, "Rethinking Soft Labels for Knowledge Distillation:
    A Bias-Variance Tradeoff Perspective" (ICLR 2021).

    .. math::
        w_b = 1 - \exp\!\Big(-\frac{\mathcal{L}^s_{ce,b}}{\mathcal{L}^t_{ce,b} + \epsilon}\Big), \qquad
        L_{WSLD} = \frac{T^2}{B} \sum_{b} w_b \Big(-\sum_c \mathrm{softmax}(z^t_b / T)_c
                   \log \mathrm{softmax}(z^s_b / T)_c\Big)

    where :math:`\mathcal{L}^{s}_{ce}` and :math:`\mathcal{L}^{t}_{ce}` are the student's and the
    teacher's cross-entropy with the label at temperature 1, computed without gradient. Samples the
    student already fits better than the teacher (small ratio) get a small weight, which reduces the
    variance of the soft labels where they add little. The soft term is the cross-entropy form of
    the official code (same gradient as KL, a larger value). ``eps = 1e-7`` is the official guard.

    The official recipe (ImageNet) adds ``CE + 2.5 * wsld_loss`` at :math:`T = 2`; cls_KD's CIFAR-100
    example uses :math:`T = 4` and weight 2.25.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` integer class indices.
        temperature: :math:`T > 0` of the soft term.
        eps: added to the teacher's cross-entropy in the weight.
    """
    check_logit_pair(student_logits, teacher_logits, "WSLD")
    check_class_targets(target, student_logits, "WSLD")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    soft = -(F.softmax(teacher_logits / temperature, dim=1)
             * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1)
    with torch.no_grad():
        student_ce = F.cross_entropy(student_logits, target, reduction="none")
        teacher_ce = F.cross_entropy(teacher_logits, target, reduction="none")
        weight = 1.0 - torch.exp(-student_ce / (teacher_ce + eps))
    return temperature**2 * (weight * soft).mean()
