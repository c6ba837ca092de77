"""AB: activation-boundary transfer, with the connector that maps a student pre-activation to the
teacher's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import ab_loss, ab_stage_weights
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.feature import Layer
from lit_kd.methods.staged import StagedFeatureDistillation
from lit_kd.models import ModelSpec

__all__ = ["ABConnector", "AB"]


class ABConnector(nn.Module):
    """Maps one student pre-activation ``(C_s, H_s, W_s)`` to the teacher's ``(C_t, H_t, W_t)``.

    Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons" (AAAI 2019) use a 1×1 convolution with batch norm; RepDistiller also bridges spatial
    sizes, and this connector follows RepDistiller:

    * equal shapes: the identity (no parameters);
    * ``H_s = 2 H_t``: a 3×3 convolution with stride 2;
    * ``2 H_s = H_t``: a 4×4 transposed convolution with stride 2;
    * ``H_s >= H_t`` otherwise: a convolution with kernel ``(1 + H_s - H_t, 1 + W_s - W_t)``
      (1×1 when the sizes agree);

    each followed by batch norm (no activation: the outputs are pre-activations). Train it with
    the student during the AB initialization stage.

    Args:
        student_shape: ``(C, H, W)`` of the student feature.
        teacher_shape: ``(C, H, W)`` of the teacher feature.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise ValueError(f"ABConnector needs (C, H, W) shapes; got {tuple(student_shape)} and "
                             f"{tuple(teacher_shape)}.")
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        (s_c, s_h, s_w), (t_c, t_h, t_w) = self.student_shape, self.teacher_shape
        self.conv: nn.Module | None
        self.bn: nn.Module | None
        if self.student_shape == self.teacher_shape:
            self.conv, self.bn = None, None
            return
        if s_h == 2 * t_h:
            self.conv, out = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1), ((s_h - 1) // 2 + 1,
                                                                                        (s_w - 1) // 2 + 1)
        elif 2 * s_h == t_h:
            self.conv, out = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1), (2 * s_h, 2 * s_w)
        elif s_h >= t_h and s_w >= t_w:
            self.conv, out = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w)), (t_h, t_w)
        else:
            out = None
        if out != (t_h, t_w):
            raise ValueError(
                f"ABConnector cannot map a student feature {self.student_shape} to the teacher's {self.teacher_shape}: "
                "it bridges equal sizes, half or double the size, or a larger student map only. Tap a student stage "
                "whose spatial size is at least the teacher's (or exactly half of it)."
            )
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, student_feature: Tensor) -> Tensor:
        if tuple(student_feature.shape[1:]) != self.student_shape:
            raise ValueError(f"This ABConnector maps {self.student_shape} student features; got "
                             f"{tuple(student_feature.shape)}.")
        if self.conv is None:
            return student_feature
        return self.bn(self.conv(student_feature))


class AB(StagedFeatureDistillation):
    r"""Heo, Lee, Yun & Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by
    Hidden Neurons" (AAAI 2019).

    **Initialization stage** (``pretrain_epochs``; RepDistiller's ``--init_epochs 30``): the
    student's layers (everything but its classifier) and one :class:`ABConnector` per stage pair
    learn the teacher's activation boundaries on pre-ReLU features,

    .. math::
        L_{init} = w_{init} \sum_i w_i \, \frac{1}{B} \sum_b \Big\lVert \rho(t_i) \odot \max(0, \mu - r_i(s_i))
                   + (1 - \rho(t_i)) \odot \max(0, \mu + r_i(s_i)) \Big\rVert_2^2,
        \quad w_i = \frac{3}{1000} \, 2^{\,i - n + 1}

    (:func:`lit_kd.losses.ab_loss` with the authors' stage weights :func:`lit_kd.losses.ab_stage_weights`),
    with their own optimizer at a constant learning rate. **Main stage**: the task,
    ``ce_weight · CE`` (RepDistiller ``-a 0``; its ``-b 1`` multiplies a term its main stage sets to
    0); the connectors are no longer used. The authors' CIFAR code trains the main stage with KD
    (:math:`T = 3`): set ``kd_weight`` and ``temperature`` for that reading. One ``lit-kd fit``
    runs both stages (see :mod:`lit_kd.methods.staged`).

    Defaults: pre-ReLU features (``preact=True``, the CIFAR zoo) of every stage after the stem
    (RepDistiller's ``feat[1:-1]``), margin :math:`\mu = 1`. A connector bridges equal shapes,
    half or double the spatial size, or a larger student map (:class:`ABConnector`); other shapes
    are refused when the method is built.

    Args:
        student_layers: student stages; ``None``: every stage after the stem.
        teacher_layers: the teacher's stages; ``None``: every stage after the stem.
        margin: :math:`\mu`.
        pretrain_weight: :math:`w_{init}`.
        preact: read the features before their ReLU (the method's definition; needs a model whose
            ``forward_intermediates`` offers it, or BN layers named by module name with ``preact=False``).
        pretrain_epochs: epochs of the initialization stage.
        pretrain_lr: its constant learning rate (``None``: the main optimizer's initial one).
        ce_weight: weight of the cross-entropy in the main stage.
        **kwargs: the :class:`~lit_kd.methods.staged.StagedFeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        margin: float = 1.0,
        pretrain_weight: float = 1.0,
        preact: bool = True,
        pretrain_epochs: int = 30,
        pretrain_lr: float | None = None,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, preact=preact,
                         pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr, ce_weight=ce_weight, **kwargs)
        count = self.require_pairs("AB")
        self.require_feature_maps("AB")
        if not margin >= 0:
            raise ValueError(f"AB's margin must be >= 0, got {margin}")
        self.connectors = nn.ModuleList(ABConnector(s, t) for s, t in zip(self.student_shapes, self.teacher_shapes))
        self.stage_weights = ab_stage_weights(count)
        self.margin, self.pretrain_weight = margin, pretrain_weight

    def pretrain_parameters(self) -> list[nn.Parameter]:
        return [*self.student_feature_parameters(), *self.parameters_of(self.connectors)]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.require_probe_size("AB")

    def pretrain_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, student_features, _, teacher_features = self.forward_features(batch)
        for connector, feature in zip(self.connectors, student_features):
            if tuple(feature.shape[1:]) != connector.student_shape:
                raise ValueError(
                    f"AB's connectors were sized for student features {connector.student_shape} ({self.probe_size}x"
                    f"{self.probe_size} images, probe_size), but this batch gives {tuple(feature.shape[1:])}. Set "
                    "probe_size to the training image size."
                )
        total = sum(weight * ab_loss(connector(s), t, self.margin) for weight, connector, s, t
                    in zip(self.stage_weights, self.connectors, student_features, teacher_features))
        return logits, weighted_sum(ab=(self.pretrain_weight, total))

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return self.plain_losses(batch)
