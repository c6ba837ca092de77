"""Decoupled Knowledge Distillation (DKD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_class_targets, check_logit_pair

# The official code hides the target class from the non-target softmax by subtracting this from logits / T.
OFFICIAL_TARGET_MASK_OFFSET = 1000.0


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 4.0,
              official: bool = False) -> tuple[Tensor, Tensor]:
    r"""The two parts of DKD, ``(TCKD, NCKD)``, each already multiplied by :math:`T^2` (see :func:`dkd_loss`).

    Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022). With
    :math:`p = \mathrm{softmax}(z / T)` and :math:`y` the target class of a sample:

    .. math::
        b = \big[p_y,\; 1 - p_y\big], \qquad
        \hat p_c = \frac{\exp(z_c / T)}{\sum_{k \ne y} \exp(z_k / T)} \quad (c \ne y)

        \mathrm{TCKD} = \frac{T^2}{B} \sum_{b=1}^{B} \mathrm{KL}\big(b^{t}_b \,\|\, b^{s}_b\big), \qquad
        \mathrm{NCKD} = \frac{T^2}{B} \sum_{b=1}^{B} \mathrm{KL}\big(\hat p^{t}_b \,\|\, \hat p^{s}_b\big)

    TCKD is the binary KL of "target vs. all other classes"; NCKD is the KL among the non-target classes
    only (the target class removed and the rest renormalised). Log-probabilities are computed with
    log-sum-exp, so a target probability near 0 or 1 stays finite.

    ``official=True`` reproduces the official code (mdistiller ``dkd_loss``) operation by operation:
    the target class is hidden from the non-target softmax by subtracting 1000 from ``z / T`` (not
    removed), and TCKD takes ``log`` of the summed softmax probabilities. Both readings agree to
    rounding for realistic logits; they differ when the target logit exceeds the others by about
    ``1000 T`` (then the official non-target distribution still puts mass on the target class).

    Args:
        student_logits: ``(B, C)`` student logits, ``C >= 2``.
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` integer class indices (the ground-truth labels).
        temperature: softmax temperature :math:`T > 0` (4 on CIFAR-100, 1 on ImageNet in the paper).
        official: compute as the official code does (see above).
    """
    check_logit_pair(student_logits, teacher_logits, "DKD")
    if student_logits.shape[1] < 2:
        raise ValueError(f"DKD needs at least 2 classes (target and non-target), got {student_logits.shape[1]}.")
    check_class_targets(target, student_logits, "DKD")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    batch = student_logits.shape[0]
    is_target = F.one_hot(target, student_logits.shape[1]).bool()
    scaled_student = student_logits / temperature
    scaled_teacher = teacher_logits / temperature
    if official:
        return _official_terms(scaled_student, scaled_teacher, is_target, temperature)

    log_binary_student = _log_binary(scaled_student, is_target)
    binary_teacher = _log_binary(scaled_teacher, is_target).exp()
    tckd = F.kl_div(log_binary_student, binary_teacher, reduction="sum") / batch
    # Remove the target column: (B, C) -> (B, C - 1), keeping class order.
    log_rest_student = F.log_softmax(scaled_student[~is_target].reshape(batch, -1), dim=1)
    log_rest_teacher = F.log_softmax(scaled_teacher[~is_target].reshape(batch, -1), dim=1)
    nckd = F.kl_div(log_rest_student, log_rest_teacher, log_target=True, reduction="sum") / batch
    return tckd * temperature**2, nckd * temperature**2


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0, official: bool = False) -> Tensor:
    r"""Decoupled Knowledge Distillation loss, Zhao et al. (CVPR 2022).

    .. math::
        L_{DKD} = \alpha \cdot \mathrm{TCKD} + \beta \cdot \mathrm{NCKD}

    with TCKD and NCKD from :func:`dkd_terms` (both carry :math:`T^2` and average over the batch). The
    paper shows classical KD equals :math:`\mathrm{TCKD} + (1 - p^t_y)\,\mathrm{NCKD}`; DKD frees the
    NCKD weight from the teacher's target confidence. The official training adds ``CE`` and multiplies
    this loss by :func:`dkd_warmup_factor`.

    Defaults are the official CIFAR-100 ones (alpha 1, beta 8, T 4); ImageNet uses T = 1 and beta 0.5
    (ResNet-34 → ResNet-18) or 2 (ResNet-50 → MobileNet-V1).

    Args:
        student_logits, teacher_logits, target, temperature, official: as in :func:`dkd_terms`.
        alpha: weight of TCKD.
        beta: weight of NCKD.
    """
    tckd, nckd = dkd_terms(student_logits, teacher_logits, target, temperature, official)
    return alpha * tckd + beta * nckd


def dkd_warmup_factor(epoch: int, warmup_epochs: float = 20) -> float:
    r"""Weight of the DKD term in epoch ``epoch``: :math:`\min(\mathrm{epoch} / \mathrm{warmup}, 1)`.

    The official trainer (mdistiller) counts epochs from 1, so the first epoch already has weight
    ``1 / warmup_epochs`` and the weight reaches 1 in epoch ``warmup_epochs``. Lightning counts from 0:
    pass ``trainer.current_epoch + 1`` to reproduce the official schedule. The official defaults are 20
    warm-up epochs on CIFAR-100 and 1 on ImageNet.
    """
    if not warmup_epochs > 0:
        raise ValueError(f"warmup_epochs must be > 0 (use 1 for full weight from the first epoch), got "
                         f"{warmup_epochs}.")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (counted from 1 as in the official trainer), got {epoch}.")
    return min(epoch / warmup_epochs, 1.0)


def _log_binary(scaled_logits: Tensor, is_target: Tensor) -> Tensor:
    """``log [p_y, 1 - p_y]`` of ``softmax(scaled_logits)`` per row, via log-sum-exp (stable near 0 and 1)."""
    log_total = torch.logsumexp(scaled_logits, dim=1, keepdim=True)
    log_target = scaled_logits.masked_fill(~is_target, float("-inf")).logsumexp(dim=1, keepdim=True)
    log_rest = scaled_logits.masked_fill(is_target, float("-inf")).logsumexp(dim=1, keepdim=True)
    return torch.cat([log_target, log_rest], dim=1) - log_total


def _official_terms(scaled_student: Tensor, scaled_teacher: Tensor, is_target: Tensor,
                    temperature: float) -> tuple[Tensor, Tensor]:
    """TCKD and NCKD computed as the official mdistiller code does (see :func:`dkd_terms`)."""
    batch = scaled_student.shape[0]

    def binary(probabilities: Tensor) -> Tensor:
        return torch.stack([(probabilities * is_target).sum(1), (probabilities * ~is_target).sum(1)], dim=1)

    log_binary_student = torch.log(binary(F.softmax(scaled_student, dim=1)))
    binary_teacher = binary(F.softmax(scaled_teacher, dim=1))
    tckd = F.kl_div(log_binary_student, binary_teacher, reduction="sum") / batch
    offset = OFFICIAL_TARGET_MASK_OFFSET * is_target
    log_rest_student = F.log_softmax(scaled_student - offset, dim=1)
    rest_teacher = F.softmax(scaled_teacher - offset, dim=1)
    nckd = F.kl_div(log_rest_student, rest_teacher, reduction="sum") / batch
    return tckd * temperature**2, nckd * temperature**2
