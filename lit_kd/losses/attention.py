"""Attention transfer: match where in the image the networks' activations concentrate."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.spatial import check_feature_maps, pool_to_common_size

__all__ = ["attention_map", "at_loss"]


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    r"""The normalized spatial attention map of a feature map (Zagoruyko & Komodakis, ICLR 2017).

    .. math::
        Q = \frac{F(A)}{\lVert F(A) \rVert_2}, \qquad
        F(A)_{hw} = \frac{1}{C} \sum_{c=1}^{C} \lvert A_{c,h,w} \rvert^p

    one vector of length :math:`H W` per sample. Averaging instead of summing over channels (as the
    authors' code does) does not change :math:`Q`, since the norm divides the constant out.

    Args:
        feature: ``(B, C, H, W)`` activations.
        p: the power of the activations (the paper uses 2).

    Returns:
        ``(B, H * W)`` attention maps of unit L2 norm (a zero map stays zero).
    """
    if not p > 0 or math.isinf(p):
        raise ValueError(f"attention power p must be a finite number > 0, got {p}")
    summed = feature.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(summed, dim=1, eps=1e-12)


def at_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    r"""Attention transfer, Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the
    Performance of Convolutional Neural Networks via Attention Transfer" (ICLR 2017).

    .. math::
        L_{AT} = \frac{1}{B \, H W} \sum_{b=1}^{B} \big\lVert Q^s_b - Q^t_b \big\rVert_2^2

    with :math:`Q` the :func:`attention_map` of each network's feature at one stage. The channel
    counts may differ (the maps have one value per position); when the spatial sizes differ, the
    larger map is average-pooled to the smaller size first
    (:func:`~lit_kd.losses.spatial.pool_to_common_size`). Sum the loss over stage pairs for several
    stages.

    The paper writes the p-norm of the difference with weight :math:`\beta/2`, :math:`\beta = 10^3`
    divided by the number of map elements times the batch; the authors' code (and RepDistiller,
    mdistiller) implement it as the mean of the squared difference above, used with weight 1000,
    which is what this function computes. For even ``p`` (the default 2) :math:`|A|^p = A^p`, so
    the value equals the code's ``f.pow(p)``; for odd ``p`` the paper's absolute value is used.

    Args:
        student_feature: ``(B, C_s, H_s, W_s)`` student activations.
        teacher_feature: ``(B, C_t, H_t, W_t)`` teacher activations.
        p: the power of the activations in the attention map.
    """
    check_feature_maps(student_feature, teacher_feature, "AT")
    student_feature, teacher_feature = pool_to_common_size(*promote(student_feature, teacher_feature))
    difference = attention_map(student_feature, p) - attention_map(teacher_feature, p)
    return difference.pow(2).mean()
