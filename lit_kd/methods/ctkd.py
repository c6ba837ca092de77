"""CTKD's trainable parts: the gradient-reversal layer and the temperature modules.

Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation" (AAAI 2023).
The temperature module predicts the distillation temperature; its gradient is reversed (times
:math:`-\\lambda`, see :func:`~lit_kd.losses.ctkd_lambda`) so that it learns to make the KD loss
*harder* while the student minimises it, an easy-to-hard curriculum.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-lambda``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def reverse_gradient(x: Tensor, lambda_: float) -> Tensor:
    r"""Gradient-reversal layer (Ganin & Lempitsky, ICML 2015): :math:`y = x`,
    :math:`\partial L / \partial x = -\lambda \, \partial L / \partial y`.

    The official CTKD layer multiplies by ``+value`` and passes a negative value; ``lambda_`` here is
    the paper's non-negative :math:`\lambda` (official value :math:`= -\lambda`).
    """
    return _ReverseGradient.apply(x, float(lambda_))


class GlobalTemperature(nn.Module):
    r"""CTKD's global temperature: one learnable scalar :math:`\theta` for the whole dataset.

    .. math::
        \tau = \tau_{min} + \tau_{range} \cdot \sigma\big(\mathrm{GRL}_\lambda(\theta)\big)

    with the official ``t_start = 1`` and ``t_end = 20`` (so :math:`\tau \in (1, 21)`) and
    :math:`\theta` initialised to 1 (:math:`\tau \approx 15.6` at the start).

    Args:
        min_temperature: :math:`\tau_{min}` (official ``--t_start``).
        temperature_range: :math:`\tau_{range}` (official ``--t_end``).
        initial_value: initial :math:`\theta`.
    """

    def __init__(self, min_temperature: float = 1.0, temperature_range: float = 20.0,
                 initial_value: float = 1.0) -> None:
        super().__init__()
        if not min_temperature > 0 or not temperature_range >= 0:
            raise ValueError(f"min_temperature must be > 0 and temperature_range >= 0, got {min_temperature} and "
                             f"{temperature_range}.")
        self.min_temperature = min_temperature
        self.temperature_range = temperature_range
        self.theta = nn.Parameter(torch.tensor(float(initial_value)))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, lambda_: float) -> Tensor:
        """The scalar temperature (the logits are not used: same interface as :class:`InstanceTemperature`)."""
        return self.min_temperature + self.temperature_range * torch.sigmoid(reverse_gradient(self.theta, lambda_))


class InstanceTemperature(nn.Module):
    r"""CTKD's instance-wise temperature: a two-layer MLP predicts one temperature per sample.

    .. math::
        \tau_b = \tau_{min} + \tau_{range} \cdot
                 \sigma\big(\mathrm{GRL}_\lambda(\mathrm{MLP}([z^t_b, z^s_b]))\big)

    Our reading of the paper's instance-wise variant: its official implementation is not in the
    repository (the README links a download), so the input (concatenated teacher and student
    logits), the hidden width and the ReLU are choices of lit_kd. The logits enter detached, so the
    reversed gradient reaches only the MLP's weights, never the student through this path.

    Args:
        num_classes: number of classes ``C`` (the MLP reads ``2 C`` numbers per sample).
        hidden_dim: width of the hidden layer.
        min_temperature: :math:`\tau_{min}`.
        temperature_range: :math:`\tau_{range}`.
    """

    def __init__(self, num_classes: int, hidden_dim: int = 256, min_temperature: float = 1.0,
                 temperature_range: float = 20.0) -> None:
        super().__init__()
        if num_classes < 1 or hidden_dim < 1:
            raise ValueError(f"num_classes and hidden_dim must be >= 1, got {num_classes} and {hidden_dim}.")
        if not min_temperature > 0 or not temperature_range >= 0:
            raise ValueError(f"min_temperature must be > 0 and temperature_range >= 0, got {min_temperature} and "
                             f"{temperature_range}.")
        self.min_temperature = min_temperature
        self.temperature_range = temperature_range
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, lambda_: float) -> Tensor:
        """Temperatures of shape ``(B,)``."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                             f"{tuple(teacher_logits.shape)} differ in shape.")
        features = torch.cat([teacher_logits.detach(), student_logits.detach()], dim=1).to(self.mlp[0].weight.dtype)
        raw = self.mlp(features).squeeze(1)
        return self.min_temperature + self.temperature_range * torch.sigmoid(reverse_gradient(raw, lambda_))
