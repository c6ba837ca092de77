"""Losses for distillation between architectures of different families (CNN, ViT, MLP)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["ofa_loss"]


def ofa_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, epsilon: float = 1.0,
             temperature: float = 1.0) -> Tensor:
    r"""OFA's adaptive target-enhanced loss, Hao et al., "One-for-All: Bridge the Gap Between
    Heterogeneous Architectures in Knowledge Distillation" (NeurIPS 2023).

    With :math:`p^s = \mathrm{softmax}(z^s / T)`, :math:`p^t = \mathrm{softmax}(z^t / T)` and
    :math:`y` the one-hot ground-truth class,

    .. math::
        L_{OFA} = -\frac{1}{B} \sum_{b=1}^{B} \sum_{c}
                  \big[(p^t_{b,c} + y_{b,c})^{\epsilon} - y_{b,c}\big] \log p^s_{b,c}

    i.e. the target class is weighted :math:`(1 + p^t_{\hat y})^{\epsilon} - 1` and every other class
    :math:`(p^t_c)^{\epsilon}`. :math:`\epsilon = 1` is cross-entropy with the teacher's soft labels
    (the label then cancels); :math:`\epsilon > 1` raises the weight of the target class relative to
    the others (the paper uses 1.5 on ImageNet for DeiT-T -> ResNet-18). OFA applies the same loss to
    the student's logits and to the logits of every stage branch
    (:class:`lit_kd.methods.ofa.OFABranches`).

    As in the official code the temperature divides both logits and there is no :math:`T^2` factor
    (the paper uses :math:`T = 1`); ``log p^s`` is computed as ``log_softmax`` (the official
    ``log(softmax)`` is equal in value but can underflow to ``-inf`` for very unlikely classes).

    Args:
        student_logits: ``(B, C)`` logits of the student or of a stage branch.
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` class indices, or ``(B, C)`` soft labels (mixup, label smoothing) whose
            argmax is taken as the class, as in the official code.
        epsilon: the exponent :math:`\epsilon > 0`.
        temperature: softmax temperature :math:`T`.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"OFA needs (batch, classes) logits of one shape; got student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)}. Stage branches must end in a classifier over the teacher's classes."
        )
    batch, classes = student_logits.shape
    if target.dim() == 2:
        if target.shape != student_logits.shape:
            raise ValueError(f"Soft targets must be (batch, classes) = {(batch, classes)}, got {tuple(target.shape)}.")
        target = target.argmax(dim=1)
    if target.shape != (batch,) or target.is_floating_point():
        raise ValueError(f"target must hold {batch} class indices (integers) or soft labels (batch, classes); "
                         f"got {target.dtype} of shape {tuple(target.shape)}.")
    if not epsilon > 0 or epsilon == float("inf"):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    one_hot = F.one_hot(target.long(), classes).to(student_logits.dtype)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    weights = (p_teacher + one_hot) ** epsilon - one_hot
    return -(weights * log_p_student).sum(dim=1).mean()
