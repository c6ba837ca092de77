"""Plain supervised training: a teacher, or the from-scratch baseline of a distillation table."""

from __future__ import annotations

from torch import Tensor

from lit_kd.methods.base import Batch, StudentModule, _split_batch


class Supervised(StudentModule):
    """Cross-entropy training of one network, with the same data, optimizer and metrics as the
    distillation methods, so that "student from scratch" rows are measured like the others.

    The trained network is stored under ``student.*`` in the checkpoint; a later run uses it as a
    teacher with ``ModelSpec(name=..., checkpoint="run.ckpt")``.
    """

    def training_losses(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        image, _, target = _split_batch(batch)
        logits = self(image)
        loss = self.cross_entropy(logits, target)
        return logits, {"loss": loss, "ce": loss.detach()}
