"""ShuffleNet V1 and V2 for CIFAR, as used as students in the distillation literature.

* Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
  Mobile Devices", CVPR 2018 (arXiv:1707.01083).
* Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
  Design", ECCV 2018 (arXiv:1807.11164).

The CIFAR variants are those of the CRD code base (Tian et al., ICLR 2020; ``ShuffleV1`` /
``ShuffleV2``): a 1x1 stem conv to 24 channels with no stride and no max pooling, three stages
that each start with a stride-2 unit, global average pooling and a linear classifier.

* ``shufflenetv1_cifar``: groups 3, stage widths 240/480/960, 4/8/4 units. The stride-2 unit
  concatenates its branch with a 3x3 average-pooled shortcut; the first 1x1 group conv of the
  network is not grouped (its input has only 24 channels). As in the CRD code there is a ReLU
  after the depthwise conv.
* ``shufflenetv2_cifar``: net size 1x, stage widths 116/232/464, one down-sampling unit plus
  3/7/3 basic units, then a 1x1 conv to 1024 channels.

Tap points (``feature_info``): the stem (``act1``, after conv-BN-ReLU) and ``layer1..3``.
``preact=True`` returns the stem's BN output and, for a stage, the output of its last unit
before the final ReLU: for V1 the sum (or concatenation) of branch and shortcut; for V2 the
channel-shuffled concatenation of the identity half and the branch's last BN output (the same
channel order as the post-activation output, so ``relu(preact) == post`` for both; CRD's V2
code returns that concatenation unshuffled). ShuffleNets keep PyTorch's default
initialisation, as in the CRD code; module names match it, so its checkpoints load as they are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from lit_kd.models.cifar._base import ChannelShuffle, CifarNet, PreactSequential, cifar_cfg
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["ShuffleNetV1Cifar", "ShuffleNetV2Cifar", "ShuffleV1Unit", "ShuffleV2DownUnit", "ShuffleV2Unit"]


def _conv(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False)


class _ShuffleNet(CifarNet):
    """Stem (1x1 conv-BN-ReLU), three stages, optional 1x1 conv head: shared by V1 and V2."""

    def _init_stem(self, in_chans: int, stem_chs: int) -> None:
        self.conv1 = _conv(in_chans, stem_chs)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU()

    def _finish(
        self,
        stem_chs: int,
        stage_chs: tuple[int, ...],
        num_features: int,
        num_classes: int,
        drop_rate: float,
        head_steps: tuple[str, ...] = (),
    ) -> None:
        self._init_head(num_features, num_classes, drop_rate, "linear")
        self._set_body(
            ("conv1", "bn1", "act1", "layer1", "layer2", "layer3", *head_steps),
            [
                dict(num_chs=stem_chs, reduction=1, module="act1"),
                *(dict(num_chs=c, reduction=2 ** (i + 1), module=f"layer{i + 1}") for i, c in enumerate(stage_chs)),
            ],
        )


class ShuffleV1Unit(nn.Module):
    """ShuffleNet unit: 1x1 group conv, channel shuffle, 3x3 depthwise conv, 1x1 group conv.

    Stride 1: added to the identity. Stride 2: concatenated with a 3x3 average-pooled input, so
    the branch produces ``out_chs - in_chs`` channels. ReLU after the sum / concatenation.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        mid_chs = branch_chs // 4
        self.conv1 = _conv(in_chs, mid_chs, groups=first_groups)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.shuffle = ChannelShuffle(first_groups)
        self.conv2 = _conv(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3 = _conv(mid_chs, branch_chs, groups=groups)
        self.bn3 = nn.BatchNorm2d(branch_chs)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None
        self.preact = nn.Identity()  # hook point for the pre-ReLU output

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        pre = torch.cat([out, self.shortcut(x)], 1) if self.shortcut is not None else out + x
        pre = self.preact(pre)
        return pre, F.relu(pre)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[1]


class ShuffleNetV1Cifar(_ShuffleNet):
    """ShuffleNet V1 for 32x32 inputs.

    Args:
        stage_chs: output channels of the three stages.
        num_blocks: units per stage (the first one has stride 2).
        groups: groups of the 1x1 convs.
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        stage_chs: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        stem_chs = 24
        self._init_stem(in_chans, stem_chs)
        in_chs = stem_chs
        for index, (out_chs, n) in enumerate(zip(stage_chs, num_blocks), start=1):
            units = []
            for unit_index in range(n):
                first_groups = 1 if index == 1 and unit_index == 0 else groups
                units.append(ShuffleV1Unit(in_chs, out_chs, 2 if unit_index == 0 else 1, groups, first_groups))
                in_chs = out_chs
            self.add_module(f"layer{index}", PreactSequential(*units))
        self._finish(stem_chs, stage_chs, stage_chs[-1], num_classes, drop_rate)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet V2 basic unit: split channels in half, transform one half, concat, shuffle."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.split_chs = chs // 2
        branch_chs = chs - self.split_chs
        self.conv1 = _conv(branch_chs, branch_chs)
        self.bn1 = nn.BatchNorm2d(branch_chs)
        self.conv2 = _conv(branch_chs, branch_chs, 3, groups=branch_chs)
        self.bn2 = nn.BatchNorm2d(branch_chs)
        self.conv3 = _conv(branch_chs, branch_chs)
        self.bn3 = nn.BatchNorm2d(branch_chs)
        self.preact = nn.Identity()  # hook point for the branch's pre-ReLU output
        self.shuffle = ChannelShuffle(2)

    def _branch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        identity, x = x[:, : self.split_chs], x[:, self.split_chs :]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return identity, self.preact(self.bn3(self.conv3(out)))

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        identity, pre = self._branch(x)
        post = self.shuffle(torch.cat([identity, F.relu(pre)], 1))
        return self.shuffle(torch.cat([identity, pre], 1)), post

    def forward(self, x: Tensor) -> Tensor:
        identity, pre = self._branch(x)
        return self.shuffle(torch.cat([identity, F.relu(pre)], 1))


class ShuffleV2DownUnit(nn.Module):
    """ShuffleNet V2 down-sampling unit: two stride-2 branches on the full input, concat, shuffle."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid_chs = out_chs // 2
        # left branch: depthwise 3x3 (stride 2), 1x1
        self.conv1 = _conv(in_chs, in_chs, 3, stride=2, groups=in_chs)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = _conv(in_chs, mid_chs)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        # right branch: 1x1, depthwise 3x3 (stride 2), 1x1
        self.conv3 = _conv(in_chs, mid_chs)
        self.bn3 = nn.BatchNorm2d(mid_chs)
        self.conv4 = _conv(mid_chs, mid_chs, 3, stride=2, groups=mid_chs)
        self.bn4 = nn.BatchNorm2d(mid_chs)
        self.conv5 = _conv(mid_chs, mid_chs)
        self.bn5 = nn.BatchNorm2d(mid_chs)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2Cifar(_ShuffleNet):
    """ShuffleNet V2 for 32x32 inputs.

    Args:
        stage_chs: output channels of the three stages.
        num_blocks: basic units per stage (after its down-sampling unit).
        head_chs: channels of the final 1x1 conv.
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        stage_chs: tuple[int, int, int] = (116, 232, 464),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        head_chs: int = 1024,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        stem_chs = 24
        self._init_stem(in_chans, stem_chs)
        in_chs = stem_chs
        for index, (out_chs, n) in enumerate(zip(stage_chs, num_blocks), start=1):
            units = [ShuffleV2DownUnit(in_chs, out_chs), *(ShuffleV2Unit(out_chs) for _ in range(n))]
            self.add_module(f"layer{index}", PreactSequential(*units))
            in_chs = out_chs
        self.conv2 = _conv(in_chs, head_chs)
        self.bn2 = nn.BatchNorm2d(head_chs)
        self.act2 = nn.ReLU()
        self._finish(stem_chs, stage_chs, head_chs, num_classes, drop_rate, head_steps=("conv2", "bn2", "act2"))


def _create(model_cls: type[_ShuffleNet], variant: str, pretrained: bool, **kwargs: Any) -> _ShuffleNet:
    return build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "shufflenetv1_cifar": cifar_cfg(
            classifier="linear",
            pool_size=(4, 4),
            paper_ids="arXiv:1707.01083",
            paper_name="ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
        ),
        "shufflenetv2_cifar": cifar_cfg(
            classifier="linear",
            pool_size=(4, 4),
            paper_ids="arXiv:1807.11164",
            paper_name="ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
        ),
    }
)


@register_zoo_model
def shufflenetv1_cifar(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1Cifar:
    """ShuffleNet V1 (g=3; CRD's ``ShuffleV1``), ~0.95M parameters at 100 classes."""
    return _create(ShuffleNetV1Cifar, "shufflenetv1_cifar", pretrained, **kwargs)


@register_zoo_model
def shufflenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2Cifar:
    """ShuffleNet V2 1x (CRD's ``ShuffleV2``), ~1.36M parameters at 100 classes."""
    return _create(ShuffleNetV2Cifar, "shufflenetv2_cifar", pretrained, **kwargs)
