"""Neuron selectivity transfer: match the distributions of the networks' channel activation patterns."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.spatial import check_feature_maps, pool_to_common_size

__all__ = ["nst_loss"]


def _mean_polynomial_kernel(first: Tensor, second: Tensor) -> Tensor:
    """Mean over the batch and all channel pairs of ``(<a_i, b_j>)^2`` for ``(B, C, HW)`` inputs."""
    return (first @ second.transpose(1, 2)).pow(2).mean()


def nst_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    r"""Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (arXiv 2017).

    Each channel's spatial activation pattern, L2-normalized, is one sample of a network's
    distribution; the loss is the squared maximum mean discrepancy between the student's
    :math:`\{s_i\}_{i=1}^{C_s}` and the teacher's :math:`\{t_j\}_{j=1}^{C_t}` with the polynomial
    kernel :math:`k(x, y) = (x^\top y)^2` (the paper's choice, :math:`d = 2, c = 0`):

    .. math::
        L_{NST} = \frac{1}{C_t^2} \sum_{j, j'} k(t_j, t_{j'}) + \frac{1}{C_s^2} \sum_{i, i'} k(s_i, s_{i'})
                - \frac{2}{C_s C_t} \sum_{i, j} k(s_i, t_j)

    averaged over the batch. The channel counts may differ; when the spatial sizes differ, the
    larger map is average-pooled to the smaller size first. The teacher-only term is kept (as in
    the RepDistiller/mdistiller code's ``full_loss``), so the value is the MMD itself, ≥ 0; it does
    not depend on the student.

    Args:
        student_feature: ``(B, C_s, H_s, W_s)`` student activations.
        teacher_feature: ``(B, C_t, H_t, W_t)`` teacher activations.
    """
    check_feature_maps(student_feature, teacher_feature, "NST")
    student_feature, teacher_feature = pool_to_common_size(*promote(student_feature, teacher_feature))
    student = F.normalize(student_feature.flatten(2), dim=2, eps=1e-12)
    teacher = F.normalize(teacher_feature.flatten(2), dim=2, eps=1e-12)
    return (_mean_polynomial_kernel(teacher, teacher) + _mean_polynomial_kernel(student, student)
            - 2.0 * _mean_polynomial_kernel(student, teacher))
