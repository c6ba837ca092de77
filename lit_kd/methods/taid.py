"""Temporally Adaptive Interpolated Distillation (TAID) for image classification."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import taid_loss, taid_update
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["TAID"]


class TAID(LogitDistillation):
    r"""Shing, Misaki, Bao, Yokoi, Akiba, "TAID: Temporally Adaptive Interpolated Distillation for
    Efficient Knowledge Transfer in Language Models" (ICLR 2025), on class logits.

    .. math::
        p_t = \mathrm{softmax}\big((1 - t)\,\mathrm{sg}(z_s) + t\, z_t\big), \qquad
        L = w_{ce} \, \mathrm{CE}(z_s, y) + w_{kd} \, \frac{1}{B} \sum_b \mathrm{KL}\big(p_{t,b} \,\|\, q_{s,b}\big)

    (:func:`~lit_kd.losses.taid_loss`): the target moves in logit space from the student's own
    (detached) prediction towards the teacher's as :math:`t` grows from ``t_start`` to ``t_end``.
    After every training batch :math:`t` is updated by :func:`~lit_kd.losses.taid_update` from this
    batch's distillation loss: it never decreases, never falls behind the linear schedule
    :math:`t_{lin} = t_{start} + (t_{end} - t_{start})\,\mathrm{step} / \mathrm{total}` (``step`` = the
    optimizer steps before this batch, ``total`` = ``trainer.estimated_stepping_batches``), and moves
    faster while the loss still falls quickly (momentum ``beta``, rate ``alpha``). :math:`t`, the
    momentum and the previous loss are buffers (``taid_t``, ``taid_momentum``, ``taid_previous_loss``),
    saved in checkpoints, so a resumed run continues the schedule exactly. :math:`t` is logged as
    ``train/taid_t`` (the value this batch used).

    Defaults are the official code's (``SakanaAI/TAID``, written for language models): ``t_start``
    0.4 (the released Llama-2/StableLM scripts use 0.2), ``t_end`` 1, ``alpha`` 5e-4, ``beta`` 0.99,
    adaptive, and no cross-entropy term (``distil_ratio`` 1). For image classification lit_kd uses
    class logits at temperature 1 (the official loss has no temperature; ``temperature`` ≠ 1 divides
    both logits by T and multiplies the term by T², a lit_kd extension).

    The paper's objective is the KL divergence; the official code computes the cross-entropy
    :math:`H(p_t, q_s) = \mathrm{KL} + H(p_t)` (same gradient, larger value). The value matters here
    because it drives the adaptive update of :math:`t`: ``official=True`` uses the official value.
    With gradient accumulation, :math:`t` is updated after every batch, as the official training step
    does. Under distributed training the update reads the loss averaged over the processes, so that
    every process keeps the same :math:`t` (the official code updates each process from its own loss).

    Args:
        t_start: initial :math:`t` in [0, 1).
        t_end: final :math:`t` in (0, 1].
        alpha: rate of the adaptive increase, in [0, 1].
        beta: momentum of the relative loss change.
        adaptive: ``False``: :math:`t` follows the linear schedule alone.
        temperature: softmax temperature (> 0; 1 is the paper's setting).
        kd_weight: weight of the TAID term.
        ce_weight: weight of the cross-entropy with the labels (0 by default: no labels needed).
        official: use the official cross-entropy value of the TAID term (loss and t update).
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments
            (``logit_standardization``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        adaptive: bool = True,
        temperature: float = 1.0,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        official: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        # checks t_start, t_end and alpha now rather than after the first batch
        taid_update(t_start, 0.0, 1.0, 1.0, 0, 1, t_start=t_start, t_end=t_end, alpha=alpha, beta=beta)
        self.t_start, self.t_end, self.alpha, self.beta = t_start, t_end, alpha, beta
        self.adaptive = adaptive
        self.kd_weight = kd_weight
        self.official = official
        self.register_buffer("taid_t", torch.tensor(float(t_start), dtype=torch.float64))
        self.register_buffer("taid_momentum", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("taid_previous_loss", torch.tensor(math.inf, dtype=torch.float64))
        self._pending_update: tuple[float, int] | None = None  # (loss, step) of the batch in flight

    @property
    def t(self) -> float:
        """The current interpolation coefficient :math:`t`."""
        return float(self.taid_t)

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        temperature = self.temperature
        loss = taid_loss(student_logits / temperature, teacher_logits / temperature, self.t,
                         official=self.official) * temperature**2
        if self.training:
            self._pending_update = (float(loss.detach()), self.global_step)
        return {"taid": (self.kd_weight, loss)}

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        t = self.t  # the value this batch uses, for the log
        logits, losses = super().training_losses(batch)
        losses["taid_t"] = torch.tensor(t, device=logits.device)
        return logits, losses

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update :math:`t` from the loss of the batch just trained on."""
        if self._pending_update is None:
            return
        loss, step = self._pending_update
        self._pending_update = None
        if self.trainer.world_size > 1:  # every process must keep the same t: update from the mean loss
            loss = float(self.trainer.strategy.reduce(torch.tensor(loss, device=self.device), reduce_op="mean"))
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"TAID's linear schedule needs the run's length, but the trainer estimates {total} "
                             "optimizer steps. Set trainer.max_epochs or trainer.max_steps.")
        t, momentum, previous = taid_update(self.t, float(self.taid_momentum), float(self.taid_previous_loss), loss,
                                            step, int(total), t_start=self.t_start, t_end=self.t_end,
                                            alpha=self.alpha, beta=self.beta, adaptive=self.adaptive)
        self.taid_t.fill_(t)
        self.taid_momentum.fill_(momentum)
        self.taid_previous_loss.fill_(previous)
