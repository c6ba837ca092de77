"""Normalized Knowledge Distillation (NKD)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import nkd_loss
from lit_kd.methods.labels import class_targets
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["NKD"]


class NKD(LogitDistillation):
    r"""Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
    Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + w_{kd} \Big( -\mathcal{T}_y \log \mathcal{S}_y
            - \gamma \lambda^2 \sum_{i \ne y} \mathcal{N}(\mathcal{T}^\lambda_i)
              \log \mathcal{N}(\mathcal{S}^\lambda_i) \Big)

    (batch mean; :func:`~lit_kd.losses.nkd_loss`): the student's log-probability of the label is
    weighted by the teacher's probability of it, and the non-target classes are matched after
    renormalizing them to a distribution of their own, at temperature :math:`\lambda`.

    Defaults are the official ImageNet CNN ones (``yzd-v/cls_KD``: temp 1, gamma 1.5, CE weight 1,
    the NKD term unweighted); its CIFAR-100 config uses λ = 3, γ = 3.5, and DeiT students γ = 1.
    Soft labels (mixup, CutMix) enter through their argmax, as in the official code.

    Args:
        temperature: λ (> 0), the temperature of the non-target term.
        gamma: weight γ of the non-target term.
        kd_weight: weight of the NKD loss (official 1).
        ce_weight: weight of the cross-entropy with the labels.
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments
            (``logit_standardization``, ...).

    The batches must carry class labels: the label decides the target and non-target terms.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 1.0,
        gamma: float = 1.5,
        kd_weight: float = 1.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        self.gamma = gamma
        self.kd_weight = kd_weight

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        target = class_targets(batch, "NKD", "its target and non-target terms read the label of every sample",
                               soft="argmax")
        return {"nkd": (self.kd_weight, nkd_loss(student_logits, teacher_logits, target, self.temperature,
                                                 self.gamma))}
