"""Relational knowledge distillation: match distances and angles between the samples of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["pairwise_distances", "rkd_angle_loss", "rkd_distance_loss", "rkd_loss"]


def _check_embeddings(student: Tensor, teacher: Tensor) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"RKD needs the same batch for both networks; got {student.shape[0]} student and "
                         f"{teacher.shape[0]} teacher embeddings.")
    if student.shape[0] < 2:
        raise ValueError("RKD relates the samples of a batch to each other: it needs a batch of at least 2 "
                         "(the angle term needs 3 to be non-zero).")


def pairwise_distances(embedding: Tensor, eps: float = 1e-12) -> Tensor:
    r"""``(B, B)`` Euclidean distances :math:`\sqrt{\max(\lVert x_i - x_j \rVert^2, \epsilon)}`, zero diagonal.

    Clamping the squared distance at ``eps`` keeps the square root differentiable for coinciding
    samples (the RKD code does the same).
    """
    squared = (embedding.unsqueeze(1) - embedding.unsqueeze(0)).pow(2).sum(-1)
    off_diagonal = 1.0 - torch.eye(embedding.shape[0], dtype=embedding.dtype, device=embedding.device)
    return squared.clamp(min=eps).sqrt() * off_diagonal


def rkd_distance_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-12) -> Tensor:
    r"""RKD distance term: Huber loss between mean-normalized pairwise distances.

    .. math::
        \psi_D(x_i, x_j) = \frac{\lVert x_i - x_j \rVert_2}{\mu}, \quad
        \mu = \frac{1}{B(B-1)} \sum_{i \ne j} \lVert x_i - x_j \rVert_2, \qquad
        L_D = \frac{1}{B^2} \sum_{i, j} \ell_\delta\big(\psi_D(s_i, s_j), \psi_D(t_i, t_j)\big)

    with :math:`\ell_\delta` the Huber (smooth-L1, :math:`\delta = 1`) loss. The paper writes a sum
    over pairs; the authors' code averages over all :math:`B^2` entries (the zero diagonal included),
    as here. Embeddings are flattened to ``(B, -1)``; the widths may differ.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    _check_embeddings(student, teacher)
    batch = student.shape[0]
    pairs = batch * (batch - 1)
    student_distance = pairwise_distances(student, eps)
    teacher_distance = pairwise_distances(teacher, eps)
    student_distance = student_distance / (student_distance.sum() / pairs)
    teacher_distance = teacher_distance / (teacher_distance.sum() / pairs)
    return F.smooth_l1_loss(student_distance, teacher_distance)


def _angles(embedding: Tensor) -> Tensor:
    """``cos`` of the angle at vertex ``i`` between ``x_j`` and ``x_k``: ``<e_ij, e_ik>`` for all ``i, j, k``."""
    directions = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), p=2, dim=2, eps=1e-12)
    return directions @ directions.transpose(1, 2)


def rkd_angle_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    r"""RKD angle term: Huber loss between the cosines of the angles formed by sample triplets.

    .. math::
        \psi_A(x_i, x_j, x_k) = \langle e_{ij}, e_{ik} \rangle, \quad
        e_{ij} = \frac{x_j - x_i}{\lVert x_j - x_i \rVert_2}, \qquad
        L_A = \frac{1}{B^3} \sum_{i, j, k} \ell_\delta\big(\psi_A(s_i, s_j, s_k), \psi_A(t_i, t_j, t_k)\big)

    averaged over all :math:`B^3` triplets as in the authors' code (the paper writes a sum).
    Degenerate triplets (:math:`j = i` or :math:`k = i`, where :math:`e = 0`; or :math:`j = k`,
    where the cosine is 1) are equal for both networks and add nothing but the count.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    _check_embeddings(student, teacher)
    return F.smooth_l1_loss(_angles(student), _angles(teacher))


def rkd_loss(student_embedding: Tensor, teacher_embedding: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0, eps: float = 1e-12) -> Tensor:
    r"""Park et al., "Relational Knowledge Distillation" (CVPR 2019).

    .. math::
        L_{RKD} = \lambda_D L_D + \lambda_A L_A

    the weighted sum of :func:`rkd_distance_loss` and :func:`rkd_angle_loss`, by default with
    :math:`\lambda_D = 25`, :math:`\lambda_A = 50` (RepDistiller's and mdistiller's defaults).
    The teacher's relations are targets; run the teacher without gradients.

    Args:
        student_embedding: ``(B, ...)`` student embeddings (flattened), e.g. the pooled features.
        teacher_embedding: ``(B, ...)`` teacher embeddings; the width may differ from the student's.
        distance_weight: :math:`\lambda_D`.
        angle_weight: :math:`\lambda_A`.
        eps: lower clamp of the squared distances.
    """
    return (distance_weight * rkd_distance_loss(student_embedding, teacher_embedding, eps)
            + angle_weight * rkd_angle_loss(student_embedding, teacher_embedding))
