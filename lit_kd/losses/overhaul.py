"""Overhaul of feature distillation (OFD): margin ReLU on the teacher, partial L2 on pre-ReLU features.

Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["ofd_margin", "ofd_partial_l2_loss", "ofd_loss"]

Reduction = Literal["batchmean", "sum"]


def ofd_margin(bn_weight: Tensor, bn_bias: Tensor, min_tail_probability: float = 1e-3) -> Tensor:
    r"""The per-channel margin of OFD's margin ReLU, from the teacher's pre-ReLU batch norm.

    A channel's pre-ReLU response is modelled as :math:`x \sim \mathcal{N}(\beta, \gamma^2)` (the
    BN's shift and scale); the margin is the expected negative response

    .. math::
        m = \mathbb{E}[x \mid x < 0] = \beta - |\gamma| \,
            \frac{\varphi(\beta / |\gamma|)}{\Phi(-\beta / |\gamma|)}

    with :math:`\varphi, \Phi` the standard normal density and distribution. Where the negative
    tail is tiny (:math:`\Phi(-\beta/|\gamma|) \le` ``min_tail_probability``, default 0.001 as in
    the official code) the ratio is numerically meaningless and :math:`m = -3|\gamma|` is used.

    Args:
        bn_weight: the BN scale :math:`\gamma` per channel (its sign is ignored).
        bn_bias: the BN shift :math:`\beta` per channel.
        min_tail_probability: below this negative-tail probability use :math:`-3|\gamma|`.

    Returns:
        the margins, shape ``(C,)``, detached (a constant of the loss), computed in float64 and
        returned in the loss dtype of the inputs (at least float32).
    """
    if bn_weight.shape != bn_bias.shape or bn_weight.dim() != 1:
        raise ValueError(
            f"ofd_margin needs the BN weight and bias as two vectors of one length; got shapes "
            f"{tuple(bn_weight.shape)} and {tuple(bn_bias.shape)}."
        )
    out_dtype = promote(bn_weight, bn_bias)[0].dtype
    std = bn_weight.detach().to(torch.float64).abs()
    mean = bn_bias.detach().to(torch.float64)
    if bool((std == 0).any()):
        channels = torch.nonzero(std == 0).flatten().tolist()
        raise ValueError(f"ofd_margin: BN weight is zero in channels {channels}; the margin needs a scale > 0.")
    ratio = mean / std
    tail = torch.special.ndtr(-ratio)
    density = torch.exp(-ratio**2 / 2) / math.sqrt(2 * math.pi)
    # The tiny-tail branch is evaluated everywhere by torch.where; keep its division finite.
    gaussian = mean - std * density / tail.clamp_min(torch.finfo(torch.float64).tiny)
    margin = torch.where(tail > min_tail_probability, gaussian, -3 * std)
    return margin.to(out_dtype)


def ofd_partial_l2_loss(student_feature: Tensor, teacher_feature: Tensor, margin: Tensor,
                        reduction: Reduction = "batchmean") -> Tensor:
    r"""OFD's distance for one feature position: partial L2 to the margin-ReLU'd teacher.

    .. math::
        t = \max(f^t, m), \qquad
        d_p(t, s) = \sum_i \begin{cases} 0 & s_i \le t_i \le 0 \\ (t_i - s_i)^2 & \text{otherwise}
        \end{cases}

    on pre-ReLU features: where the teacher's response is negative (the ReLU would zero it) a
    student response that is lower is not penalised. ``reduction="batchmean"`` divides the sum by
    the batch size (mdistiller's ``mean(0).sum()``); ``"sum"`` is the raw sum of the clovaai code,
    whose training script then divides by batch size and 1000 (CIFAR) or 10000 (ImageNet).

    Args:
        student_feature: the connector's output (student feature mapped to the teacher's width), ``(B, C, ...)``.
        teacher_feature: the teacher's pre-ReLU feature, same shape.
        margin: per-channel margins ``(C,)`` from :func:`ofd_margin` (or any shape with ``C`` elements).
        reduction: ``"batchmean"`` or ``"sum"``.
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"OFD needs equal shapes; got student {tuple(student_feature.shape)} and teacher "
            f"{tuple(teacher_feature.shape)}. Map the student with the connector and pool the teacher to the "
            "student's spatial size (F.adaptive_avg_pool2d) if they differ."
        )
    channels = student_feature.shape[1]
    if margin.numel() != channels:
        raise ValueError(f"OFD needs one margin per teacher channel ({channels}); got {margin.numel()} margins.")
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum', got {reduction!r}")
    student_feature, teacher_feature, margin = promote(student_feature, teacher_feature, margin)
    margin = margin.detach().reshape(1, channels, *([1] * (student_feature.dim() - 2)))
    target = torch.maximum(teacher_feature.detach(), margin)
    counted = (student_feature > target) | (target > 0)
    total = ((student_feature - target) ** 2 * counted).sum()
    return total / student_feature.shape[0] if reduction == "batchmean" else total


def ofd_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], margins: Sequence[Tensor],
             reduction: Reduction = "batchmean") -> Tensor:
    r"""OFD over several feature positions, shallow to deep, weighted as in the official code.

    .. math::
        L_{OFD} = \sum_{i=1}^{n} \frac{d_p\big(\max(f^t_i, m_i),\, r_i(f^s_i)\big)}{2^{\,n-i}}

    so the deepest position has weight 1 and each shallower one half of the next.

    Args:
        student_features: connector outputs per position, shallow to deep.
        teacher_features: the teacher's pre-ReLU features, same shapes.
        margins: per-channel margins per position.
        reduction: see :func:`ofd_partial_l2_loss`.
    """
    count = len(student_features)
    if not count or len(teacher_features) != count or len(margins) != count:
        raise ValueError(
            f"OFD needs as many teacher features and margins as student features (at least one); got "
            f"{count} student, {len(teacher_features)} teacher features and {len(margins)} margins."
        )
    total = ofd_partial_l2_loss(student_features[0], teacher_features[0], margins[0], reduction) / 2 ** (count - 1)
    for index in range(1, count):
        weight = 2 ** (count - 1 - index)
        total = total + ofd_partial_l2_loss(student_features[index], teacher_features[index], margins[index],
                                            reduction) / weight
    return total
