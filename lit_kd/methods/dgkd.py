"""Densely guided KD: one student, distilled from the teacher and every teacher assistant at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.losses import dense_guidance_loss, drop_guides
from lit_kd.methods.base import Batch, DistillationModule, _split_batch
from lit_kd.models import ModelSpec


class DGKD(DistillationModule):
    """Son, Na, Choi & Hwang, "Densely Guided Knowledge Distillation using Multiple Teacher
    Assistants" (ICCV 2021).

    ``loss = ce_weight * CE(z_s, y) + kd_weight * Σ_{k ∈ kept} T² · KL(softmax(z_k/T) || softmax(z_s/T))``

    over the guides k = teacher, assistant 1, ..., assistant n. Stochastic DGKD removes
    ``drop_num`` guides at random every training step (the paper's default is 1); dropped guides
    are not run at all. Every guide is a frozen network of the base class.

    The official code uses ``(1-λ)·CE + λ·KD`` with λ = 1 by default; the defaults here are those
    of :class:`~lit_kd.methods.KD` so that the two compare at equal weights.

    Args:
        assistants: the teacher assistants, largest first (specs, e.g. checkpoints of earlier chain
            steps, or modules). The assistant chain fills them in for steps with ``guides: all``.
        temperature: softmax temperature T.
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the summed distillation terms.
        drop_num: guides dropped per training step (0: plain DGKD).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        assistants: Sequence[ModelSpec | nn.Module] = (),
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        drop_num: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.assistant_names: list[str] = []
        for index, assistant in enumerate(assistants):
            self.add_frozen_network(f"assistant_{index}", assistant)
            self.assistant_names.append(f"assistant_{index}")
        drop_guides(1 + len(self.assistant_names), drop_num)  # validates drop_num against the guide count
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.drop_num = drop_num
        self.last_kept: list[str] = []

    def guide_names(self) -> list[str]:
        """The frozen networks the student learns from: teacher first, then the assistants."""
        return ["teacher", *self.assistant_names]

    def training_losses(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        image, teacher_image, target = _split_batch(batch)
        names = self.guide_names()
        self.last_kept = [names[i] for i in drop_guides(len(names), self.drop_num)]
        guide_logits = [self.frozen_logits(name, teacher_image) for name in self.last_kept]
        logits = self(image)
        ce = self.cross_entropy(logits, target)
        kd = dense_guidance_loss(logits, guide_logits, self.temperature)
        loss = self.ce_weight * ce + self.kd_weight * kd
        return logits, {"loss": loss, "ce": ce.detach(), "kd": kd.detach()}
