"""AB: the connector that maps a student pre-activation to the teacher's shape for activation-boundary transfer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["ABConnector"]


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
