"""Vanilla knowledge distillation."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import kd_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import DistillationModule, weighted_sum
from lit_kd.models import ModelSpec


class KD(DistillationModule):
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

    ``loss = ce_weight * CE(z_s, y) + kd_weight * T² · KL(softmax(z_t/T) || softmax(z_s/T))``

    Defaults follow the CIFAR benchmark code of CRD/mdistiller (CE 0.1, KD 0.9, T = 4).

    Args:
        temperature: softmax temperature T.
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the distillation term.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
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
        super().__init__(student, teacher, **kwargs)
        self.temperature = check_temperature(temperature)
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_logits = self.teacher_logits(batch.teacher_image)
        logits = self(batch.image)
        return logits, self.weighted_losses(logits, batch.target, kd_loss(logits, teacher_logits, self.temperature))

    def weighted_losses(self, logits: Tensor, target: Tensor, kd: Tensor) -> dict[str, Tensor]:
        """``ce_weight * CE + kd_weight * kd``, with both terms for logging."""
        return weighted_sum(ce=(self.ce_weight, self.cross_entropy(logits, target)), kd=(self.kd_weight, kd))
