"""Relational losses: match how samples of a batch relate to each other, not the features themselves."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_kd.losses.precision import promote


def _conditional(kernel: Tensor) -> Tensor:
    """Row-normalize a kernel matrix into conditional probabilities ``P_ij = K_ij / sum_j K_ij``."""
    return kernel / kernel.sum(dim=1, keepdim=True)


def _jeffreys(teacher: Tensor, student: Tensor, eps: float) -> Tensor:
    """Mean over all entries of ``(P_t - P_s) * (log P_t - log P_s)`` (symmetric KL)."""
    return ((teacher - student) * (torch.log(teacher + eps) - torch.log(student + eps))).mean()


def pkt_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Probabilistic knowledge transfer as used by InDistill's official code (spec §4.1).

    Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018); InDistill (Sarridis et al., arXiv:2205.10003) uses it for the embedding stage.
    For a batch of embeddings :math:`F` (rows :math:`F_i`; teacher and student may differ in width):

    .. math::
        K^{cos}_{ij} = \frac{\cos(F_i, F_j) + 1}{2}, \qquad
        K^{t}_{ij} = \frac{1}{1 + d_{ij}}, \; d_{ij} = \sqrt{\lVert F_i - F_j \rVert^2 + 10^{-6}}

        P^k_{ij} = K^k_{ij} / \textstyle\sum_j K^k_{ij}

        L = \operatorname{mean}_{ij}\big[(P^{cos}_t - P^{cos}_s)(\log P^{cos}_t - \log P^{cos}_s)\big]
          + \operatorname{mean}_{ij}\big[(P^{t}_t - P^{t}_s)(\log P^{t}_t - \log P^{t}_s)\big]

    i.e. the Jeffreys divergence (symmetric KL) between the teacher's and the student's
    conditional distributions, for the cosine kernel and the Student-t-like kernel. ``eps`` is
    added inside the logarithms only, for numerical safety. The diagonal is kept, as in the code.

    Args:
        student_embedding: ``(B, D_s)`` student embeddings (flattened if they have more dims).
        teacher_embedding: ``(B, D_t)`` teacher embeddings, same batch.
        eps: added to the probabilities inside the logarithms.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"PKT needs the same batch for both networks; got {student.shape[0]} student and "
                         f"{teacher.shape[0]} teacher embeddings.")
    if student.shape[0] < 2:
        raise ValueError("PKT compares samples with each other: it needs a batch of at least 2.")
    loss = student.new_zeros(())
    for kernel in (_cosine_kernel, _student_t_kernel):
        loss = loss + _jeffreys(_conditional(kernel(teacher)), _conditional(kernel(student)), eps)
    return loss


def _cosine_kernel(features: Tensor) -> Tensor:
    unit = torch.nn.functional.normalize(features, dim=1, eps=1e-12)
    return (unit @ unit.T + 1.0) / 2.0


def _student_t_kernel(features: Tensor) -> Tensor:
    squared = (features.unsqueeze(1) - features.unsqueeze(0)).pow(2).sum(-1)
    return 1.0 / (1.0 + torch.sqrt(squared + 1e-6))
