"""Wide Residual Networks for CIFAR.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146): WRN-d-k has a
3x3 stem conv to 16 channels, three stages of ``(d - 4) / 6`` pre-activation basic blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3) at 16k/32k/64k channels and strides 1/2/2, a final BN-ReLU,
global average pooling and a linear classifier. A 1x1 conv shortcut (applied to the
pre-activated input) is used where the shape changes. In-block dropout is 0 by default
(``block_drop_rate``), as in the KD literature's ``wrn_40_2`` / ``wrn_16_2`` teachers and
students (CRD, Tian et al., ICLR 2020).

Tap points (``feature_info``): the stem conv (``conv1``), ``block1``, ``block2`` and the final
ReLU (``act``, after the final BN ``bn1`` on the output of ``block3``). Pre-activation design: a
stage output is a residual sum with no ReLU after it, so for the stem and ``block1``/``block2``
``preact=True`` returns the same tensor as ``preact=False``. For the last tap it returns the
final BN's output before the ReLU (``relu(preact) == post``), as CRD's ``preact`` does; the raw
output of ``block3`` (before the final BN + ReLU) is the output of the module ``block3``, for
forward hooks. The final BN and ReLU are separate modules so that
``nn.SyncBatchNorm.convert_sync_batchnorm`` keeps the ReLU.

Module names follow the CRD code base except for its ``blockN.layer.M`` nesting and
``convShortcut``; :func:`checkpoint_filter_fn` renames those, so its checkpoints load through
timm's ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

import re
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from lit_kd.models.cifar._base import CifarNet, PreactSequential, cifar_cfg, init_weights
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["WideBasicBlock", "WideResNet", "checkpoint_filter_fn"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus shortcut, no final ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU()
        self.drop = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)
            if stride != 1 or in_chs != out_chs
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.drop(self.act2(self.bn2(self.conv1(out))))
        return self.conv2(out) + shortcut


class WideResNet(CifarNet):
    """WRN-depth-widen_factor for 32x32 inputs.

    Args:
        depth: ``6n + 4`` (16, 28, 40, ...).
        widen_factor: channel multiplier ``k``.
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier (timm convention).
        block_drop_rate: dropout between the two convs of every block (the paper's dropout).
    """

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        block_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        in_chs = widths[0]
        for index, (out_chs, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = []
            for block_index in range(blocks_per_stage):
                blocks.append(WideBasicBlock(in_chs, out_chs, stride if block_index == 0 else 1, block_drop_rate))
                in_chs = out_chs
            self.add_module(f"block{index}", PreactSequential(*blocks))
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.act = nn.ReLU()
        self._init_head(widths[3], num_classes, drop_rate, "fc")
        self._set_body(
            ("conv1", "block1", "block2", "block3", "bn1", "act"),
            [
                dict(num_chs=widths[0], reduction=1, module="conv1"),
                dict(num_chs=widths[1], reduction=1, module="block1"),
                dict(num_chs=widths[2], reduction=2, module="block2"),
                dict(num_chs=widths[3], reduction=4, module="act"),
            ],
        )
        init_weights(self)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """Rename CRD/RepDistiller WRN keys (``block1.layer.0.convShortcut``) to this module's names."""
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(block\d+)\.layer\.", r"\1.", key)
        renamed[key.replace(".convShortcut.", ".shortcut.")] = value
    return renamed


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_model_with_cfg(
        WideResNet,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg(pool_size=(8, 8), paper_ids="arXiv:1605.07146", paper_name="Wide Residual Networks")
        for name in ("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")
    }
)


@register_zoo_model
def wrn_16_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-1, ~0.18M parameters at 100 classes."""
    return _create_wrn("wrn_16_1", pretrained, depth=16, widen_factor=1, **kwargs)


@register_zoo_model
def wrn_16_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-2, ~0.70M parameters at 100 classes."""
    return _create_wrn("wrn_16_2", pretrained, depth=16, widen_factor=2, **kwargs)


@register_zoo_model
def wrn_40_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-1, ~0.57M parameters at 100 classes."""
    return _create_wrn("wrn_40_1", pretrained, depth=40, widen_factor=1, **kwargs)


@register_zoo_model
def wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2, ~2.26M parameters at 100 classes."""
    return _create_wrn("wrn_40_2", pretrained, depth=40, widen_factor=2, **kwargs)
