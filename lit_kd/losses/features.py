"""Losses on intermediate features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote


def hint_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    r"""FitNets hint loss, Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    .. math::
        L_{hint} = \frac{1}{N} \sum_i \big(r(f^s)_i - f^t_i\big)^2

    the mean squared error between the regressed student feature :math:`r(f^s)` (the connector's
    output, already the teacher's shape) and the teacher's hint feature, averaged over all
    elements (as in the CRD/mdistiller benchmark code).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"Hint loss needs equal shapes; got student {tuple(student_feature.shape)} and teacher "
            f"{tuple(teacher_feature.shape)}. The connector must map the student feature to the teacher's shape."
        )
    return F.mse_loss(*promote(student_feature, teacher_feature))


def hcl_loss(student_feature: Tensor, teacher_feature: Tensor, levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    r"""Hierarchical context loss of ReviewKD (Chen et al., CVPR 2021), the feature loss of DistPro
    (Deng et al., ECCV 2022).

    .. math::
        L_{HCL} = \frac{\mathrm{MSE}(f^s, f^t) + \sum_k c_k \,
                  \mathrm{MSE}\big(P_{l_k}(f^s), P_{l_k}(f^t)\big)}{1 + \sum_k c_k},
        \qquad c_k = 2^{-k}

    where :math:`P_l` is adaptive average pooling to :math:`l \times l`, the sum runs over the
    ``levels`` smaller than the feature's height (in order, :math:`k = 1, 2, \dots`), so an 8×8 map
    is compared at full size and at 4×4, 2×2, 1×1 with weights 1, ½, ¼, ⅛. Each MSE averages over
    all elements.
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"HCL needs equal shapes; got student {tuple(student_feature.shape)} and teacher "
            f"{tuple(teacher_feature.shape)}. The pathway's transform must map the student feature to the teacher's shape."
        )
    student_feature, teacher_feature = promote(student_feature, teacher_feature)
    total = F.mse_loss(student_feature, teacher_feature)
    weight, weight_sum = 1.0, 1.0
    for level in levels:
        if level >= student_feature.shape[-2]:
            continue
        weight /= 2.0
        total = total + weight * F.mse_loss(F.adaptive_avg_pool2d(student_feature, level),
                                            F.adaptive_avg_pool2d(teacher_feature, level))
        weight_sum += weight
    return total / weight_sum
