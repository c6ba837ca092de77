"""Contrastive representation distillation: the NCE loss over a positive and sampled negatives."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["contrast_scores", "crd_nce_loss", "estimate_normalization"]


def contrast_scores(anchor: Tensor, candidates: Tensor, temperature: float = 0.07) -> Tensor:
    r"""Unnormalized critic scores :math:`\exp(\langle c_{bk}, a_b \rangle / \tau)` of CRD.

    Args:
        anchor: ``(B, D)`` embeddings of one network (unit length in CRD).
        candidates: ``(B, 1 + K, D)`` the other network's memory rows for each anchor: the
            positive first, then ``K`` negatives. Detach them (they are a memory, not a graph).
        temperature: :math:`\tau` (0.07 in CRD).

    Returns:
        ``(B, 1 + K)`` scores; divide by the normalization constant :math:`Z` to get
        :math:`h(\cdot)` of the paper.
    """
    check_temperature(temperature)
    if anchor.dim() != 2 or candidates.dim() != 3 or candidates.shape[0] != anchor.shape[0] \
            or candidates.shape[2] != anchor.shape[1]:
        raise ValueError(f"contrast_scores needs anchors (B, D) and candidates (B, 1 + K, D); got "
                         f"{tuple(anchor.shape)} and {tuple(candidates.shape)}.")
    anchor, candidates = promote(anchor, candidates)
    return torch.exp((candidates @ anchor.unsqueeze(2)).squeeze(2) / temperature)


def estimate_normalization(scores: Tensor, num_data: int) -> Tensor:
    r"""CRD's normalization constant :math:`Z \approx N \cdot \operatorname{mean}(\text{scores})`.

    The partition function over all :math:`N` samples of the data set, estimated (once, on the first
    batch) from the mean score of the positives and negatives seen. Returned detached.
    """
    return scores.detach().mean() * num_data


def crd_nce_loss(probabilities: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    r"""Tian et al., "Contrastive Representation Distillation" (ICLR 2020): the NCE loss of one anchor side.

    With :math:`P_{b0}` the normalized score of sample :math:`b`'s positive pair, :math:`P_{bk}`
    (:math:`k = 1..K`) those of its negatives, and the noise term :math:`K P_n = K / N` (uniform noise
    over the :math:`N` samples):

    .. math::
        L = -\frac{1}{B} \sum_{b} \Big[ \log \frac{P_{b0}}{P_{b0} + K/N + \epsilon}
            + \sum_{k=1}^{K} \log \frac{K/N}{P_{bk} + K/N + \epsilon} \Big]

    the binary classification of "positive pair" against "noise" with
    :math:`h = P / (P + K/N)` (the paper's Eq. 18, as implemented by the authors). ``eps`` sits in
    the denominators only, as in their code. CRD adds the loss of both anchor sides (teacher
    anchored and student anchored).

    Args:
        probabilities: ``(B, 1 + K)`` scores divided by :math:`Z`; column 0 the positives.
        num_data: :math:`N`, the number of samples in the data set (the memory's rows).
        eps: numerical guard.
    """
    if probabilities.dim() != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"crd_nce_loss needs (B, 1 + K) probabilities with K >= 1 negatives; got "
                         f"{tuple(probabilities.shape)}.")
    if num_data < 1:
        raise ValueError(f"num_data must be >= 1, got {num_data}")
    (probabilities,) = promote(probabilities)
    noise = (probabilities.shape[1] - 1) / float(num_data)
    positive, negative = probabilities[:, 0], probabilities[:, 1:]
    log_positive = torch.log(positive / (positive + noise + eps))
    log_negative = torch.log(noise / (negative + noise + eps))
    return -(log_positive.sum() + log_negative.sum()) / probabilities.shape[0]
