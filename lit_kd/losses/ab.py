"""Activation boundaries: the student's neurons should switch on and off where the teacher's do."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["ab_loss", "ab_stage_weights"]


def ab_loss(student_feature: Tensor, teacher_feature: Tensor, margin: float = 1.0) -> Tensor:
    r"""Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons" (AAAI 2019): the alternative (differentiable) activation-transfer loss of one layer.

    .. math::
        L_{AB} = \frac{1}{B} \sum_{b} \Big\lVert \rho(t) \odot \max(0, \mu - s)
                 + \big(1 - \rho(t)\big) \odot \max(0, \mu + s) \Big\rVert_2^2,
        \qquad \rho(t) = \mathbb{1}[t > 0]

    where :math:`t` is the teacher's pre-activation and :math:`s` the student's pre-activation
    mapped by the connector to the teacher's shape: where the teacher's neuron is active the
    student's should exceed :math:`\mu`, where it is inactive it should stay below
    :math:`-\mu`. Squared hinge errors are summed over all neurons and averaged over the batch (as
    the authors' code does). The paper uses it to initialize the student before training on the
    task. For several layers weight the per-layer losses, e.g. by :func:`ab_stage_weights`.

    Args:
        student_feature: ``(B, ...)`` connector output, the teacher's shape (pre-activation).
        teacher_feature: ``(B, ...)`` teacher pre-activation.
        margin: :math:`\mu` (1 in the paper and the code).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"AB compares neurons one to one: the connector must map the student feature to the teacher's shape; "
            f"got {tuple(student_feature.shape)} and teacher {tuple(teacher_feature.shape)}."
        )
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    student, teacher = promote(student_feature, teacher_feature)
    squared_hinge = torch.where(teacher > 0, (margin - student).clamp(min=0), (margin + student).clamp(min=0)).pow(2)
    return squared_hinge.sum() / student.shape[0]


def ab_stage_weights(num_stages: int) -> list[float]:
    r"""The per-layer weights of the AB authors' code (and RepDistiller) for ``num_stages`` layers.

    .. math::
        w_i = \frac{3}{1000} \cdot 2^{\,i - n + 1}, \qquad i = 0, \dots, n - 1

    the deepest layer gets :math:`3/1000`, each earlier one half of the next. These constants are
    not in the paper; they come with the code that produced the published numbers.
    """
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    return [3e-3 * 2.0 ** (i - num_stages + 1) for i in range(num_stages)]
