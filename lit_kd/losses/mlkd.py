"""Multi-Level Logit Distillation (MLKD): instance-, batch- and class-level alignment at several temperatures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote
from lit_kd.losses.standardization import standardize_logits
from lit_kd.losses.validation import check_logit_pair

# The official code's prediction augmentation: the base temperature (cfg KD.TEMPERATURE) and these four.
MLKD_EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def _probabilities(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                   loss_name: str) -> tuple[Tensor, Tensor]:
    check_logit_pair(student_logits, teacher_logits, loss_name)
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    return F.softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1)


def mlkd_instance_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                       sample_weight: Tensor | None = None) -> Tensor:
    r"""Instance-level alignment of MLKD (Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023).

    .. math::
        L_{ins} = \frac{1}{B} \sum_{b=1}^{B} w_b \, T^2 \,
                  \mathrm{KL}\big(\mathrm{softmax}(z^t_b / T) \,\|\, \mathrm{softmax}(z^s_b / T)\big)

    With ``sample_weight = None`` (:math:`w_b = 1`) this is :func:`~lit_kd.losses.kd_loss`. A 0/1
    ``sample_weight`` masks samples per sample (still divided by the full batch size ``B``), e.g. with
    the confidence mask of :func:`mlkd_confidence_masks`.
    """
    check_logit_pair(student_logits, teacher_logits, "MLKD instance-level")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    per_sample = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1) * temperature**2
    if sample_weight is None:
        return per_sample.mean()
    if sample_weight.shape != per_sample.shape:
        raise ValueError(f"sample_weight needs one weight per sample ({per_sample.shape[0]},), got "
                         f"{tuple(sample_weight.shape)}.")
    return (per_sample * sample_weight.to(per_sample.dtype)).mean()


def mlkd_batch_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""Batch-level alignment of MLKD: match the samples' prediction Gram matrix (input correlation).

    .. math::
        G = P P^\top \in \mathbb{R}^{B \times B}, \qquad
        L_{batch} = \frac{1}{B} \big\lVert G^t - G^s \big\rVert_F^2

    with :math:`P = \mathrm{softmax}(Z / T)` row-wise (no :math:`T^2` factor, as in the official code).
    """
    student_probs, teacher_probs = _probabilities(student_logits, teacher_logits, temperature, "MLKD batch-level")
    difference = teacher_probs @ teacher_probs.T - student_probs @ student_probs.T
    return difference.pow(2).sum() / student_probs.shape[0]


def mlkd_class_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    r"""Class-level alignment of MLKD: match the classes' correlation matrix over the batch.

    .. math::
        M = P^\top P \in \mathbb{R}^{C \times C}, \qquad
        L_{class} = \frac{1}{C} \big\lVert M^t - M^s \big\rVert_F^2

    with :math:`P = \mathrm{softmax}(Z / T)` row-wise (no :math:`T^2` factor, as in the official code).
    """
    student_probs, teacher_probs = _probabilities(student_logits, teacher_logits, temperature, "MLKD class-level")
    difference = teacher_probs.T @ teacher_probs - student_probs.T @ student_probs
    return difference.pow(2).sum() / student_probs.shape[1]


def mlkd_confidence_masks(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The official MLKD masks from the teacher's predictions at temperature 1 (no gradient).

    Returns ``(sample_mask, class_mask)``: samples whose top teacher probability is at most the
    batch median (the *less* confident half), and classes whose probability summed over the batch is
    at most the median over classes. Medians interpolate linearly between the two middle values of
    an even count (``numpy.percentile(., 50)``, ``torch.quantile(., 0.5)``); ties at the median are kept.
    """
    probabilities = F.softmax(promote(teacher_logits.detach())[0], dim=1)
    confidence = probabilities.max(dim=1).values
    class_confidence = probabilities.sum(dim=0)
    return (confidence <= torch.quantile(confidence, 0.5), class_confidence <= torch.quantile(class_confidence, 0.5))


def mlkd_terms(student_weak: Tensor, teacher_weak: Tensor, student_strong: Tensor, teacher_strong: Tensor,
               base_temperature: float = 4.0, kd_weight: float = 0.9, standardize: bool = False) -> dict[str, Tensor]:
    r"""The distillation terms of official MLKD training, ``{"instance", "class", "batch"}``.

    Jin, Wang, Lin, "Multi-Level Logit Distillation" (CVPR 2023). Each term is summed over the
    temperatures :math:`\mathcal{T} = (T_0, 3, 5, 2, 6)` (:math:`T_0` = ``base_temperature``: 4 on
    CIFAR-100, 1 on ImageNet) and multiplied by ``kd_weight``. Two augmented views of every image are
    used: *weak* (crop and flip) and *strong* (the same plus RandAugment(2, 10)); CE on both views is
    added by the method, not here. With :math:`f_s` / :math:`f_c` the fractions of samples / classes kept
    by :func:`mlkd_confidence_masks` of the weak teacher logits:

    .. math::
        L_{instance} = w \sum_{T \in \mathcal{T}} \Big( f_s \, L_{ins}(z^s_{weak}, z^t_{weak}; T)
                       + L_{ins}(z^s_{v(T)}, z^t_{v(T)}; T) \Big)

        L_{class} = w \, f_c \sum_{T} L_{class}(z^s_{weak}, z^t_{weak}; T), \qquad
        L_{batch} = w \, f_s \sum_{T} L_{batch}(z^s_{weak}, z^t_{weak}; T)

    where :math:`v(T)` is the strong view for the terms at :math:`T_0, 3, 5` and the weak view for the
    fixed terms at :math:`T = 2, 6` (also when :math:`T_0` is 2). This composite reproduces the official
    training code (``KD_ours``), quirks included, because that code produced the published numbers and
    the paper's full text could not be consulted for lit_kd: (1) the masks multiply the *batch-mean*
    losses, i.e. they act as the fractions :math:`f_s, f_c` (about 1/2), not per sample; (2) in the
    strong-view sum the :math:`T = 2, 6` terms use the weak logits; (3) the class- and batch-level terms
    use only the weak view. Variants (per-sample masking via ``sample_weight``, both views everywhere)
    can be assembled from :func:`mlkd_instance_loss`, :func:`mlkd_batch_loss`, :func:`mlkd_class_loss`.

    ``standardize=True`` applies :func:`~lit_kd.losses.standardize_logits` inside the instance-level
    terms only, as the logit-standardization fork (Sun et al., CVPR 2024) does (its recipe: base
    temperature 2, kd_weight 9).

    Args:
        student_weak, teacher_weak: ``(B, C)`` logits of the weakly augmented view.
        student_strong, teacher_strong: ``(B, C)`` logits of the strongly augmented view.
        base_temperature: :math:`T_0`.
        kd_weight: :math:`w`, multiplies every term (official 0.9 on CIFAR-100, 0.5 on ImageNet).
        standardize: z-score the logits in the instance-level terms.
    """
    check_logit_pair(student_weak, teacher_weak, "MLKD (weak view)")
    check_logit_pair(student_strong, teacher_strong, "MLKD (strong view)")
    check_logit_pair(student_weak, student_strong, "MLKD (weak vs strong view)")
    temperatures = (check_temperature(base_temperature, "base_temperature"), *MLKD_EXTRA_TEMPERATURES)
    sample_mask, class_mask = mlkd_confidence_masks(teacher_weak)
    dtype = promote(student_weak, teacher_weak, student_strong, teacher_strong)[0].dtype
    sample_fraction, class_fraction = sample_mask.to(dtype).mean(), class_mask.to(dtype).mean()

    def instance_inputs(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        return (standardize_logits(student), standardize_logits(teacher)) if standardize else (student, teacher)

    weak_instance = instance_inputs(student_weak, teacher_weak)
    strong_instance = instance_inputs(student_strong, teacher_strong)
    instance = class_level = batch_level = 0.0
    for position, temperature in enumerate(temperatures):
        # the official strong-view sum takes the weak logits for its last two (fixed T = 2, 6) terms
        second_view = weak_instance if position >= 3 else strong_instance
        instance = instance + sample_fraction * mlkd_instance_loss(*weak_instance, temperature) \
            + mlkd_instance_loss(*second_view, temperature)
        class_level = class_level + class_fraction * mlkd_class_loss(student_weak, teacher_weak, temperature)
        batch_level = batch_level + sample_fraction * mlkd_batch_loss(student_weak, teacher_weak, temperature)
    return {"instance": kd_weight * instance, "class": kd_weight * class_level, "batch": kd_weight * batch_level}


def mlkd_loss(student_weak: Tensor, teacher_weak: Tensor, student_strong: Tensor, teacher_strong: Tensor,
              base_temperature: float = 4.0, kd_weight: float = 0.9, standardize: bool = False) -> Tensor:
    """The sum of :func:`mlkd_terms` (official MLKD's distillation loss, without its CE on both views)."""
    terms = mlkd_terms(student_weak, teacher_weak, student_strong, teacher_strong, base_temperature, kd_weight,
                       standardize)
    return terms["instance"] + terms["class"] + terms["batch"]
