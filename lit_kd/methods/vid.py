"""VID: variational information distillation, with the regressor and per-channel variance it trains."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.losses.spatial import check_feature_maps, pool_to_common_size
from lit_kd.contract import KDBatch
from lit_kd.losses.vid import vid_loss
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["VIDRegressor", "VID"]


class VIDRegressor(nn.Module):
    r"""The Gaussian that predicts one teacher feature from one student feature in VID.

    Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019): the
    mean :math:`\mu(s)` is three 1×1 convolutions (no bias) with ReLUs between them, the variance a
    learned value per teacher channel, :math:`\sigma_c^2 = \log(1 + e^{\alpha_c}) + \epsilon`, with
    :math:`\alpha` initialized so that every :math:`\sigma_c^2` starts at ``init_variance``. Defaults
    follow the authors' code as used by RepDistiller (hidden width = teacher channels,
    ``init_variance`` 5, ``eps`` 1e-5). One regressor per distilled stage; train it with the student.

    Args:
        student_channels: channels of the student feature.
        teacher_channels: channels of the teacher feature.
        hidden_channels: width of the two hidden 1×1 convolutions (default: ``teacher_channels``).
        init_variance: the initial :math:`\sigma_c^2` (must exceed ``eps``).
        eps: the variance floor.
    """

    def __init__(self, student_channels: int, teacher_channels: int, hidden_channels: int | None = None,
                 init_variance: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        if not init_variance > eps:
            raise ValueError(f"init_variance ({init_variance}) must exceed eps ({eps}).")
        hidden = teacher_channels if hidden_channels is None else hidden_channels
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, teacher_channels, kernel_size=1, bias=False),
        )
        # The inverse of softplus, so that softplus(alpha) + eps == init_variance at the start.
        alpha = math.log(math.expm1(init_variance - eps))
        self.alpha = nn.Parameter(torch.full((teacher_channels,), alpha))
        self.eps = eps

    def variance(self) -> Tensor:
        """The per-channel variances ``softplus(alpha) + eps``, shape ``(teacher_channels,)``."""
        return F.softplus(self.alpha) + self.eps

    def forward(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        """The VID loss of one stage: the larger map is average-pooled to the smaller size first."""
        check_feature_maps(student_feature, teacher_feature, "VID")
        student_in = self.regressor[0].in_channels
        if student_feature.shape[1] != student_in or teacher_feature.shape[1] != self.alpha.shape[0]:
            raise ValueError(
                f"This VIDRegressor maps {student_in} student channels to {self.alpha.shape[0]} teacher channels; "
                f"got student {tuple(student_feature.shape)} and teacher {tuple(teacher_feature.shape)}."
            )
        student_feature, teacher_feature = pool_to_common_size(student_feature, teacher_feature)
        return vid_loss(self.regressor(student_feature), teacher_feature, self.variance())


class VID(FeatureDistillation):
    r"""Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge
    Transfer" (CVPR 2019).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \sum_k \frac{1}{BCHW} \sum
            \frac12 \Big( \frac{(t_k - \mu_k(s_k))^2}{\sigma_{k,c}^2} + \log \sigma_{k,c}^2 \Big)

    one :class:`VIDRegressor` per stage pair (three 1×1 convolutions predicting the teacher's
    feature, and a learned variance per teacher channel), :func:`lit_kd.losses.vid_loss`, summed
    over the pairs. The regressors are trainable parts of the method (optimized with the student,
    checkpointed, not exported). Where the spatial sizes of a pair differ, the larger map is
    average-pooled to the smaller one first.

    Defaults are RepDistiller's: every stage after the stem (``feat[1:-1]``), hidden width = the
    teacher's channels, initial variance 5, variance floor 1e-5, :math:`\beta = 1` (``-b 1``), CE
    weight 1, no KD term. RepDistiller trains the variances (``log_scale`` is a registered
    parameter), as here; mdistiller keeps them in a plain list, so its variances never move from
    their initial value (not reproduced).

    Args:
        student_layers: student stages; ``None``: every stage after the stem.
        teacher_layers: the teacher's stages; ``None``: every stage after the stem.
        vid_weight: :math:`\beta`.
        init_variance: the initial :math:`\sigma^2` of every channel.
        eps: the variance floor.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        vid_weight: float = 1.0,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, ce_weight=ce_weight, **kwargs)
        self.require_pairs("VID")
        self.require_feature_maps("VID")
        self.regressors = nn.ModuleList(
            VIDRegressor(s[0], t[0], init_variance=init_variance, eps=eps)
            for s, t in zip(self.student_shapes, self.teacher_shapes)
        )
        self.vid_weight = vid_weight

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "regressors": self.regressors}

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        total = sum(regressor(s, t) for regressor, s, t in zip(self.regressors, student_features, teacher_features))
        return {"vid": (self.vid_weight, total)}
