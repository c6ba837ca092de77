"""NST: neuron selectivity transfer on several stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import nst_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["NST"]


class NST(FeatureDistillation):
    r"""Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (arXiv 2017).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \sum_k \mathrm{MMD}^2_{k(x, y) = (x^\top y)^2}
            \big(\{s_{k,i}\}_i, \{t_{k,j}\}_j\big)

    the squared maximum mean discrepancy between the L2-normalized channel activation patterns of
    student and teacher at each stage (:func:`lit_kd.losses.nst_loss`, polynomial kernel of degree
    2), summed over the stage pairs. Channel counts may differ; the larger map of a pair is
    average-pooled to the smaller size.

    Defaults are the official ones (RepDistiller and mdistiller): every stage after the stem
    (``feat[1:-1]``), :math:`\beta = 50` (``-b 50``), CE weight 1, no KD term.

    Args:
        student_layers: student stages; ``None``: every stage after the stem.
        teacher_layers: the teacher's stages; ``None``: every stage after the stem.
        nst_weight: :math:`\beta`.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        nst_weight: float = 50.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, ce_weight=ce_weight, **kwargs)
        self.require_pairs("NST")
        self.require_feature_maps("NST")
        self.nst_weight = nst_weight

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        total = sum(nst_loss(s, t) for s, t in zip(student_features, teacher_features))
        return {"nst": (self.nst_weight, total)}
