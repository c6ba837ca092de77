"""Variational information distillation: the student's feature predicts the teacher's under a Gaussian."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["vid_loss"]


def vid_loss(predicted_mean: Tensor, teacher_feature: Tensor, variance: Tensor) -> Tensor:
    r"""Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

    The negative log-likelihood of the teacher's feature :math:`t` under a Gaussian whose mean
    :math:`\mu(s)` is regressed from the student's feature and whose variance :math:`\sigma_c^2` is a
    learned value per channel (constant over positions), without the constant
    :math:`\tfrac12 \log 2\pi`:

    .. math::
        L_{VID} = \frac{1}{B C H W} \sum_{b, c, h, w}
                  \frac12 \Big( \frac{(t_{bchw} - \mu_{bchw})^2}{\sigma_c^2} + \log \sigma_c^2 \Big)

    Minimizing it maximizes a variational lower bound on the mutual information between the two
    features. The paper sums over channels and positions; the authors' code averages over all
    elements, as here (the loss weight absorbs the factor).

    Args:
        predicted_mean: ``(B, C, H, W)`` the regressor's output :math:`\mu(s)`, the teacher's shape.
        teacher_feature: ``(B, C, H, W)`` teacher activations.
        variance: ``(C,)`` positive variances :math:`\sigma_c^2` (e.g. ``softplus(alpha) + eps``).
    """
    if predicted_mean.shape != teacher_feature.shape:
        raise ValueError(
            f"VID needs the predicted mean in the teacher's shape; got {tuple(predicted_mean.shape)} and teacher "
            f"{tuple(teacher_feature.shape)}. The regressor must map the student's channels to the teacher's "
            "(and the maps must share a spatial size)."
        )
    if variance.dim() != 1 or predicted_mean.dim() < 2 or variance.shape[0] != predicted_mean.shape[1]:
        raise ValueError(f"VID needs one variance per teacher channel ({predicted_mean.shape[1]}); got variance of "
                         f"shape {tuple(variance.shape)}.")
    predicted_mean, teacher_feature, variance = promote(predicted_mean, teacher_feature, variance)
    variance = variance.view(1, -1, *([1] * (predicted_mean.dim() - 2)))
    return (0.5 * ((teacher_feature - predicted_mean).pow(2) / variance + torch.log(variance))).mean()
