"""Probabilistic knowledge transfer with the cosine kernel (the RepDistiller/mdistiller form)."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["cosine_conditionals", "pkt_cosine_loss"]


def cosine_conditionals(embedding: Tensor, eps: float = 1e-7) -> Tensor:
    r"""``(B, B)`` conditional probabilities of the cosine kernel, one row per anchor sample.

    .. math::
        \hat x_i = \frac{x_i}{\lVert x_i \rVert_2 + \epsilon}, \quad
        K_{ij} = \frac{\langle \hat x_i, \hat x_j \rangle + 1}{2}, \quad
        P_{j \mid i} = \frac{K_{ij}}{\sum_{j'} K_{ij'}}

    ``eps`` is added to the norm (not a lower clamp), exactly as in the authors' code, so a zero
    embedding gives :math:`\hat x = 0`. The diagonal is kept.
    """
    unit = embedding / (embedding.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    kernel = (unit @ unit.T + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_cosine_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018), in the form of the authors' code used by RepDistiller and mdistiller.

    .. math::
        L_{PKT} = \frac{1}{B^2} \sum_{i, j} P^t_{j \mid i}
                  \log \frac{P^t_{j \mid i} + \epsilon}{P^s_{j \mid i} + \epsilon}

    the KL divergence of the student's from the teacher's :func:`cosine_conditionals`, averaged over
    all :math:`B^2` entries (the paper sums; the code averages, as here). Only the cosine kernel is
    used. This differs from :func:`lit_kd.losses.pkt_loss`, InDistill's variant (symmetric KL over a
    cosine and a Student-t kernel). Unlike the code, NaNs in the inputs are not silently set to 0.

    Args:
        student_embedding: ``(B, ...)`` student embeddings (flattened), e.g. the pooled features.
        teacher_embedding: ``(B, ...)`` teacher embeddings; the width may differ from the student's.
        eps: added to the norms and inside the logarithm.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"PKT needs the same batch for both networks; got {student.shape[0]} student and "
                         f"{teacher.shape[0]} teacher embeddings.")
    if student.shape[0] < 2:
        raise ValueError("PKT compares samples with each other: it needs a batch of at least 2.")
    teacher_p = cosine_conditionals(teacher, eps)
    student_p = cosine_conditionals(student, eps)
    return (teacher_p * torch.log((teacher_p + eps) / (student_p + eps))).mean()
