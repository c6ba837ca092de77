"""PKT: probabilistic knowledge transfer on the embedding the classifier reads."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import pkt_cosine_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["PKT"]


class PKT(FeatureDistillation):
    r"""Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer"
    (ECCV 2018), in the form of the authors' code used by RepDistiller and mdistiller.

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \, \frac{1}{B^2} \sum_{i,j} P^t_{j|i}
            \log \frac{P^t_{j|i} + \epsilon}{P^s_{j|i} + \epsilon}

    with the cosine-kernel conditionals of :func:`lit_kd.losses.pkt_cosine_loss` (the code
    averages over the :math:`B^2` entries where the paper sums; the weight absorbs the factor).

    Defaults are the official ones: the pooled embedding (``"pre_logits"``, RepDistiller's
    ``feat[-1]``), :math:`\beta = 30000` (RepDistiller ``-b 30000``, mdistiller ``FEAT_WEIGHT``),
    CE weight 1, no KD term. The widths may differ.

    Args:
        student_layer: the student embedding (``"pre_logits"``, a stage index or module name).
        teacher_layer: the teacher embedding.
        pkt_weight: :math:`\beta`.
        eps: the :math:`\epsilon` added to the norms and inside the logarithm.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layer: Layer = "pre_logits",
        teacher_layer: Layer = "pre_logits",
        pkt_weight: float = 30000.0,
        eps: float = 1e-7,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], ce_weight=ce_weight, **kwargs)
        self.pkt_weight, self.eps = pkt_weight, eps

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        (student,), (teacher,) = student_features, teacher_features
        return {"pkt": (self.pkt_weight, pkt_cosine_loss(student, teacher, self.eps))}
