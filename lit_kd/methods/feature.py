"""The base of feature- and relation-based methods: student and teacher features of chosen layers,
read by :class:`~lit_kd.taps.FeatureTap` in the same forward pass as the logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import kd_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import DistillationModule, check_weights, weighted_sum
from lit_kd.models import ModelSpec
from lit_kd.taps import FeatureTap, feature_channels

__all__ = ["FeatureDistillation", "Layer"]

Layer = int | str


class FeatureDistillation(DistillationModule):
    """Feature distillation: ``ce_weight · CE + kd_weight · T²·KL + Σ_k w_k · L_k(f_s, f_t)``.

    The teacher runs once per batch, under ``no_grad``, returning its logits and the features of
    ``teacher_layers``; the student runs once, returning its logits and the features of
    ``student_layers`` (stage indices into ``feature_info``, module names, or ``"pre_logits"`` for
    the embedding the classifier reads). A method implements :meth:`feature_terms`; its trainable
    parts (connectors, projectors, embeddings) are returned by ``trainable_modules()``, so they are
    optimized and checkpointed but not exported. The shapes of every tapped feature (without the
    batch) are known from construction on: :attr:`student_shapes`, :attr:`teacher_shapes`.

    Most papers of the family add their feature loss to the plain cross-entropy (RepDistiller's
    ``-r 1 -a 0``); ``kd_weight`` adds Hinton's term as well.

    Args:
        student_layers: the student features the method reads.
        teacher_layers: the teacher features the method reads.
        preact: tap stage features before their final ReLU (models whose ``forward_intermediates``
            offers it: the CIFAR zoo).
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of ``T²·KL(teacher ‖ student)`` on the logits (0: off).
        temperature: the temperature of that term.
        probe_size: image side of the dummy forward that sizes the features (the networks' own
            ``input_size`` when they have one).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer],
        teacher_layers: Sequence[Layer],
        preact: bool = False,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        self.student_tap = FeatureTap(self.student, list(student_layers), preact=preact)
        self.teacher_tap = FeatureTap(self.teacher, list(teacher_layers), preact=preact)
        self.student_shapes = feature_channels(self.student_tap, self.student_input.size or probe_size)
        self.teacher_shapes = feature_channels(self.teacher_tap, self.teacher_input.size or probe_size)
        check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperature = check_temperature(temperature)

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        """The method's terms as ``{name: (weight, value)}`` (features in the order of the layer lists)."""
        raise NotImplementedError(f"{type(self).__name__} must implement feature_terms()")

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        with self.no_teacher_grad():
            teacher_logits, teacher_features = self.teacher_tap(self.teacher_input(batch.teacher_image))
        logits, student_features = self.student_tap(self.student_input(batch.image))
        terms: dict[str, tuple[float, Tensor]] = {}
        if self.ce_weight:
            if batch.target is None:
                raise DataContractError(f"{type(self).__name__} weighs the cross-entropy by ce_weight={self.ce_weight}, "
                                        "but the batch has no labels. Give labelled data or set ce_weight: 0.")
            terms["ce"] = (self.ce_weight, self.cross_entropy(logits, batch.target))
        if self.kd_weight:
            terms["kd"] = (self.kd_weight, kd_loss(logits, teacher_logits, self.temperature))
        terms.update(self.feature_terms(student_features, teacher_features, batch, logits, teacher_logits))
        return logits, weighted_sum(**terms)
