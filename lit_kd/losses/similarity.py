"""Similarity-preserving distillation: samples that look alike to the teacher should look alike to the student."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["batch_similarity", "sp_loss"]


def batch_similarity(feature: Tensor) -> Tensor:
    r"""The row-normalized batch similarity matrix of Tung & Mori (ICCV 2019).

    .. math::
        \tilde G = Q Q^\top, \qquad G_{[i,:]} = \tilde G_{[i,:]} / \lVert \tilde G_{[i,:]} \rVert_2

    where :math:`Q` is the feature reshaped to ``(B, -1)``. Returns the ``(B, B)`` matrix :math:`G`.
    """
    flat = feature.flatten(1)
    return F.normalize(flat @ flat.T, dim=1, eps=1e-12)


def sp_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    r"""Similarity-preserving loss, Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

    .. math::
        L_{SP} = \frac{1}{B^2} \big\lVert G^t - G^s \big\rVert_F^2

    with :math:`G` the :func:`batch_similarity` of each network's feature (any shapes: only the
    batch must agree, the ``B × B`` matrices are compared). Sum over stage pairs for several stages.
    Returns a scalar (the RepDistiller/mdistiller code returns a one-element tensor of the same value).

    Args:
        student_feature: ``(B, ...)`` student activations.
        teacher_feature: ``(B, ...)`` teacher activations.
    """
    student_feature, teacher_feature = promote(student_feature, teacher_feature)
    batch = student_feature.shape[0]
    if teacher_feature.shape[0] != batch:
        raise ValueError(f"SP needs the same batch for both networks; got {batch} student and "
                         f"{teacher_feature.shape[0]} teacher samples.")
    if batch < 2:
        raise ValueError("SP compares the samples of a batch with each other: it needs a batch of at least 2.")
    difference = batch_similarity(teacher_feature) - batch_similarity(student_feature)
    return difference.pow(2).sum() / batch**2
