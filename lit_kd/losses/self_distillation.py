"""Self-distillation losses: the student learns from itself or from a designed target (Tf-KD, PS-KD)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["tf_kd_self_loss", "tf_kd_virtual_teacher", "tf_kd_regularization_loss", "pskd_alpha", "pskd_targets",
           "pskd_loss"]


def _check_logits_and_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"Logits must be (batch, classes); got shape {tuple(logits.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0] or labels.is_floating_point():
        raise ValueError(f"Labels must be a (batch,) tensor of class indices; got {tuple(labels.shape)} "
                         f"({labels.dtype}) for logits {tuple(logits.shape)}.")


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")


def _kl_sum_over_classes(target: Tensor, log_student: Tensor) -> Tensor:
    """Per-element KL terms :math:`p (\\log p - \\log q)` with :math:`0 \\log 0 = 0`, shape ``(B, C)``."""
    return torch.xlogy(target, target) - target * log_student


def tf_kd_self_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = 0.95,
                    temperature: float = 6.0, multiplier: float = 1.0, official: bool = False) -> Tensor:
    r"""Tf-KD\ :sub:`self` (Yuan, Tay, Li, Wang & Feng, "Revisiting Knowledge Distillation via Label
    Smoothing Regularization", CVPR 2020): KD from a pretrained copy of the student itself.

    .. math::
        L = (1-\alpha)\,\mathrm{CE}(z^s, y)
            + \alpha \cdot m \cdot T^2 \cdot \frac{1}{B}\sum_{b=1}^{B}
              \mathrm{KL}\big(\mathrm{softmax}(z^t_b / T) \,\|\, \mathrm{softmax}(z^s_b / T)\big)

    :math:`z^t` are the logits of the self-trained teacher (same architecture, trained before),
    :math:`m` the official code's ``multiplier`` (1 in most of its configurations, up to 50).
    Defaults :math:`\alpha = 0.95`, :math:`T = 6` are the official ResNet-18 self-teacher config.

    The official ``loss_kd_self`` uses ``nn.KLDivLoss()`` whose default reduction averages over
    batch *and classes*, so its KL term is :math:`1/C` of the one above; ``official=True``
    reproduces that.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"Student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape.")
    _check_logits_and_labels(student_logits, labels)
    check_temperature(temperature)
    _check_fraction(alpha, "alpha")
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    cross_entropy = F.cross_entropy(student_logits, labels)
    target = F.softmax(teacher_logits / temperature, dim=-1)
    terms = _kl_sum_over_classes(target, F.log_softmax(student_logits / temperature, dim=-1))
    kl = terms.mean() if official else terms.sum(dim=-1).mean()
    return (1.0 - alpha) * cross_entropy + alpha * kl * temperature**2 * multiplier


def tf_kd_virtual_teacher(labels: Tensor, num_classes: int, correct_prob: float = 0.99,
                          dtype: torch.dtype | None = None) -> Tensor:
    r"""The hand-designed teacher distribution of Tf-KD\ :sub:`reg` (Yuan et al., CVPR 2020).

    .. math::
        p^d(k) = \begin{cases} a & k = y \\ (1-a)/(C-1) & k \ne y \end{cases}

    with :math:`a` = ``correct_prob`` (0.99 in the official code). Returns ``(B, C)``.
    """
    if num_classes < 2:
        raise ValueError(f"The virtual teacher needs at least two classes, got {num_classes}.")
    _check_fraction(correct_prob, "correct_prob")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("Labels must be a (batch,) tensor of class indices; "
                         f"got {tuple(labels.shape)} ({labels.dtype}).")
    distribution = torch.full((labels.shape[0], num_classes), (1.0 - correct_prob) / (num_classes - 1),
                              dtype=dtype or torch.get_default_dtype(), device=labels.device)
    return distribution.scatter(1, labels.unsqueeze(1), correct_prob)


def tf_kd_regularization_loss(student_logits: Tensor, labels: Tensor, alpha: float = 0.1, temperature: float = 20.0,
                              correct_prob: float = 0.99, multiplier: float = 100.0, official: bool = False) -> Tensor:
    r"""Tf-KD\ :sub:`reg` (Yuan et al., CVPR 2020): KD from a hand-designed virtual teacher.

    .. math::
        L = (1-\alpha)\,\mathrm{CE}(z^s, y)
            + \alpha \cdot m \cdot \frac{1}{B}\sum_{b=1}^{B}
              \mathrm{KL}\big(p^d_{\tau,b} \,\|\, \mathrm{softmax}(z^s_b / \tau)\big),
        \qquad p^d_\tau = \mathrm{softmax}(p^d / \tau)

    with :math:`p^d` from :func:`tf_kd_virtual_teacher`, softened at temperature :math:`\tau` the
    way the official code softens it (a softmax of the probabilities divided by :math:`\tau`; at
    :math:`\tau = 20` this is close to uniform with a small bump on the label), and :math:`m` the
    official ``multiplier``. Defaults are the official configs (``reg_alpha`` 0.1,
    ``reg_temperature`` 20, ``multiplier`` 100, :math:`a` = 0.99).

    The official ``loss_kd_regularization`` does not soften the student (it compares with
    ``log_softmax(z^s)``, temperature 1) and uses ``nn.KLDivLoss()``, whose default reduction
    averages over batch *and classes*; ``official=True`` reproduces both. The paper's
    :math:`D_{KL}(p^d_\tau, p_\tau)` softens the student as well, which is the default here.
    """
    _check_logits_and_labels(student_logits, labels)
    check_temperature(temperature)
    _check_fraction(alpha, "alpha")
    (student_logits,) = promote(student_logits)
    cross_entropy = F.cross_entropy(student_logits, labels)
    teacher = tf_kd_virtual_teacher(labels, student_logits.shape[1], correct_prob, dtype=student_logits.dtype)
    target = F.softmax(teacher / temperature, dim=-1)
    if official:
        terms = _kl_sum_over_classes(target, F.log_softmax(student_logits, dim=-1))
        kl = terms.mean()
    else:
        kl = _kl_sum_over_classes(target, F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1).mean()
    return (1.0 - alpha) * cross_entropy + alpha * kl * multiplier


def pskd_alpha(epoch: int, total_epochs: int, alpha_final: float = 0.8) -> float:
    r"""PS-KD's weight of the past predictions at an epoch (Kim, Ji, Yoon & Hwang, "Self-Knowledge
    Distillation with Progressive Refinement of Targets", ICCV 2021).

    .. math::
        \alpha_t = \alpha_T \cdot \frac{t}{T}

    with :math:`t = 1, \dots, T` the epoch counted from one. ``epoch`` is counted from zero (as
    Lightning's ``current_epoch``), so this returns ``alpha_final * (epoch + 1) / total_epochs``,
    exactly as the official ``main.py``: :math:`\alpha_T / T` in the first epoch (whose target is
    still the one-hot label, there being no past prediction yet) and :math:`\alpha_T` in the last.
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be at least 1, got {total_epochs}.")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be in [0, total_epochs) = [0, {total_epochs}) (counted from zero), got {epoch}.")
    _check_fraction(alpha_final, "alpha_final")
    return alpha_final * (epoch + 1) / total_epochs


def pskd_targets(labels: Tensor, previous_probabilities: Tensor | None, alpha: float, num_classes: int) -> Tensor:
    r"""PS-KD's progressively refined targets (Kim et al., ICCV 2021).

    .. math::
        \tilde y_t = (1 - \alpha_t)\, y + \alpha_t \, p_{t-1}

    :math:`y` the one-hot label, :math:`p_{t-1}` the model's softmax prediction for the same sample
    in the previous epoch (``previous_probabilities``, ``(B, C)``, temperature 1, no gradient).
    ``None`` (the first epoch) gives the one-hot label, as the official code does by storing the
    one-hot labels as the "previous predictions" of epoch 0.
    """
    _check_fraction(alpha, "alpha")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("Labels must be a (batch,) tensor of class indices; "
                         f"got {tuple(labels.shape)} ({labels.dtype}).")
    dtype = previous_probabilities.dtype if previous_probabilities is not None else torch.get_default_dtype()
    one_hot = F.one_hot(labels, num_classes).to(dtype)
    if previous_probabilities is None:
        return one_hot
    if previous_probabilities.shape != one_hot.shape:
        raise ValueError(f"Previous predictions must be (batch, classes) = {tuple(one_hot.shape)}; got "
                         f"{tuple(previous_probabilities.shape)}.")
    return (1.0 - alpha) * one_hot + alpha * previous_probabilities.detach()


def pskd_loss(student_logits: Tensor, targets: Tensor) -> Tensor:
    r"""PS-KD's loss: the cross-entropy with the soft targets of :func:`pskd_targets`.

    .. math::
        L = -\frac{1}{B}\sum_{b=1}^{B}\sum_{c=1}^{C} \tilde y_{b,c} \log \mathrm{softmax}(z_b)_c
    """
    if student_logits.dim() != 2 or targets.shape != student_logits.shape:
        raise ValueError(f"Soft targets {tuple(targets.shape)} must match the logits {tuple(student_logits.shape)} "
                         "(batch, classes).")
    student_logits, targets = promote(student_logits, targets)
    return -(targets * F.log_softmax(student_logits, dim=-1)).sum(dim=-1).mean()
