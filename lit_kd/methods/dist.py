"""DIST: distillation of inter-class and intra-class relations."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import dist_terms
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["DIST"]


class DIST(LogitDistillation):
    r"""Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + w_{kd} \big(\beta \, L_{inter} + \gamma \, L_{intra}\big)

    :math:`L_{inter}` is :math:`\tau^2 (1 - \text{mean Pearson correlation})` of each sample's predicted
    distribution with the teacher's, :math:`L_{intra}` the same for each class's column of
    probabilities across the batch (:func:`~lit_kd.losses.dist_terms`): the student matches the
    teacher's relations rather than its exact probabilities, which tolerates a much stronger teacher.
    Both are logged unweighted as ``train/inter`` and ``train/intra``.

    Defaults are those of the official code (``hunto/image_classification_sota``, ``kd_loss.py``):
    β = γ = 1 with loss weight 2 next to CE weight 1; τ = 1 (ImageNet); the CIFAR-100 recipe uses
    τ = 4 (``dist_t4``). The intra-class term needs batches of more than one sample.

    Args:
        beta: weight β of the inter-class term.
        gamma: weight γ of the intra-class term.
        kd_weight: weight of the whole DIST loss (official 2).
        temperature: softmax temperature τ (> 0).
        ce_weight: weight of the cross-entropy with the labels (0: no labels needed).
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments
            (``logit_standardization``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        beta: float = 1.0,
        gamma: float = 1.0,
        kd_weight: float = 2.0,
        temperature: float = 1.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        self.beta = beta
        self.gamma = gamma
        self.kd_weight = kd_weight

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        inter, intra = dist_terms(student_logits, teacher_logits, self.temperature)
        return {"inter": (self.kd_weight * self.beta, inter), "intra": (self.kd_weight * self.gamma, intra)}
