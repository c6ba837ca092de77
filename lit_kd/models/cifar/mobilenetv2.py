"""MobileNetV2 for CIFAR, as used as a student in the distillation literature.

Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (arXiv:1801.04381). The CIFAR variant of the KD literature (first in
Jin et al., "Knowledge Distillation via Route Constrained Optimization", ICCV 2019; the
``mobile_half`` student of CRD, Tian et al., ICLR 2020) keeps the seven inverted-residual stages
(t, c, n, s) = (1,16,1,1), (T,24,2,1), (T,32,3,2), (T,64,4,2), (T,96,3,1), (T,160,3,2),
(T,320,1,1) with expansion T = 6 and width multiplier 0.5, a stride-2 3x3 stem, a 1x1 conv to
1280 channels, global average pooling and a linear classifier. As in that code base it uses
ReLU (not ReLU6) and keeps the expansion 1x1 conv also when t = 1.

Registered as ``mobilenetv2_cifar`` (timm has its own ``mobilenetv2_*``).

Tap points (``feature_info``): the stem (``conv1``) and the last stage at each resolution
(``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6``); ``forward_features`` continues through
``conv2`` (1280 channels). ``preact=True`` returns the stem's BN output before its ReLU; stage
outputs are linear bottlenecks (no ReLU), so for them it returns the same tensor as
``preact=False``. Module names match the CRD code base except its ``classifier.0``, which
:func:`checkpoint_filter_fn` renames. ``timm.create_model(..., features_only=True)`` uses timm's
hook-based feature extractor (the taps are nested in ``blocks``).
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from lit_kd.models.cifar._base import CifarNet, PreactSequential, cifar_cfg, init_weights
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "checkpoint_filter_fn"]

# (expansion, channels, blocks, stride) per stage; ``None`` expansion means "the network's T"
_STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expansion - 3x3 depthwise - 1x1 linear projection, residual where shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        self.use_residual = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(),
            nn.Conv2d(mid_chs, mid_chs, kernel_size=3, stride=stride, padding=1, groups=mid_chs, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(),
            nn.Conv2d(mid_chs, out_chs, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> PreactSequential:
    return PreactSequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(),
    )


class MobileNetV2Cifar(CifarNet):
    """MobileNetV2 for 32x32 inputs (stride-2 stem, overall stride 16, final map 2x2).

    Args:
        expand_ratio: expansion T of stages 2-7.
        width_mult: channel multiplier of the stem and stages (the 1280-channel head only grows
            for ``width_mult > 1``).
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        expand_ratio: int = 6,
        width_mult: float = 0.5,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        in_chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, 3, stride=2)
        reduction = 2
        feature_info: list[dict[str, Any]] = [dict(num_chs=in_chs, reduction=reduction, module="conv1")]
        stages = []
        for index, (t, c, n, s) in enumerate(_STAGES):
            out_chs = int(c * width_mult)
            blocks = []
            for block_index in range(n):
                blocks.append(InvertedResidual(in_chs, out_chs, s if block_index == 0 else 1, t or expand_ratio))
                in_chs = out_chs
            stages.append(PreactSequential(*blocks))
            reduction *= s
            next_stride = _STAGES[index + 1][3] if index + 1 < len(_STAGES) else 2
            if next_stride == 2:  # the last stage at this resolution is a tap point
                feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f"blocks.{index}"))
        self.blocks = nn.Sequential(*stages)
        last_chs = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_chs, last_chs, 1)
        self._init_head(last_chs, num_classes, drop_rate, "classifier")
        self._set_body(("conv1", *(f"blocks.{i}" for i in range(len(_STAGES))), "conv2"), feature_info)
        init_weights(self, linear_std=0.01)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """Rename the CRD/RepDistiller classifier (``classifier.0.*``) to ``classifier.*``."""
    return {key.replace("classifier.0.", "classifier.", 1): value for key, value in state_dict.items()}


def _create_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> MobileNetV2Cifar:
    return build_model_with_cfg(
        MobileNetV2Cifar,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3, 4), feature_cls="hook"),
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "mobilenetv2_cifar": cifar_cfg(
            first_conv="conv1.0",
            classifier="classifier",
            pool_size=(2, 2),
            paper_ids="arXiv:1801.04381",
            paper_name="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        )
    }
)


@register_zoo_model
def mobilenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> MobileNetV2Cifar:
    """MobileNetV2 (T=6, width 0.5; CRD's ``mobile_half``), ~0.81M parameters at 100 classes."""
    return _create_mobilenetv2("mobilenetv2_cifar", pretrained, **kwargs)
