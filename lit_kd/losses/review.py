"""The knowledge-review loss of ReviewKD: the hierarchical context loss summed over review levels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lit_kd.losses.features import hcl_loss


def review_kd_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor],
                   levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    r"""Knowledge-review loss, Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021).

    .. math::
        L_{review} = \sum_{i=1}^{n} L_{HCL}\big(F_i^s, F_i^t\big)

    where :math:`F_i^s` is the output of the review path (the attention-based fusion of student
    stages :math:`i..n`, see :class:`lit_kd.methods.review_kd.KnowledgeReview`) at level ``i``,
    already in the teacher's shape, and :math:`L_{HCL}` is :func:`lit_kd.losses.hcl_loss` (the
    hierarchical context loss: MSE at full size and after average pooling to 4×4, 2×2, 1×1). The
    levels are summed with equal weights, as in the paper and the official code.

    Args:
        student_features: the review path's outputs, one per level (any order, paired with the teacher's).
        teacher_features: the teacher's features at the same levels, same shapes.
        levels: pooled sizes of the hierarchical context loss.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(
            f"ReviewKD pairs review outputs with teacher features level by level; got {len(student_features)} "
            f"student and {len(teacher_features)} teacher features (need the same number, at least one)."
        )
    total = hcl_loss(student_features[0], teacher_features[0], levels)
    for student_feature, teacher_feature in zip(student_features[1:], teacher_features[1:]):
        total = total + hcl_loss(student_feature, teacher_feature, levels)
    return total
