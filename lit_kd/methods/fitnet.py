"""FitNets: hints from an intermediate teacher layer."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import hint_loss
from lit_kd.methods.base import check_weights
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.models import ModelSpec


class Connector(nn.Sequential):
    """The FitNets regressor: 1×1 conv + BN from the student's channels to the teacher's."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__(
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(teacher_channels),
        )


def match_spatial(feature: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring a feature map to ``size``: average pooling when larger, bilinear when smaller."""
    if tuple(feature.shape[-2:]) == tuple(size):
        return feature
    if feature.shape[-2] >= size[0] and feature.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(feature, size)
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False)


class FitNet(FeatureDistillation):
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    ``loss = ce_weight * CE(z_s, y) + hint_weight * MSE(connector(f_s), f_t)``

    where ``f_s`` and ``f_t`` are read by the shared :class:`~lit_kd.taps.FeatureTap` (a stage index
    or a module name) in the same forward pass as the logits. Defaults follow the CRD/mdistiller
    CIFAR benchmarks: hint at stage 2 (the second residual stage), weight 100, single stage.

    Args:
        student_layer: student feature to regress: stage index into ``feature_info`` or module name.
        teacher_layer: teacher hint: stage index or module name.
        preact: tap stage features before their final ReLU (CIFAR zoo models).
        ce_weight: weight of the cross-entropy with the labels.
        hint_weight: weight of the hint loss.
        probe_size: image size of the dummy forward that sizes the connector.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments (``kd_weight``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layer: int | str = 2,
        teacher_layer: int | str = 2,
        preact: bool = False,
        ce_weight: float = 1.0,
        hint_weight: float = 100.0,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], preact=preact, ce_weight=ce_weight,
                         probe_size=probe_size, **kwargs)
        (student_shape,), (teacher_shape,) = self.student_shapes, self.teacher_shapes
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise ValueError(
                f"FitNet needs feature maps (C, H, W); got student {student_shape} and teacher {teacher_shape}. "
                "Choose convolutional stages (or pass output_fmt-NCHW stage indices for ViTs)."
            )
        check_weights(hint_weight=hint_weight)
        self.connector = Connector(student_shape[0], teacher_shape[0])
        self.hint_weight = hint_weight

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "connector": self.connector}

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        (student_feature,), (teacher_feature,) = student_features, teacher_features
        regressed = match_spatial(self.connector(student_feature), tuple(teacher_feature.shape[-2:]))
        return {"hint": (self.hint_weight, hint_loss(regressed, teacher_feature))}
