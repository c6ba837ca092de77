"""Logit standardization (z-score) before the softmax of a distillation loss."""

from __future__ import annotations

from torch import Tensor

from lit_kd.losses.logits import kd_loss
from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_logit_pair


def standardize_logits(logits: Tensor, unbiased: bool = True, eps: float = 1e-7) -> Tensor:
    r"""Z-score of each row of logits, Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge
    Distillation" (CVPR 2024).

    .. math::
        \mathcal{Z}(z) = \frac{z - \bar z}{\sigma(z) + \epsilon}, \qquad
        \bar z = \frac{1}{C} \sum_k z_k, \quad
        \sigma(z) = \sqrt{\tfrac{1}{C - 1} \textstyle\sum_k (z_k - \bar z)^2}

    over the last dimension (classes). The defaults are the official code's convention: the
    unbiased standard deviation (:math:`C - 1`, torch's default) and ``eps = 1e-7`` added to
    :math:`\sigma` (not inside the square root); ``unbiased=False`` divides by :math:`C` (the
    population standard deviation). A constant row maps to zeros. Dividing the result by a base
    temperature :math:`\tau` gives the paper's :math:`\mathcal{Z}(z; \tau)`: a per-sample temperature
    :math:`\tau \sigma(z)`, different for teacher and student.
    """
    (logits,) = promote(logits)
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred / (logits.std(dim=-1, keepdim=True, correction=1 if unbiased else 0) + eps)


def standardized_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0,
                         unbiased: bool = True, eps: float = 1e-7) -> Tensor:
    r"""KD on standardized logits (Sun et al., CVPR 2024): :func:`~lit_kd.losses.kd_loss` of
    :func:`standardize_logits` of both networks at the base temperature :math:`\tau`.

    .. math::
        L = \tau^2 \cdot \frac{1}{B} \sum_{b} \mathrm{KL}\big(\mathrm{softmax}(\mathcal{Z}(z^t_b)/\tau)
            \,\|\, \mathrm{softmax}(\mathcal{Z}(z^s_b)/\tau)\big)

    The official recipe (``--logit-stand --base-temp 2 --kd-weight 9``) uses :math:`\tau = 2`, weight 9
    for this term and 0.1 for cross-entropy. Standardization is a pre-process for any logit loss: DKD
    with standardization is ``dkd_loss(standardize_logits(z_s), standardize_logits(z_t), ...)`` (the
    official recipe multiplies DKD's alpha and beta by 9 and uses T = 2).
    """
    check_logit_pair(student_logits, teacher_logits, "Standardized KD")
    return kd_loss(standardize_logits(student_logits, unbiased, eps), standardize_logits(teacher_logits, unbiased, eps),
                   temperature)
