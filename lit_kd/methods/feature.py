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
from lit_kd.taps import FeatureTap, TapError, feature_channels, stage_count

__all__ = ["FeatureDistillation", "Layer", "stages_after_stem"]

Layer = int | str


def stages_after_stem(model: nn.Module) -> list[int]:
    """Every stage index of ``model`` but the first (the stem): the CIFAR KD literature's default
    stage list (RepDistiller's ``feat[1:-1]``, mdistiller's ``feats[1:]``), which the lit_kd CIFAR
    zoo's ``feature_info`` mirrors; for timm ResNets it is ``layer1`` .. ``layer4``."""
    count = stage_count(model)
    if count < 2:
        raise TapError(f"{type(model).__name__} has {count} stage(s) in feature_info, so there is no stage after the "
                       "stem to default to: list the layers explicitly (stage indices or module names).")
    return list(range(1, count))


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
        student_layers: the student features the method reads; ``None``: the method's default
            (:meth:`default_layers`; here every stage after the stem, :func:`stages_after_stem`).
        teacher_layers: the teacher features the method reads; ``None``: the method's default.
        preact: tap stage features before their final ReLU (models whose ``forward_intermediates``
            offers it: the CIFAR zoo).
        teacher_preact: the same for the teacher alone; ``None``: as ``preact`` (ReviewKD reads the
            teacher before and the student after the ReLU).
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
        student_layers: Sequence[Layer] | None,
        teacher_layers: Sequence[Layer] | None,
        preact: bool = False,
        teacher_preact: bool | None = None,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        student_layers = self.default_layers(self.student) if student_layers is None else list(student_layers)
        teacher_layers = self.default_layers(self.teacher) if teacher_layers is None else list(teacher_layers)
        self.student_tap = FeatureTap(self.student, student_layers, preact=preact)
        self.teacher_tap = FeatureTap(self.teacher, teacher_layers,
                                      preact=preact if teacher_preact is None else teacher_preact)
        self.probe_size = probe_size
        self.student_shapes = feature_channels(self.student_tap, self.student_input.size or probe_size)
        self.teacher_shapes = feature_channels(self.teacher_tap, self.teacher_input.size or probe_size)
        check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperature = check_temperature(temperature)

    def default_layers(self, network: nn.Module) -> list[Layer]:
        """The layers a method reads when its layer list is ``None``: every stage after the stem."""
        return list(stages_after_stem(network))

    # ------------------------------------------------------------------ checks for subclasses
    def require_pairs(self, method: str) -> int:
        """The number of layer pairs; a ValueError unless student and teacher list as many layers."""
        count, other = len(self.student_tap.layers), len(self.teacher_tap.layers)
        if count != other or count == 0:
            raise ValueError(
                f"{method} pairs student and teacher features layer by layer: give as many student_layers as "
                f"teacher_layers (got {self.student_tap.layers} and {self.teacher_tap.layers})."
            )
        return count

    def require_feature_maps(self, method: str) -> None:
        """A ValueError unless every tapped feature is a ``(C, H, W)`` map."""
        for role, layers, shapes in (("student", self.student_tap.layers, self.student_shapes),
                                     ("teacher", self.teacher_tap.layers, self.teacher_shapes)):
            for layer, shape in zip(layers, shapes):
                if len(shape) != 3:
                    raise ValueError(
                        f"{method} compares feature maps (C, H, W), but the {role} layer {layer!r} gives shape "
                        f"{shape}. Choose convolutional stages (stage indices or module names), not 'pre_logits' "
                        "or token sequences."
                    )

    def require_probe_size(self, method: str) -> None:
        """A ValueError when the data declares an image size other than the one the parts were sized for
        (for parts bound to spatial sizes, such as AB's connectors). Call from ``setup``."""
        size = self.data_info.image_size
        for role, adapter in (("student", self.student_input), ("teacher", self.teacher_input)):
            if size is not None and adapter.size is None and size != self.probe_size:
                raise ValueError(
                    f"{method}'s parts were sized for {self.probe_size}x{self.probe_size} images (probe_size), but the "
                    f"data gives {size}x{size} images to the {role}. Set probe_size: {size}."
                )

    # ------------------------------------------------------------------ the forward passes
    def forward_features(self, batch: KDBatch) -> tuple[Tensor, list[Tensor], Tensor, list[Tensor]]:
        """``(student logits, student features, teacher logits, teacher features)`` of one batch: one
        teacher forward under ``no_grad`` and one student forward."""
        with self.no_teacher_grad():
            teacher_logits, teacher_features = self.teacher_tap(self.teacher_input(batch.teacher_image))
        logits, student_features = self.student_tap(self.student_input(batch.image))
        return logits, student_features, teacher_logits, teacher_features

    def logit_terms(self, logits: Tensor, teacher_logits: Tensor | None,
                    batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        """``ce`` (when ``ce_weight``) and ``kd`` (when ``kd_weight``) terms."""
        terms: dict[str, tuple[float, Tensor]] = {}
        if self.ce_weight:
            if batch.target is None:
                raise DataContractError(f"{type(self).__name__} weighs the cross-entropy by ce_weight="
                                        f"{self.ce_weight}, but the batch has no labels. Give labelled data or set "
                                        "ce_weight: 0.")
            terms["ce"] = (self.ce_weight, self.cross_entropy(logits, batch.target))
        if self.kd_weight:
            if teacher_logits is None:
                raise RuntimeError("kd_weight is set but the teacher's logits were not computed")
            terms["kd"] = (self.kd_weight, kd_loss(logits, teacher_logits, self.temperature))
        return terms

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        """The method's terms as ``{name: (weight, value)}`` (features in the order of the layer lists)."""
        raise NotImplementedError(f"{type(self).__name__} must implement feature_terms()")

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, student_features, teacher_logits, teacher_features = self.forward_features(batch)
        terms = self.logit_terms(logits, teacher_logits, batch)
        terms.update(self.feature_terms(student_features, teacher_features, batch, logits, teacher_logits))
        return logits, weighted_sum(**terms)
