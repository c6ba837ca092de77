"""AT: attention transfer on several stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import at_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["AT"]


class AT(FeatureDistillation):
    r"""Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer" (ICLR 2017).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \sum_{k} L_{AT}(f^s_k, f^t_k)

    with :func:`lit_kd.losses.at_loss` (the mean squared difference of the L2-normalized spatial
    attention maps :math:`\frac{1}{C}\sum_c |A_c|^p`) summed over the stage pairs. Where the
    spatial sizes of a pair differ, the larger map is average-pooled to the smaller one (as in
    RepDistiller/mdistiller); the channel counts may differ.

    Defaults are the official ones: every residual stage's output (RepDistiller's ``feat[1:-1]``,
    mdistiller's ``feats[1:]``, the authors' ``group0..3`` outputs on ImageNet), :math:`p = 2`,
    :math:`\beta = 1000` (RepDistiller ``-b 1000``, mdistiller ``FEAT_WEIGHT``, the authors'
    ``--beta 1e+3``), CE weight 1 and no KD term (``-a 0``; the authors' ``--alpha 0``). The paper
    writes the weight as :math:`\beta/2` on the p-norm of the difference divided by the map size;
    the code's mean of squares with weight 1000 is what produced the published numbers.

    Args:
        student_layers: student stages (indices into ``feature_info``, or module names);
            ``None``: every stage after the stem.
        teacher_layers: the teacher's stages paired with them; ``None``: every stage after the stem.
        p: the power of the activations in the attention map.
        at_weight: :math:`\beta`.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments (``kd_weight``,
            ``temperature``, ``preact``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        p: float = 2.0,
        at_weight: float = 1000.0,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, ce_weight=ce_weight, **kwargs)
        self.require_pairs("AT")
        self.require_feature_maps("AT")
        if not p > 0:
            raise ValueError(f"AT's attention power p must be > 0, got {p}")
        self.p = p
        self.at_weight = at_weight

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        total = sum(at_loss(s, t, self.p) for s, t in zip(student_features, teacher_features))
        return {"at": (self.at_weight, total)}
