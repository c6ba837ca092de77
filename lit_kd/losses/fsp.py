"""FSP: match the "flow of solution procedure" between pairs of layers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.spatial import pool_to_common_size

__all__ = ["fsp_loss", "fsp_matrix"]


def fsp_matrix(first_feature: Tensor, second_feature: Tensor) -> Tensor:
    r"""The FSP matrix of two feature maps of one network (Yim et al., CVPR 2017).

    .. math::
        G_{ij} = \frac{1}{H W} \sum_{h, w} F^1_{i,h,w} \, F^2_{j,h,w}

    one ``(C_1, C_2)`` matrix per sample. When the spatial sizes differ, the larger map is
    average-pooled to the smaller size first (as in RepDistiller; the paper pairs layers of equal
    size).

    Args:
        first_feature: ``(B, C_1, H_1, W_1)`` the earlier layer's activations.
        second_feature: ``(B, C_2, H_2, W_2)`` the later layer's activations.

    Returns:
        ``(B, C_1, C_2)``.
    """
    if first_feature.dim() != 4 or second_feature.dim() != 4 or first_feature.shape[0] != second_feature.shape[0]:
        raise ValueError(f"An FSP matrix needs two feature maps (B, C, H, W) of one batch; got "
                         f"{tuple(first_feature.shape)} and {tuple(second_feature.shape)}.")
    first, second = pool_to_common_size(first_feature, second_feature)
    return first.flatten(2) @ second.flatten(2).transpose(1, 2) / first.shape[-2:].numel()


def fsp_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> Tensor:
    r"""Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
    Transfer Learning" (CVPR 2017).

    .. math::
        L_{FSP} = \sum_{k=1}^{n-1} \frac{1}{B \, C_k C_{k+1}} \sum_{b}
                  \big\lVert G^t_k(b) - G^s_k(b) \big\rVert_F^2,
        \qquad G_k = \mathrm{FSP}(F_k, F_{k+1})

    over the :func:`fsp_matrix` of each pair of consecutive features in the lists, with equal
    weights. The paper sums the squared entries of each matrix; RepDistiller averages them (the
    :math:`1/(C_k C_{k+1})` above), as here, so that its weight (50) carries over. Student and
    teacher must have the same channel counts at every listed layer (the matrices are compared
    entry by entry); spatial sizes may differ. The paper (and RepDistiller, in its 30-epoch init stage)
    first trains the student on this loss alone, then on the task.

    Args:
        student_features: ``n >= 2`` student feature maps, in network order.
        teacher_features: the ``n`` teacher feature maps at the matching layers.
    """
    if len(student_features) != len(teacher_features) or len(student_features) < 2:
        raise ValueError(f"FSP needs the same number (at least 2) of student and teacher features; got "
                         f"{len(student_features)} and {len(teacher_features)}.")
    student_channels = [f.shape[1] for f in student_features]
    teacher_channels = [f.shape[1] for f in teacher_features]
    if student_channels != teacher_channels:
        raise ValueError(f"FSP compares the matrices entry by entry: student and teacher need the same channels at "
                         f"every layer; got {student_channels} and {teacher_channels}.")
    features = promote(*student_features, *teacher_features)
    student, teacher = features[: len(student_features)], features[len(student_features):]
    total = student[0].new_zeros(())
    for k in range(len(student) - 1):
        difference = fsp_matrix(teacher[k], teacher[k + 1]) - fsp_matrix(student[k], student[k + 1])
        total = total + difference.pow(2).mean()
    return total
