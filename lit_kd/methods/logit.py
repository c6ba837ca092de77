"""The base of logit-based methods: the student learns from the teacher's logits on the same batch."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import standardize_logits
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import DistillationModule, check_weights, weighted_sum
from lit_kd.models import ModelSpec

__all__ = ["LogitDistillation"]


class LogitDistillation(DistillationModule):
    """Logit-based distillation: one teacher forward and one student forward per batch, then
    ``ce_weight · CE(z_s, y) + Σ_k w_k · L_k(z_s, z_t)`` over the terms of :meth:`distillation_terms`.

    **Logit standardization** (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024) is a switch of every logit-based method: with ``logit_standardization=True`` the
    distillation terms read the z-scores of the logits, :math:`(z - \\bar z) / \\sigma(z)` per sample
    (the official code's unbiased σ plus 1e-7, :func:`~lit_kd.losses.standardize_logits`), before the
    temperature; the cross-entropy keeps the raw student logits. The paper then uses its own
    temperatures and weights (e.g. KD: base temperature 2, KD weight 9); the configs say which.

    Args:
        temperature: softmax temperature T of the distillation terms.
        ce_weight: weight of the cross-entropy with the labels (0: labels are not needed).
        logit_standardization: z-score both networks' logits before the distillation terms.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        logit_standardization: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        check_weights(ce_weight=ce_weight)
        self.temperature = check_temperature(temperature)
        self.ce_weight = ce_weight
        self.logit_standardization = logit_standardization

    def distillation_logits(self, logits: Tensor) -> Tensor:
        """The logits as the distillation terms read them (z-scored with ``logit_standardization``)."""
        return standardize_logits(logits) if self.logit_standardization else logits

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        """The method's terms as ``{name: (weight, value)}``, on the logits of :meth:`distillation_logits`."""
        raise NotImplementedError(f"{type(self).__name__} must implement distillation_terms()")

    def ce_term(self, logits: Tensor, batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        """``{"ce": (ce_weight, CE)}``, or nothing when the weight is 0 (labels then are not needed)."""
        if self.ce_weight == 0:
            return {}
        if batch.target is None:
            raise DataContractError(f"{type(self).__name__} weighs the cross-entropy with the labels by ce_weight="
                                    f"{self.ce_weight}, but the batch has no labels. Give labelled data or set "
                                    "ce_weight: 0.")
        return {"ce": (self.ce_weight, self.cross_entropy(logits, batch.target))}

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_logits = self.teacher_logits(batch.teacher_image)
        logits = self(batch.image)
        terms = self.distillation_terms(self.distillation_logits(logits), self.distillation_logits(teacher_logits),
                                        batch)
        return logits, weighted_sum(**self.ce_term(logits, batch), **terms)
