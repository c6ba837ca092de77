"""FT: the paraphraser (teacher side, pre-trained as an autoencoder) and the translator (student side)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Paraphraser", "Translator"]


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
