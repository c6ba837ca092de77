"""Densely guided KD: one student, distilled from the teacher and every teacher assistant at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import dense_guidance_loss, drop_guides
from lit_kd.methods.base import network_record, weighted_sum
from lit_kd.methods.kd import KD
from lit_kd.models import ModelSpec


class DGKD(KD):
    """Son, Na, Choi & Hwang, "Densely Guided Knowledge Distillation using Multiple Teacher
    Assistants" (ICCV 2021).

    ``loss = ce_weight * CE(z_s, y) + kd_weight * Σ_{k ∈ kept} T² · KL(softmax(z_k/T) || softmax(z_s/T))``

    over the guides k = teacher, assistant 1, ..., assistant n: :class:`~lit_kd.methods.KD` with more
    than one guide (without assistants it is KD). Stochastic DGKD removes
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
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, kd_weight=kd_weight,
                         **kwargs)
        self.assistant_names: list[str] = []
        for index, assistant in enumerate(assistants):
            self.add_frozen_network(f"assistant_{index}", assistant, record=False)
            self.assistant_names.append(f"assistant_{index}")
        self.hparams["assistants"] = [network_record(a) for a in assistants]  # reloads as the same argument
        drop_guides(1 + len(self.assistant_names), drop_num)  # validates drop_num against the guide count
        self.drop_num = drop_num
        self.last_kept: list[str] = []

    def guide_names(self) -> list[str]:
        """The frozen networks the student learns from: teacher first, then the assistants."""
        return ["teacher", *self.assistant_names]

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        names = self.guide_names()
        self.last_kept = [names[i] for i in drop_guides(len(names), self.drop_num)]
        guide_logits = [self.distillation_logits(self.frozen_logits(name, batch.teacher_image))
                        for name in self.last_kept]
        logits = self(batch.image)
        dense = dense_guidance_loss(self.distillation_logits(logits), guide_logits, self.temperature)
        return logits, weighted_sum(**self.ce_term(logits, batch), kd=(self.kd_weight, dense))
