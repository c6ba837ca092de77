"""OFD's trainable parts: the connectors (conv + BN) and the teacher margins they are compared with.

Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).
Features are taken before the ReLU (``FeatureTap(..., preact=True)`` or the BN module by name) at
the end of each stage; the student's go through a connector to the teacher's width, the teacher's
through the margin ReLU :math:`\max(x, m)` with margins from the teacher's BN statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.losses.overhaul import Reduction, ofd_loss, ofd_margin

__all__ = ["OFDConnector", "OFDDistillation"]


class OFDConnector(nn.Sequential):
    """Student feature -> teacher width: a stride-1 convolution without bias followed by BN.

    Initialised as in the paper's code: conv weights ``N(0, 2 / (k * k * out_channels))``, BN
    weight 1 and bias 0.

    Args:
        student_channels: channels of the student feature.
        teacher_channels: channels of the teacher feature.
        kernel_size: 1 in the paper; mdistiller allows other odd sizes ("same" padding).
    """

    def __init__(self, student_channels: int, teacher_channels: int, kernel_size: int = 1) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"OFDConnector needs an odd kernel_size >= 1 (same padding), got {kernel_size}")
        conv = nn.Conv2d(student_channels, teacher_channels, kernel_size, stride=1,
                         padding=(kernel_size - 1) // 2, bias=False)
        norm = nn.BatchNorm2d(teacher_channels)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * teacher_channels)))
        nn.init.ones_(norm.weight)
        nn.init.zeros_(norm.bias)
        super().__init__(conv, norm)


class OFDDistillation(nn.Module):
    """Connectors for several feature positions plus the teacher margins (buffers), and the loss.

    Args:
        student_channels: student channels per position, shallow to deep.
        teacher_channels: teacher channels per position.
        teacher_norms: the teacher's BN before each position's ReLU; their weight/bias give the
            margins (:func:`lit_kd.losses.ofd_margin`), fixed at construction as in the paper.
        kernel_size: the connectors' kernel size.
        pool_teacher: average-pool a teacher feature to the student's spatial size when they
            differ (mdistiller); off, the shapes must match (the paper's and clovaai's setting).
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 teacher_norms: Sequence[nn.BatchNorm2d], kernel_size: int = 1, pool_teacher: bool = False) -> None:
        super().__init__()
        if not len(student_channels) == len(teacher_channels) == len(teacher_norms) or not student_channels:
            raise ValueError(
                f"OFDDistillation needs one student width, teacher width and teacher BN per position; got "
                f"{len(student_channels)}, {len(teacher_channels)} and {len(teacher_norms)}."
            )
        for index, (channels, norm) in enumerate(zip(teacher_channels, teacher_norms)):
            if norm.num_features != channels:
                raise ValueError(f"Position {index}: the teacher BN has {norm.num_features} channels, "
                                 f"the teacher feature {channels}.")
        self.connectors = nn.ModuleList(OFDConnector(s, t, kernel_size)
                                        for s, t in zip(student_channels, teacher_channels))
        for index, norm in enumerate(teacher_norms):
            self.register_buffer(f"margin{index}", ofd_margin(norm.weight, norm.bias))
        self.pool_teacher = pool_teacher

    @property
    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{index}") for index in range(len(self.connectors))]

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor],
                reduction: Reduction = "batchmean") -> Tensor:
        """The OFD loss of pre-ReLU ``student_features`` against pre-ReLU ``teacher_features``."""
        if len(student_features) != len(self.connectors) or len(teacher_features) != len(self.connectors):
            raise ValueError(f"OFDDistillation was built for {len(self.connectors)} positions; got "
                             f"{len(student_features)} student and {len(teacher_features)} teacher features.")
        mapped = [connector(feature) for connector, feature in zip(self.connectors, student_features)]
        teachers = list(teacher_features)
        if self.pool_teacher:
            teachers = [F.adaptive_avg_pool2d(t, s.shape[-2:]) if t.shape[-2:] != s.shape[-2:] else t
                        for s, t in zip(mapped, teachers)]
        return ofd_loss(mapped, teachers, self.margins, reduction)
