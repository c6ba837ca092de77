"""Vanilla knowledge distillation."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import kd_loss
from lit_kd.methods.base import check_weights
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec


class KD(LogitDistillation):
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

    ``loss = ce_weight * CE(z_s, y) + kd_weight * T² · KL(softmax(z_t/T) || softmax(z_s/T))``

    Defaults follow the CIFAR benchmark code of CRD/mdistiller (CE 0.1, KD 0.9, T = 4).

    Args:
        temperature: softmax temperature T.
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the distillation term.
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments (``logit_standardization``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        check_weights(kd_weight=kd_weight)
        self.kd_weight = kd_weight

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        return {"kd": (self.kd_weight, kd_loss(student_logits, teacher_logits, self.temperature))}
