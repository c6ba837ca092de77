"""Weighted Soft Label Distillation (WSLD)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import wsld_loss
from lit_kd.methods.labels import class_targets
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["WSLD"]


class WSLD(LogitDistillation):
    r"""Zhou, Song, Chen, Zhou, Wang, Yuan, Zhang, "Rethinking Soft Labels for Knowledge Distillation:
    A Bias-Variance Tradeoff Perspective" (ICLR 2021).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \alpha \, \frac{T^2}{B} \sum_b w_b \, H\big(p^t_b, p^s_b\big),
        \qquad w_b = 1 - \exp\!\Big(-\frac{\mathcal{L}^s_{ce,b}}{\mathcal{L}^t_{ce,b} + \epsilon}\Big)

    (:func:`~lit_kd.losses.wsld_loss`): each sample's soft-label term is weighted by how much worse the
    student fits its label than the teacher does (both cross-entropies at temperature 1, no
    gradient), which damps the samples where soft labels mostly add variance.

    Defaults are the authors' ImageNet code (``bellymonster/Weighted-Soft-Label-Distillation``):
    T = 2, α = 2.5, CE weight 1. For CIFAR-100, ``yzd-v/cls_KD``'s config uses T = 4, α = 2.25.

    Args:
        temperature: softmax temperature T (> 0) of the soft-label term.
        alpha: weight α of the soft-label term.
        ce_weight: weight of the cross-entropy with the labels.
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments
            (``logit_standardization``, ...).

    The batches must carry hard class labels: they set each sample's weight.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 2.0,
        alpha: float = 2.5,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        self.alpha = alpha

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        target = class_targets(batch, "WSLD", "each sample's weight compares the two networks' cross-entropy "
                                          "with its label")
        return {"wsld": (self.alpha, wsld_loss(student_logits, teacher_logits, target, self.temperature))}
