"""RKD: relational knowledge distillation on the embedding the classifier reads."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses.rkd import rkd_angle_loss, rkd_distance_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["RKD"]


class RKD(FeatureDistillation):
    r"""Park, Kim, Lu & Cho, "Relational Knowledge Distillation" (CVPR 2019).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \big(\lambda_D L_D(s, t) + \lambda_A L_A(s, t)\big)

    the distance and angle terms of :func:`lit_kd.losses.rkd_loss` (Huber losses between the
    mean-normalized pairwise distances and between the triplet angles of the batch's embeddings).
    They are logged separately (``train/rkd_distance``, ``train/rkd_angle``); the objective is
    :math:`\beta \cdot` ``rkd_loss``.

    Defaults are the official ones (RepDistiller and mdistiller): the pooled embedding the
    classifier reads (``"pre_logits"``, RepDistiller's ``feat[-1]``), :math:`\lambda_D = 25`,
    :math:`\lambda_A = 50`, :math:`\beta = 1` (``-b 1``), CE weight 1, no KD term. The widths may
    differ (only the batch's relations are compared). Batches need at least 3 samples for the
    angle term to be non-zero.

    Args:
        student_layer: the student embedding (``"pre_logits"``, a stage index or module name).
        teacher_layer: the teacher embedding.
        distance_weight: :math:`\lambda_D`.
        angle_weight: :math:`\lambda_A`.
        rkd_weight: :math:`\beta`.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layer: Layer = "pre_logits",
        teacher_layer: Layer = "pre_logits",
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        rkd_weight: float = 1.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], ce_weight=ce_weight, **kwargs)
        self.distance_weight, self.angle_weight, self.rkd_weight = distance_weight, angle_weight, rkd_weight

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        (student,), (teacher,) = student_features, teacher_features
        return {"rkd_distance": (self.rkd_weight * self.distance_weight, rkd_distance_loss(student, teacher)),
                "rkd_angle": (self.rkd_weight * self.angle_weight, rkd_angle_loss(student, teacher))}
