"""Normalized Knowledge Distillation (NKD)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_class_targets, check_logit_pair


def nkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 1.0,
             gamma: float = 1.5) -> Tensor:
    r"""Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
    Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023).

    .. math::
        L_{NKD} = -\frac{1}{B} \sum_{b} \Big( \mathcal{T}_{y} \log \mathcal{S}_{y}
                  + \gamma \lambda^2 \sum_{i \ne y} \mathcal{N}(\mathcal{T}^\lambda_i)
                    \log \mathcal{N}(\mathcal{S}^\lambda_i) \Big)

    The target term weights the student's log-probability of the label by the teacher's probability of
    it (both at temperature 1; the teacher's weight carries no gradient). The non-target term is a
    cross-entropy between the *normalized* non-target distributions
    :math:`\mathcal{N}(p_i) = p_i / \sum_{k \ne y} p_k` at temperature :math:`\lambda` (the softmax over
    the non-target logits, target class removed). Both are cross-entropies, not KL: identical
    logits give a positive loss, the same gradient as the KL form.

    Official settings (cls_KD): ImageNet CNNs :math:`\lambda = 1, \gamma = 1.5`; DeiT
    :math:`\gamma = 1`; the CIFAR-100 example :math:`\lambda = 3, \gamma = 3.5`. Soft labels (mixup or
    cutmix) enter the official code through their argmax: pass ``soft_target.argmax(dim=1)``.

    Args:
        student_logits: ``(B, C)`` student logits, ``C >= 2``.
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` integer class indices.
        temperature: :math:`\lambda > 0`, for the non-target term only.
        gamma: weight :math:`\gamma` of the non-target term.
    """
    check_logit_pair(student_logits, teacher_logits, "NKD")
    if student_logits.shape[1] < 2:
        raise ValueError(f"NKD needs at least 2 classes (target and non-target), got {student_logits.shape[1]}.")
    check_class_targets(target, student_logits, "NKD")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    batch = student_logits.shape[0]
    column = target.unsqueeze(1)
    log_student_target = F.log_softmax(student_logits, dim=1).gather(1, column)
    teacher_target = F.softmax(teacher_logits, dim=1).gather(1, column).detach()
    target_term = -(teacher_target * log_student_target).mean()

    is_other = ~F.one_hot(target, student_logits.shape[1]).bool()
    log_student_rest = F.log_softmax(student_logits[is_other].reshape(batch, -1) / temperature, dim=1)
    teacher_rest = F.softmax(teacher_logits[is_other].reshape(batch, -1) / temperature, dim=1)
    non_target_term = -(teacher_rest * log_student_rest).sum(dim=1).mean()
    return target_term + gamma * temperature**2 * non_target_term
