"""Learning-rate schedules usable from YAML."""

from __future__ import annotations

import math
import warnings

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosine"]


class WarmupCosine(LRScheduler):
    r"""Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    .. math::
        s(t) = \begin{cases} t / w & t < w \\
               \tfrac12\big(1 + \cos(\pi \min(1, \tfrac{t - w}{T - w}))\big) & t \ge w \end{cases}

    ``t`` counts scheduler steps (optimizer steps with ``scheduler_interval: step``). Like big_vision,
    the first update (``t = 0``) has learning rate 0 when ``warmup_steps > 0``.

    Args:
        optimizer: the optimizer.
        warmup_steps: ``w``.
        total_steps: ``T``; ``None`` lets lit_kd methods fill in the run's length
            (``trainer.estimated_stepping_batches``, or ``max_epochs`` when stepped per epoch).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, total_steps: int | None = None,
                 last_epoch: int = -1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps is not None and total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        super().__init__(optimizer, last_epoch)

    def resolve_total_steps(self, total_steps: int | float) -> None:
        """Set ``total_steps`` if it was left ``None`` (called by lit_kd's ``configure_optimizers``)."""
        if self.total_steps is not None:
            return
        if not math.isfinite(total_steps):
            raise ValueError("WarmupCosine needs total_steps: the run has no finite length (set trainer.max_epochs "
                             "or max_steps, or the scheduler's total_steps)")
        total = int(total_steps)
        if total <= self.warmup_steps:
            warnings.warn(f"the run has {total} steps, not more than warmup_steps={self.warmup_steps}: it ends "
                          "during the warm-up", UserWarning, stacklevel=2)
        self.total_steps = total

    def factor(self, step: int) -> float:
        """The schedule ``s(step)``."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.total_steps is None:  # not resolved yet: only the warm-up's end is known
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        scale = self.factor(self.last_epoch)
        return [base_lr * scale for base_lr in self.base_lrs]
