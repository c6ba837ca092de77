"""VID: the regressor and per-channel variance that variational information distillation trains."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.losses.spatial import check_feature_maps, pool_to_common_size
from lit_kd.losses.vid import vid_loss

__all__ = ["VIDRegressor"]


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
