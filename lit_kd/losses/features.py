"""Losses on intermediate features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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
    return F.mse_loss(student_feature.float(), teacher_feature.float())
