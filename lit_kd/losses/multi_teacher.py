"""Losses that distil several teachers into one student: weighted ensembles of soft labels,
CA-MKD's confidence weights, MEAL V2 and DistillWeighted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["ensemble_soft_targets", "multi_teacher_kd_loss", "ca_mkd_weights", "ca_mkd_loss", "meal_v2_loss",
           "meal_v2_discriminator_loss", "relevance_weights", "distill_weighted_loss"]

RelevanceFn = Callable[[Sequence[Tensor]], Tensor]
"""Maps the source models' logits (one ``(B, C)`` tensor each) to one relevance score per source."""


def _check_teachers(teacher_logits: Sequence[Tensor], what: str = "teacher") -> list[Tensor]:
    """``teacher_logits`` as a list of ``(B, C)`` tensors of one shape, else a ValueError."""
    teachers = list(teacher_logits)
    if not teachers:
        raise ValueError(f"Pass at least one {what}'s logits.")
    for index, logits in enumerate(teachers):
        if logits.dim() != 2:
            raise ValueError(f"{what.capitalize()} {index} logits must be (batch, classes); "
                             f"got shape {tuple(logits.shape)}.")
        if logits.shape != teachers[0].shape:
            raise ValueError(
                f"{what.capitalize()} logits differ in shape: {what} 0 is {tuple(teachers[0].shape)}, "
                f"{what} {index} is {tuple(logits.shape)}. All {what}s must predict the same classes for the same "
                "batch."
            )
    return teachers


def _check_student(student_logits: Tensor, teachers: list[Tensor], what: str = "teacher") -> None:
    if student_logits.shape != teachers[0].shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and {what} logits {tuple(teachers[0].shape)} differ in "
            f"shape: the student must predict the {what}s' classes."
        )


def _check_weights(weights: Tensor | Sequence[float], num_teachers: int, batch_size: int) -> Tensor:
    """``weights`` as a ``(K,)`` or ``(B, K)`` tensor of finite, non-negative numbers, normalized over teachers."""
    weights = torch.as_tensor(weights)
    if not weights.is_floating_point():
        weights = weights.to(torch.get_default_dtype())
    if weights.dim() == 1 and weights.shape[0] != num_teachers:
        raise ValueError(f"Got {weights.shape[0]} teacher weights for {num_teachers} teachers: "
                         "pass one weight per teacher.")
    if weights.dim() == 2 and tuple(weights.shape) != (batch_size, num_teachers):
        raise ValueError(
            f"Per-sample teacher weights must be (batch, teachers) = ({batch_size}, {num_teachers}); "
            f"got {tuple(weights.shape)}."
        )
    if weights.dim() not in (1, 2):
        raise ValueError(f"Teacher weights must be (teachers,) or (batch, teachers); got shape {tuple(weights.shape)}.")
    if not torch.isfinite(weights).all():
        raise ValueError("Teacher weights must be finite numbers.")
    if (weights < 0).any():
        raise ValueError(f"Teacher weights must be >= 0; got {weights.detach().tolist()}.")
    total = weights.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("Teacher weights sum to zero: give at least one teacher a positive weight.")
    return weights / total


def ensemble_soft_targets(teacher_logits: Sequence[Tensor], weights: Tensor | Sequence[float] | None = None,
                          temperature: float = 1.0) -> Tensor:
    r"""The weighted average of several teachers' softened probabilities.

    .. math::
        \bar p_b = \sum_{k=1}^{K} w_{b,k} \, \mathrm{softmax}(z^{k}_b / T)

    ``weights`` is ``None`` (equal weights :math:`1/K`, the plain ensemble average), a ``(K,)``
    vector of fixed weights (one per teacher, e.g. the softmax of a learned vector, see
    :class:`lit_kd.methods.multi_teacher.LearnedTeacherWeights`) or a ``(B, K)`` matrix of
    per-sample weights (e.g. :func:`ca_mkd_weights`). Weights must be non-negative; they are
    normalized to sum to one over the teachers (a no-op for weights that already do, including
    for the gradients of a softmax). Returns ``(B, C)`` probabilities.
    """
    teachers = _check_teachers(teacher_logits)
    check_temperature(temperature)
    teachers = list(promote(*teachers))
    probabilities = torch.stack([F.softmax(logits / temperature, dim=-1) for logits in teachers], dim=1)  # (B, K, C)
    if weights is None:
        return probabilities.mean(dim=1)
    weights = _check_weights(weights, len(teachers), teachers[0].shape[0]).to(probabilities.dtype)
    if weights.dim() == 1:
        weights = weights.expand(probabilities.shape[0], -1)
    return (weights.unsqueeze(-1) * probabilities).sum(dim=1)


def _kl_to_target(target_probabilities: Tensor, log_student: Tensor) -> Tensor:
    """Per-sample :math:`\\mathrm{KL}(p \\| q) = \\sum_c p_c (\\log p_c - \\log q_c)`, with :math:`0 \\log 0 = 0`."""
    return (torch.xlogy(target_probabilities, target_probabilities) - target_probabilities * log_student).sum(dim=-1)


def multi_teacher_kd_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor],
                          weights: Tensor | Sequence[float] | None = None, temperature: float = 4.0) -> Tensor:
    r"""KD from the weighted ensemble of several teachers' soft labels.

    .. math::
        L = T^2 \cdot \frac{1}{B} \sum_{b=1}^{B}
            \mathrm{KL}\big(\bar p_b \,\|\, \mathrm{softmax}(z^s_b / T)\big)

    with :math:`\bar p` from :func:`ensemble_soft_targets` (fixed, learned or per-sample weights).
    With one teacher this is :func:`~lit_kd.losses.kd_loss`. Gradients flow into the student and
    into ``weights`` (so a learned weight vector is trained by this loss); detach the teachers'
    logits when the teachers are frozen.
    """
    teachers = _check_teachers(teacher_logits)
    _check_student(student_logits, teachers)
    target = ensemble_soft_targets(teachers, weights, temperature)
    student_logits, target = promote(student_logits, target)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    return _kl_to_target(target, log_student).mean() * temperature**2


def _check_labels(labels: Tensor, logits: Tensor) -> None:
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"Labels must be a (batch,) tensor of class indices; got {tuple(labels.shape)} for logits "
                         f"{tuple(logits.shape)}.")
    if labels.is_floating_point():
        raise ValueError("Labels must be integer class indices, not probabilities.")


def ca_mkd_weights(teacher_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    r"""CA-MKD's per-sample teacher weights (Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher
    Knowledge Distillation", ICASSP 2022).

    .. math::
        w_{b,k} = \frac{1}{K-1}\Big(1 - \frac{\exp(\ell^k_b)}{\sum_{j} \exp(\ell^j_b)}\Big), \qquad
        \ell^k_b = \mathrm{CE}(z^k_b, y_b)

    a teacher with a lower cross-entropy against the label (more confident in the right class)
    gets a larger weight; the weights of a sample sum to one over the :math:`K \ge 2` teachers.
    They are computed without gradient (the teachers are frozen in CA-MKD). Returns ``(B, K)``.
    """
    teachers = _check_teachers(teacher_logits)
    if len(teachers) < 2:
        raise ValueError("CA-MKD weights need at least two teachers (they are normalized by K - 1).")
    _check_labels(labels, teachers[0])
    with torch.no_grad():
        teachers = list(promote(*teachers))
        cross_entropy = torch.stack([F.cross_entropy(logits, labels, reduction="none") for logits in teachers], dim=1)
        return (1.0 - F.softmax(cross_entropy, dim=1)) / (len(teachers) - 1)


def ca_mkd_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor], labels: Tensor, temperature: float = 4.0,
                official: bool = False) -> Tensor:
    r"""CA-MKD's confidence-weighted logit distillation (Zhang, Chen & Wang, ICASSP 2022).

    .. math::
        L_{KD} = \frac{1}{B} \sum_{b=1}^{B} \sum_{k=1}^{K} w_{b,k} \, T^2 \,
                 \mathrm{KL}\big(\mathrm{softmax}(z^k_b / T) \,\|\, \mathrm{softmax}(z^s_b / T)\big)

    with :math:`w` from :func:`ca_mkd_weights`: each teacher's KD term is weighted per sample by
    its confidence. The official code (Rorozhl/CA-MKD, ``helper/loops.py``) divides the weighted
    sum by :math:`B \cdot K` rather than :math:`B`, although the weights already sum to one over
    teachers, which scales the loss by :math:`1/K`; ``official=True`` reproduces that.
    """
    teachers = _check_teachers(teacher_logits)
    _check_student(student_logits, teachers)
    check_temperature(temperature)
    weights = ca_mkd_weights(teachers, labels)
    student_logits, *teachers = promote(student_logits, *teachers)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    per_teacher = torch.stack(
        [_kl_to_target(F.softmax(logits / temperature, dim=-1), log_student) for logits in teachers], dim=1)
    loss = (weights.to(per_teacher.dtype) * per_teacher).sum(dim=1).mean() * temperature**2
    return loss / len(teachers) if official else loss


def meal_v2_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor], official: bool = False) -> Tensor:
    r"""MEAL V2's similarity loss (Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+
    Top-1 Accuracy on ImageNet without Tricks", arXiv 2020).

    .. math::
        \bar p_b = \frac{1}{K}\sum_{k=1}^{K} \mathrm{softmax}(z^k_b), \qquad
        L = \frac{1}{B}\sum_{b=1}^{B} \mathrm{KL}\big(\bar p_b \,\|\, \mathrm{softmax}(z^s_b)\big)

    the student matches the average of the teachers' probabilities (no temperature, no one-hot
    label). The official code (szq0214/MEAL-V2, ``extensions/kd_loss.py``, a class named ``KLLoss``)
    computes the soft cross-entropy
    :math:`-\frac{1}{B}\sum_b \sum_c \bar p_{b,c} \log \mathrm{softmax}(z^s_b)_c` instead, which is larger
    by the entropy of :math:`\bar p` (a constant for the student) and has the same gradients;
    ``official=True`` returns that value.
    """
    teachers = _check_teachers(teacher_logits)
    _check_student(student_logits, teachers)
    target = ensemble_soft_targets(teachers)
    student_logits, target = promote(student_logits, target)
    log_student = F.log_softmax(student_logits, dim=-1)
    if official:
        return -(target * log_student).sum(dim=-1).mean()
    return _kl_to_target(target, log_student).mean()


def meal_v2_discriminator_loss(student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
    r"""MEAL V2's discriminator loss on the final outputs (Shen & Savvides, 2020).

    The discriminator :math:`D` (:class:`lit_kd.methods.meal_v2.MealV2Discriminator`) maps a logit
    vector to two scores; on the student's logits it should answer "student" :math:`(1, 0)` and on
    the teachers' averaged logits "teacher" :math:`(0, 1)`:

    .. math::
        L_D = \frac{1}{4B} \sum_{b=1}^{B} \sum_{j=1}^{2}
              \Big[\mathrm{BCE}\big(\sigma(D(z^s_b)_j), e_{1,j}\big)
                 + \mathrm{BCE}\big(\sigma(D(\bar z^t_b)_j), e_{2,j}\big)\Big]

    binary cross-entropy with logits, averaged over both halves and both scores, as in the official
    code. ``student_scores = D(student_logits)`` and ``teacher_scores = D(mean of teacher logits)``,
    each ``(B, 2)``. In the official training the student and the discriminator minimize this same
    loss jointly (no gradient reversal, no alternating updates): the authors describe the
    discriminator as a regularizer that keeps the student's outputs from becoming identical to the
    ensemble's (szq0214/MEAL-V2 issues #2 and #6). Gradients here flow into both score tensors.
    """
    if student_scores.dim() != 2 or student_scores.shape[1] != 2 or teacher_scores.shape != student_scores.shape:
        raise ValueError(
            f"Discriminator scores must both be (batch, 2); got student {tuple(student_scores.shape)} and teacher "
            f"{tuple(teacher_scores.shape)}."
        )
    student_scores, teacher_scores = promote(student_scores, teacher_scores)
    student_target = torch.zeros_like(student_scores)
    student_target[:, 0] = 1.0
    teacher_target = 1.0 - student_target
    scores = torch.cat([student_scores, teacher_scores])
    return F.binary_cross_entropy_with_logits(scores, torch.cat([student_target, teacher_target]))


def relevance_weights(scores: Tensor | Sequence[float], temperature: float | None = None) -> Tensor:
    r"""Source weights from task-relevance scores, for :func:`distill_weighted_loss`.

    With ``temperature=None`` the scores must be non-negative and are normalized to sum to one,
    :math:`\alpha_s = r_s / \sum_j r_j`; with a temperature :math:`\tau` they may be any real
    numbers and :math:`\alpha = \mathrm{softmax}(r / \tau)` (small :math:`\tau` approaches picking
    the single most relevant source, DistillNearest). ``scores`` is ``(S,)`` or per sample ``(B, S)``.
    """
    scores = torch.as_tensor(scores)
    if not scores.is_floating_point():
        scores = scores.to(torch.get_default_dtype())
    if scores.dim() not in (1, 2) or scores.shape[-1] == 0:
        raise ValueError(f"Relevance scores must be (sources,) or (batch, sources); got shape {tuple(scores.shape)}.")
    if not torch.isfinite(scores).all():
        raise ValueError("Relevance scores must be finite numbers.")
    if temperature is not None:
        check_temperature(temperature, "relevance temperature")
        return F.softmax(scores / temperature, dim=-1)
    if (scores < 0).any():
        raise ValueError("Relevance scores must be >= 0 to be normalized by their sum; pass a temperature to use a "
                         "softmax over scores of any sign.")
    total = scores.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("Relevance scores sum to zero: at least one source must be relevant.")
    return scores / total


def distill_weighted_loss(student_logits: Tensor, source_logits: Sequence[Tensor],
                          relevance: Tensor | Sequence[float] | RelevanceFn, temperature: float = 1.0,
                          relevance_temperature: float | None = None) -> Tensor:
    r"""DistillWeighted: multi-source distillation weighted by task relevance (Borup, Phoo &
    Hariharan, "Distilling from Similar Tasks for Transfer Learning on a Budget", ICCV 2023).

    .. math::
        L = \sum_{s=1}^{S} \alpha_s \; T^2 \, \frac{1}{B}\sum_{b=1}^{B}
            \mathrm{KL}\big(\mathrm{softmax}(z^{s}_b / T) \,\|\, \mathrm{softmax}(z^{\mathrm{st}}_b / T)\big)

    where :math:`z^s` are the soft pseudo-labels (logits on the target task, e.g. from a target
    head on source model :math:`s`'s features) and :math:`\alpha` are the source weights from
    :func:`relevance_weights` of the sources' relevance scores for the target task. ``relevance``
    is the scores themselves (``(S,)`` or ``(B, S)``) or a function of the sources' logits that
    returns them (any task-similarity measure can be plugged in). The weights are not trained.
    No official implementation was found; this follows the paper's description of weighting each
    source's distillation term by its relevance.
    """
    sources = _check_teachers(source_logits, "source")
    _check_student(student_logits, sources, "source")
    check_temperature(temperature)
    scores = relevance(sources) if callable(relevance) else relevance
    weights = relevance_weights(torch.as_tensor(scores).detach(), relevance_temperature)
    if weights.shape[-1] != len(sources):
        raise ValueError(f"Got {weights.shape[-1]} relevance scores for {len(sources)} sources: give one per source.")
    if weights.dim() == 2 and weights.shape[0] != student_logits.shape[0]:
        raise ValueError(f"Per-sample relevance scores must have one row per sample; got {tuple(weights.shape)}.")
    student_logits, *sources = promote(student_logits, *sources)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    per_source = torch.stack(
        [_kl_to_target(F.softmax(logits / temperature, dim=-1), log_student) for logits in sources], dim=-1)  # (B, S)
    weights = weights.to(per_source.dtype)
    if weights.dim() == 1:
        weights = weights.expand_as(per_source)
    return (weights * per_source).sum(dim=-1).mean() * temperature**2
