"""Plain supervised training: a teacher, or the from-scratch baseline of a distillation table."""

from __future__ import annotations

from torch import Tensor

from lit_kd.contract import KDBatch
from lit_kd.methods.base import StudentModule


class Supervised(StudentModule):
    """Cross-entropy training of one network, with the same data, optimizer and metrics as the
    distillation methods, so that "student from scratch" rows are measured like the others.

    The trained network is stored under ``student.*`` in the checkpoint; a later run uses it as a
    teacher with ``ModelSpec(name=..., checkpoint="run.ckpt")``.
    """

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self(batch.image)
        loss = self.cross_entropy(logits, batch.target)
        return logits, {"loss": loss, "ce": loss.detach()}
