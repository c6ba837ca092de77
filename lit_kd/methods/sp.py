"""SP: similarity-preserving distillation on the last stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import sp_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["SP"]


class SP(FeatureDistillation):
    r"""Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \gamma \sum_k \frac{1}{B^2} \lVert G^t_k - G^s_k \rVert_F^2

    with :math:`G` the row-normalized ``B × B`` similarity matrix of a batch's flattened features
    (:func:`lit_kd.losses.sp_loss`), summed over the listed layers. Only the batch must agree;
    the feature shapes may differ.

    Defaults are the official ones (RepDistiller ``feat[-2]`` and ``-b 3000``; mdistiller
    ``feats[-1]`` and ``FEAT_WEIGHT`` 3000): the last stage's output (stage ``-1``),
    :math:`\gamma = 3000`, CE weight 1, no KD term.

    Args:
        student_layers: student layers (stage indices, module names, ``"pre_logits"``).
        teacher_layers: the teacher's layers paired with them.
        sp_weight: :math:`\gamma`.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] = (-1,),
        teacher_layers: Sequence[Layer] = (-1,),
        sp_weight: float = 3000.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, ce_weight=ce_weight, **kwargs)
        self.require_pairs("SP")
        self.sp_weight = sp_weight

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        total = sum(sp_loss(s, t) for s, t in zip(student_features, teacher_features))
        return {"sp": (self.sp_weight, total)}
