"""Curriculum Temperature for KD (CTKD): the λ curriculum and KD with a learned temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_logit_pair


def ctkd_lambda(epoch: float, num_loops: float = 10, lambda_min: float = 0.0, lambda_max: float = 1.0) -> float:
    r"""The cosine curriculum of CTKD's adversarial weight :math:`\lambda` (Li et al., AAAI 2023).

    .. math::
        \lambda_n = \lambda_{min} + \frac{\lambda_{max} - \lambda_{min}}{2}
                    \Big(1 - \cos\big(\pi \, \min(\max(n, 0), E) / E\big)\Big)

    rising from :math:`\lambda_{min}` at epoch 0 to :math:`\lambda_{max}` at epoch :math:`E` =
    ``num_loops`` and constant afterwards (official: :math:`\lambda` from 0 to 1 over 10 epochs). The
    gradient-reversal layer multiplies the temperature module's gradient by :math:`-\lambda`, so the
    temperature is pushed to *increase* the distillation loss, more and more strongly.

    The official code expresses the same thing as a decaying, negative "value" passed to a layer that
    multiplies by +value (``CosineDecay(max_value=0, min_value=-1, num_loops=10)``); that value is
    ``-ctkd_lambda(epoch)``. The official loop evaluates the schedule with epochs counted from 1: with
    Lightning pass ``trainer.current_epoch + 1`` to reproduce it.
    """
    if not num_loops > 0:
        raise ValueError(f"num_loops (epochs of the curriculum) must be > 0, got {num_loops}.")
    progress = min(max(float(epoch), 0.0), float(num_loops)) / num_loops
    return lambda_min + (lambda_max - lambda_min) * (1.0 - math.cos(math.pi * progress)) / 2.0


def learned_temperature_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor,
                                teacher_eps: float = 0.0) -> Tensor:
    r"""KD with a temperature that is a tensor in the autograd graph (CTKD, Li et al., AAAI 2023).

    .. math::
        L = \frac{1}{B} \sum_{b=1}^{B} \tau_b^2 \;
            \mathrm{KL}\big(\mathrm{softmax}(z^t_b / \tau_b) \,\|\, \mathrm{softmax}(z^s_b / \tau_b)\big)

    ``temperature`` is a scalar tensor (global temperature, :math:`\tau_b = \tau`: the same value as
    :func:`~lit_kd.losses.kd_loss`) or one temperature per sample, shape ``(B,)`` (instance-wise
    temperature). Gradients flow into the temperature, which is how CTKD's temperature module learns
    (through a gradient-reversal layer, see :mod:`lit_kd.methods.ctkd`).

    ``teacher_eps`` is added to the teacher probabilities (weights and logarithm alike); the official
    instance-wise snippet in the CTKD README uses ``1e-7``. The default 0 is the exact KL.
    """
    check_logit_pair(student_logits, teacher_logits, "CTKD's KD")
    if not isinstance(temperature, Tensor):
        raise ValueError("learned_temperature_kd_loss needs the temperature as a tensor (from the temperature module); "
                         "use lit_kd.losses.kd_loss for a fixed number.")
    if temperature.dim() > 1 or (temperature.dim() == 1 and temperature.numel() not in (1, student_logits.shape[0])):
        raise ValueError(f"temperature must be a scalar or have one value per sample ({student_logits.shape[0]},), got "
                         f"shape {tuple(temperature.shape)}.")
    if not bool((temperature > 0).all()) or not bool(torch.isfinite(temperature).all()):
        raise ValueError("temperature must be finite and > 0 everywhere; map the module output through a positive "
                         "range (e.g. t_start + t_range * sigmoid(.)).")
    student_logits, teacher_logits, temperature = promote(student_logits, teacher_logits, temperature)
    per_sample = temperature.reshape(-1, 1)  # (1, 1) or (B, 1): broadcasts over classes
    log_student = F.log_softmax(student_logits / per_sample, dim=1)
    teacher_probs = F.softmax(teacher_logits / per_sample, dim=1) + teacher_eps
    kl = (teacher_probs * (teacher_probs.log() - log_student)).sum(dim=1)
    return (per_sample.reshape(-1) ** 2 * kl).mean()
