"""FT: factor transfer, with the paraphraser (teacher side, pre-trained as an autoencoder) and the
translator (student side)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import ft_loss
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.feature import Layer
from lit_kd.methods.staged import StagedFeatureDistillation
from lit_kd.models import ModelSpec

__all__ = ["Paraphraser", "Translator", "FT"]


def _conv_block(in_channels: int, out_channels: int, use_bn: bool, transposed: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return [conv(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels) if use_bn else nn.Identity(),
            nn.LeakyReLU(0.1)]


def _factor_channels(channels: int, rate: float) -> int:
    factor = int(channels * rate)
    if factor < 1:
        raise ValueError(f"The paraphrase rate {rate} leaves no factor channels of {channels}; use a larger rate.")
    return factor


class Paraphraser(nn.Module):
    """The teacher's paraphraser of factor transfer: a convolutional autoencoder of one teacher feature.

    Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer"
    (NeurIPS 2018). The encoder (three 3×3 convolutions with LeakyReLU 0.1) maps ``channels`` to
    ``int(channels * rate)`` factor channels at the same spatial size; the decoder (three 3×3
    transposed convolutions) maps them back. It is trained first, alone, to reconstruct the
    teacher's feature (:meth:`reconstruction_loss`), then frozen; its encoder output is the
    teacher's factor. Architecture and defaults as in RepDistiller (rate 0.5, no batch norm).

    Args:
        channels: channels of the teacher feature.
        rate: the paraphrase rate ``k``: factor channels per feature channel.
        use_bn: batch norm after each convolution.
    """

    def __init__(self, channels: int, rate: float = 0.5, use_bn: bool = False) -> None:
        super().__init__()
        factor = _factor_channels(channels, rate)
        self.channels = channels
        self.encoder = nn.Sequential(*_conv_block(channels, channels, use_bn), *_conv_block(channels, factor, use_bn),
                                     *_conv_block(factor, factor, use_bn))
        self.decoder = nn.Sequential(*_conv_block(factor, factor, use_bn, True),
                                     *_conv_block(factor, channels, use_bn, True),
                                     *_conv_block(channels, channels, use_bn, True))

    def _check(self, teacher_feature: Tensor) -> None:
        if teacher_feature.dim() != 4 or teacher_feature.shape[1] != self.channels:
            raise ValueError(f"This Paraphraser encodes ({self.channels}, H, W) teacher features; got "
                             f"{tuple(teacher_feature.shape)}.")

    def encode(self, teacher_feature: Tensor) -> Tensor:
        """The teacher's factor, ``(B, int(channels * rate), H, W)``."""
        self._check(teacher_feature)
        return self.encoder(teacher_feature)

    def forward(self, teacher_feature: Tensor) -> tuple[Tensor, Tensor]:
        """``(factor, reconstruction)`` of a teacher feature."""
        factor = self.encode(teacher_feature)
        return factor, self.decoder(factor)

    def reconstruction_loss(self, teacher_feature: Tensor) -> Tensor:
        r"""The pre-training loss :math:`\frac{1}{N} \lVert x - P(x) \rVert_2^2` (mean squared error).

        The paper's reconstruction loss, as RepDistiller trains it (the authors' code uses the L1
        error instead).
        """
        _, reconstruction = self(teacher_feature)
        return F.mse_loss(reconstruction, teacher_feature)


class Translator(nn.Module):
    """The student's translator of factor transfer: three 3×3 convolutions to the teacher's factor channels.

    Kim et al. (NeurIPS 2018). Maps a student feature with ``student_channels`` to
    ``int(teacher_channels * rate)`` channels (the paraphraser's factor width) at the same spatial
    size; trained with the student. Defaults as in RepDistiller (batch norm after each convolution,
    LeakyReLU 0.1; the authors' code has no batch norm).

    Args:
        student_channels: channels of the student feature.
        teacher_channels: channels of the teacher feature the paraphraser encodes.
        rate: the paraphraser's rate.
        use_bn: batch norm after each convolution.
    """

    def __init__(self, student_channels: int, teacher_channels: int, rate: float = 0.5, use_bn: bool = True) -> None:
        super().__init__()
        factor = _factor_channels(teacher_channels, rate)
        self.student_channels = student_channels
        self.encoder = nn.Sequential(*_conv_block(student_channels, student_channels, use_bn),
                                     *_conv_block(student_channels, factor, use_bn),
                                     *_conv_block(factor, factor, use_bn))

    def forward(self, student_feature: Tensor) -> Tensor:
        if student_feature.dim() != 4 or student_feature.shape[1] != self.student_channels:
            raise ValueError(f"This Translator maps ({self.student_channels}, H, W) student features; got "
                             f"{tuple(student_feature.shape)}.")
        return self.encoder(student_feature)


class FT(StagedFeatureDistillation):
    r"""Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer"
    (NeurIPS 2018).

    **Paraphraser stage** (``pretrain_epochs``; RepDistiller's ``--init_epochs 30``): the
    :class:`Paraphraser`, a convolutional autoencoder of the teacher's feature, is trained alone to
    reconstruct it (:meth:`Paraphraser.reconstruction_loss`, mean squared error) with its own
    optimizer at a constant learning rate; the student is not trained. **Main stage**: the
    paraphraser is frozen (eval mode, no gradients) and its encoder gives the teacher's factor
    :math:`F^t`; the :class:`Translator` maps the student's feature to the student's factor
    :math:`F^s` and is trained with the student:

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \, L_{FT}(F^s, F^t), \qquad
        L_{FT} = \frac{1}{BD} \sum_b \Big\lVert \frac{F^s_b}{\lVert F^s_b \rVert_2}
                 - \frac{F^t_b}{\lVert F^t_b \rVert_2} \Big\rVert_1

    (:func:`lit_kd.losses.ft_loss`, ``mode="paper"``, the default; the authors' code with
    :math:`\beta = 500`). ``mode="repdistiller"`` reduces each factor to an attention map first, as
    RepDistiller's ``FactorTransfer`` does; its CIFAR-100 numbers were obtained with that form and
    :math:`\beta = 200` (``-b 200``). One ``lit-kd fit`` runs both stages (see
    :mod:`lit_kd.methods.staged`).

    Defaults: the last stage of both networks (RepDistiller's ``feat[-2]``), paraphrase rate 0.5,
    no BN in the paraphraser and BN in the translator (RepDistiller; the authors use none in
    either), CE weight 1, no KD term. RepDistiller pre-trains the paraphraser at lr 0.01 for
    ResNet and WRN students and at the main lr otherwise (``pretrain_lr``).

    Args:
        student_layer: the student feature the translator reads.
        teacher_layer: the teacher feature the paraphraser encodes.
        rate: the paraphrase rate ``k`` (factor channels per teacher channel).
        paraphraser_bn: batch norm in the paraphraser.
        translator_bn: batch norm in the translator.
        mode: ``"paper"`` or ``"repdistiller"`` (see above).
        ft_weight: :math:`\beta`.
        pretrain_epochs: epochs of the paraphraser stage.
        pretrain_lr: its constant learning rate (``None``: the main optimizer's initial one).
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.staged.StagedFeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layer: Layer = -1,
        teacher_layer: Layer = -1,
        rate: float = 0.5,
        paraphraser_bn: bool = False,
        translator_bn: bool = True,
        mode: Literal["paper", "repdistiller"] = "paper",
        ft_weight: float = 500.0,
        pretrain_epochs: int = 30,
        pretrain_lr: float | None = None,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], pretrain_epochs=pretrain_epochs,
                         pretrain_lr=pretrain_lr, ce_weight=ce_weight, **kwargs)
        self.require_feature_maps("FT")
        if mode not in ("paper", "repdistiller"):
            raise ValueError(f"FT mode must be 'paper' or 'repdistiller', got {mode!r}")
        (student_shape,), (teacher_shape,) = self.student_shapes, self.teacher_shapes
        self.paraphraser = Paraphraser(teacher_shape[0], rate, use_bn=paraphraser_bn)
        self.translator = Translator(student_shape[0], teacher_shape[0], rate, use_bn=translator_bn)
        self.mode, self.ft_weight = mode, ft_weight

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "translator": self.translator}

    def pretrain_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters_of(self.paraphraser))

    def pretrain_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        with self.no_teacher_grad():
            _, (teacher_feature,) = self.teacher_tap(self.teacher_input(batch.teacher_image))
        self.paraphraser.train()
        reconstruction = self.paraphraser.reconstruction_loss(teacher_feature)
        # The student is not trained in this stage; its logits only feed the training accuracy.
        return self.frozen_student_logits(batch.image), weighted_sum(reconstruction=(1.0, reconstruction))

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        (student_feature,), (teacher_feature,) = student_features, teacher_features
        self.paraphraser.eval()  # frozen after its stage (RepDistiller: eval mode, outside the optimizer)
        with torch.no_grad():
            teacher_factor = self.paraphraser.encode(teacher_feature)
        return {"ft": (self.ft_weight, ft_loss(self.translator(student_feature), teacher_factor, self.mode))}
