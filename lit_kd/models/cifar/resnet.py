"""CIFAR ResNets of the distillation literature.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), Section 4.2: a 3x3 stem conv, three stages of ``n`` basic blocks at
16/32/64 channels and strides 1/2/2 (depth ``6n + 2``), global average pooling and a linear
classifier. This module holds the variant the CIFAR-100 KD literature (CRD, Tian et al., ICLR
2020, and the code bases derived from it) uses as teachers and students: **option-B** shortcuts
(1x1 conv + BN where the shape changes), plus the 4x wider ``resnet8x4`` / ``resnet32x4``
(stem 32, stages 64/128/256). The original parameter-free **option-A** variant, for which
pretrained CIFAR-10 weights exist, is registered in :mod:`lit_kd.models.cifar.resnet_a` and is
built from the same blocks.

Tap points (``feature_info``): the stem (``act1``, after conv-BN-ReLU) and ``layer1..3``.
``preact=True`` returns, for the stem, the BN output before the ReLU and, for a stage, the sum
of residual and shortcut of its last block before the final ReLU (also available to forward
hooks as ``layer{i}.{last}.preact``); ``relu(preact) == post`` holds at every tap.

The module names (``conv1``, ``bn1``, ``layer{i}.{j}.conv1/bn1/conv2/bn2/downsample``, ``fc``)
match the CRD code base, so its checkpoints load as they are.
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from lit_kd.models.cifar._base import CifarNet, PreactSequential, cifar_cfg, init_weights
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["BasicBlock", "CifarResNet", "ShortcutA", "create_cifar_resnet"]

ShortcutType = Literal["A", "B"]


class ShortcutA(nn.Module):
    """Parameter-free shortcut (He et al., option A): subsample by the stride, zero-pad channels.

    The ``out_chs - in_chs`` new channels are zeros, split evenly before and after the input's
    channels (``planes // 4`` on each side when the width doubles).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        extra = out_chs - in_chs
        if extra < 0 or extra % 2:
            raise ValueError(f"option-A shortcut needs an even channel increase, got {in_chs} -> {out_chs}")
        self.stride = stride
        self.pad = extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad={self.pad}"


def make_shortcut(kind: ShortcutType, in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """The shortcut of a block, or ``None`` (identity) where the shape does not change."""
    if stride == 1 and in_chs == out_chs:
        return None
    if kind == "A":
        return ShortcutA(in_chs, out_chs, stride)
    if kind == "B":
        return nn.Sequential(
            nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_chs),
        )
    raise ValueError(f"shortcut must be 'A' or 'B', got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the sum (post-activation block)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = downsample
        self.preact = nn.Identity()  # hook point for the pre-ReLU sum
        self.act2 = nn.ReLU()

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        pre = self.preact(out + shortcut)
        return pre, self.act2(pre)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[1]


class CifarResNet(CifarNet):
    """ResNet for 32x32 inputs: stem, three stages of basic blocks, average pool, linear.

    Args:
        depth: ``6n + 2`` (8, 14, 20, 32, 44, 56, 110, ...).
        widths: channels of the stem and of the three stages.
        shortcut: ``"B"`` (1x1 conv + BN, the KD literature's zoo) or ``"A"`` (parameter-free,
            He et al.'s CIFAR models).
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        classifier_name: attribute name of the classifier (``fc``; ``linear`` for option A, as
            in the published checkpoints).
    """

    def __init__(
        self,
        depth: int = 20,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        shortcut: ShortcutType = "B",
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        classifier_name: str = "fc",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        in_chs = widths[0]
        for index, (out_chs, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = []
            for block_index in range(blocks_per_stage):
                block_stride = stride if block_index == 0 else 1
                downsample = make_shortcut(shortcut, in_chs, out_chs, block_stride)
                blocks.append(BasicBlock(in_chs, out_chs, block_stride, downsample))
                in_chs = out_chs
            self.add_module(f"layer{index}", PreactSequential(*blocks))
        self._init_head(widths[3], num_classes, drop_rate, classifier_name)
        self._set_body(
            ("conv1", "bn1", "act1", "layer1", "layer2", "layer3"),
            [
                dict(num_chs=widths[0], reduction=1, module="act1"),
                dict(num_chs=widths[1], reduction=1, module="layer1"),
                dict(num_chs=widths[2], reduction=2, module="layer2"),
                dict(num_chs=widths[3], reduction=4, module="layer3"),
            ],
        )
        init_weights(self)


def create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Build a registered CIFAR ResNet variant through timm (pretrained cfg, features_only, ...)."""
    return build_model_with_cfg(
        CifarResNet, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs
    )


_PAPERS = dict(paper_ids="arXiv:1512.03385", paper_name="Deep Residual Learning for Image Recognition")

default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg(pool_size=(8, 8), **_PAPERS)
        for name in (
            "resnet8",
            "resnet14",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "resnet8x4",
            "resnet32x4",
        )
    }
)

_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register_zoo_model
def resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8 for CIFAR (option-B shortcuts), ~0.08M parameters."""
    return create_cifar_resnet("resnet8", pretrained, depth=8, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet14(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-14 for CIFAR (option-B shortcuts), ~0.18M parameters."""
    return create_cifar_resnet("resnet14", pretrained, depth=14, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (option-B shortcuts), ~0.28M parameters."""
    return create_cifar_resnet("resnet20", pretrained, depth=20, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (option-B shortcuts), ~0.47M parameters."""
    return create_cifar_resnet("resnet32", pretrained, depth=32, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (option-B shortcuts), ~0.67M parameters."""
    return create_cifar_resnet("resnet44", pretrained, depth=44, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (option-B shortcuts), ~0.86M parameters."""
    return create_cifar_resnet("resnet56", pretrained, depth=56, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (option-B shortcuts), ~1.74M parameters."""
    return create_cifar_resnet("resnet110", pretrained, depth=110, widths=_NARROW, **kwargs)


@register_zoo_model
def resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8x4 (CRD): ResNet-8 with 4x the channels (stem 32, stages 64/128/256), ~1.23M parameters."""
    return create_cifar_resnet("resnet8x4", pretrained, depth=8, widths=_WIDE, **kwargs)


@register_zoo_model
def resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32x4 (CRD): ResNet-32 with 4x the channels (stem 32, stages 64/128/256), ~7.43M parameters."""
    return create_cifar_resnet("resnet32x4", pretrained, depth=32, widths=_WIDE, **kwargs)
