"""CTKD: the method, its gradient-reversal layer and its temperature modules.

Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation" (AAAI 2023).
The temperature module predicts the distillation temperature; its gradient is reversed (times
:math:`-\\lambda`, see :func:`~lit_kd.losses.ctkd_lambda`) so that it learns to make the KD loss
*harder* while the student minimises it, an easy-to-hard curriculum.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import ctkd_lambda, learned_temperature_kd_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["CTKD", "GlobalTemperature", "InstanceTemperature", "reverse_gradient"]


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


class CTKD(LogitDistillation):
    r"""Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation"
    (AAAI 2023): KD whose temperature is learned adversarially.

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + w_{kd} \, \frac{1}{B} \sum_b \tau_b^2 \,
            \mathrm{KL}\big(\mathrm{softmax}(z_t / \tau_b) \,\|\, \mathrm{softmax}(z_s / \tau_b)\big),
        \qquad \tau = \tau_{min} + \tau_{range} \, \sigma\big(\mathrm{GRL}_\lambda(\theta)\big)

    A temperature module (:class:`GlobalTemperature`: one learnable scalar; :class:`InstanceTemperature`:
    an MLP on both networks' logits, one temperature per sample) predicts :math:`\tau`; one backward
    pass trains it together with the student, but through a gradient-reversal layer that multiplies its
    gradient by :math:`-\lambda`: the temperature ascends the KD loss while the student descends it.
    :math:`\lambda` follows the cosine curriculum :func:`~lit_kd.losses.ctkd_lambda` from
    ``lambda_min`` to ``lambda_max`` over the first ``curriculum_epochs`` epochs, evaluated at
    ``current_epoch + 1`` because the official loop counts epochs from 1. The module is a trainable
    part (:meth:`trainable_modules`): in the optimizer (with the student's learning rate and weight
    decay, as in the official code), in checkpoints, not exported. ``train/temperature`` (mean over the
    batch) and ``train/ctkd_lambda`` are logged.

    Defaults are the official CIFAR-100 script (``zhengli97/CTKD``, ``scripts/run_cifar_distill.sh``):
    global temperature, ``--t_start 1 --t_end 20`` (:math:`\tau \in (1, 21)`, :math:`\theta` starts at 1),
    ``--cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`` (λ from 0 to 1 over 10 epochs;
    the official ``value`` is :math:`-\lambda`), CE 0.1, KD 0.9 (``-r 0.1 -a 0.9``). Its ImageNet
    script uses 5 curriculum epochs and CE 1, KD 1. The official instance-wise module is not in the
    repository; :class:`InstanceTemperature` is lit_kd's reading (see there). With logit
    standardization the module reads the standardized logits.

    Args:
        temperature_module: ``"global"`` or ``"instance"``.
        min_temperature: :math:`\tau_{min}` (> 0, official ``--t_start``).
        temperature_range: :math:`\tau_{range}` (official ``--t_end``).
        initial_value: initial :math:`\theta` of the global temperature.
        hidden_dim: hidden width of the instance-wise MLP.
        curriculum_epochs: epochs over which λ rises (official ``--decay_loops``).
        lambda_min: λ at the start (official ``-decay_max``).
        lambda_max: λ after the curriculum (official ``-decay_min``).
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the KD term.
        teacher_eps: added to the teacher probabilities in the KD term (the official instance-wise
            snippet uses 1e-7; 0 is the exact KL).
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments (``num_classes`` is
            needed for ``"instance"`` when the student's class count cannot be read from it).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature_module: Literal["global", "instance"] = "global",
        min_temperature: float = 1.0,
        temperature_range: float = 20.0,
        initial_value: float = 1.0,
        hidden_dim: int = 256,
        curriculum_epochs: float = 10,
        lambda_min: float = 0.0,
        lambda_max: float = 1.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        teacher_eps: float = 0.0,
        **kwargs: Any,
    ) -> None:
        # The base's fixed temperature is not used; min_temperature is checked in its place.
        check_temperature(min_temperature, "min_temperature")
        super().__init__(student, teacher, temperature=min_temperature, ce_weight=ce_weight, **kwargs)
        ctkd_lambda(0, curriculum_epochs, lambda_min, lambda_max)  # checks curriculum_epochs > 0 now
        if temperature_module == "global":
            self.temperature_module: nn.Module = GlobalTemperature(min_temperature, temperature_range, initial_value)
        elif temperature_module == "instance":
            self.temperature_module = InstanceTemperature(self._student_classes(), hidden_dim, min_temperature,
                                                          temperature_range)
        else:
            raise ValueError(f"temperature_module must be 'global' or 'instance', got {temperature_module!r}")
        self.curriculum_epochs = curriculum_epochs
        self.lambda_min, self.lambda_max = lambda_min, lambda_max
        self.kd_weight = kd_weight
        self.teacher_eps = teacher_eps
        self.last_temperature: Tensor | None = None

    def _student_classes(self) -> int:
        classes = self.num_classes or (self.student_spec.num_classes if self.student_spec is not None else None)
        classes = classes or getattr(self.student, "num_classes", None)
        if not classes:
            raise ValueError("CTKD(temperature_module='instance') sizes its MLP by the number of classes: set "
                             "num_classes, or give the student's num_classes in its spec.")
        return int(classes)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {**super().trainable_modules(), "temperature_module": self.temperature_module}

    def current_lambda(self) -> float:
        """λ of the current epoch (official epoch count: ``current_epoch + 1``)."""
        return ctkd_lambda(self.current_epoch + 1, self.curriculum_epochs, self.lambda_min, self.lambda_max)

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        temperature = self.temperature_module(student_logits, teacher_logits, self.current_lambda())
        self.last_temperature = temperature.detach()
        loss = learned_temperature_kd_loss(student_logits, teacher_logits, temperature, self.teacher_eps)
        return {"kd": (self.kd_weight, loss)}

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, losses = super().training_losses(batch)
        losses["temperature"] = self.last_temperature.float().mean()
        losses["ctkd_lambda"] = torch.tensor(self.current_lambda(), device=logits.device)
        return logits, losses
