"""The small CIFAR CNNs of InDistill's official code: ``cnn32`` and ``cnn32_small``.

Sarridis et al., "InDistill: Information flow-preserving knowledge distillation for model
compression" (arXiv:2205.10003); official code ``gsarridis/InDistill``. ``Cnn32`` is the
auxiliary (intermediate) teacher and ``Cnn32_Small`` the student of its CIFAR-10 setting.

Three blocks of a 3x3 conv **without padding**, BN, ReLU and 2x2 max pooling (16/32/64 channels,
half that for the small one), then two linear layers on the flattened 2x2 map: 256 -> 128 -> classes
(small: 128 -> 64 -> classes). Spatial sizes at 32x32 input: 15x15, 6x6, 2x2. The flattened map
has a fixed size, so these networks only take 32x32 images.

Tap points (``feature_info``): ``block0..2`` (after the pooling). ``preact=True`` returns the
pooled BN output before the ReLU (max pooling and ReLU commute, so ``relu(preact) == post``).
The *embedding* of InDistill's retrieval evaluation is the first linear layer's output after its
ReLU: ``forward_head(x, pre_logits=True)``; ``num_features`` is its width (128 / 64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from lit_kd.models.cifar._base import CifarNet, cifar_cfg, init_weights
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["Cnn32", "ConvBlock"]


class ConvBlock(nn.Module):
    """3x3 conv (no padding) -> BN -> ReLU -> 2x2 max pooling."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=0)
        self.bn = nn.BatchNorm2d(out_chs)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pool(self.bn(self.conv(x)))
        return pre, F.relu(pre)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class Cnn32(CifarNet):
    """InDistill's ``Cnn32`` family: three conv blocks and a two-layer MLP head on 32x32 images.

    Args:
        widths: channels of the three conv blocks.
        embed_dim: width of the first linear layer (the retrieval embedding).
        num_classes: classifier size (0: ``forward`` returns the embedding).
        in_chans: input channels.
        drop_rate: dropout on the embedding before the classifier.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        embed_dim: int = 128,
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"Cnn32 has 3 conv blocks, got widths {tuple(widths)}")
        steps, feature_info, in_chs = [], [], in_chans
        for index, width in enumerate(widths):
            self.add_module(f"block{index}", ConvBlock(in_chs, width))
            steps.append(f"block{index}")
            feature_info.append(dict(num_chs=width, reduction=2 ** (index + 1), module=f"block{index}"))
            in_chs = width
        self.fc1 = nn.Linear(in_chs * 2 * 2, embed_dim)  # a 32x32 input ends as a 2x2 map
        self._init_head(embed_dim, num_classes, drop_rate, "fc")
        self._set_body(steps, feature_info)
        init_weights(self)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Flatten the 2x2 map, fc1 + ReLU (the embedding), dropout, classifier unless ``pre_logits``."""
        if tuple(x.shape[-2:]) != (2, 2):
            raise ValueError(f"{type(self).__name__} takes 32x32 images (a 2x2 final map), got a "
                             f"{tuple(x.shape[-2:])} final map")
        x = self.head_drop(F.relu(self.fc1(x.flatten(1))))
        return x if pre_logits else self.get_classifier()(x)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> Cnn32:
    return build_model_with_cfg(Cnn32, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2)), **kwargs)


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg(
            first_conv="block0.conv",
            pool_size=(2, 2),
            paper_ids="arXiv:2205.10003",
            paper_name="InDistill: Information flow-preserving knowledge distillation for model compression",
            origin_url="https://github.com/gsarridis/InDistill",
        )
        for name in ("cnn32", "cnn32_small")
    }
)


@register_zoo_model
def cnn32(pretrained: bool = False, **kwargs: Any) -> Cnn32:
    """InDistill's ``Cnn32`` (auxiliary teacher): 16/32/64 channels, fc 256 -> 128 -> classes."""
    return _create("cnn32", pretrained, widths=(16, 32, 64), embed_dim=128, **kwargs)


@register_zoo_model
def cnn32_small(pretrained: bool = False, **kwargs: Any) -> Cnn32:
    """InDistill's ``Cnn32_Small`` (student): 8/16/32 channels, fc 128 -> 64 -> classes."""
    return _create("cnn32_small", pretrained, widths=(8, 16, 32), embed_dim=64, **kwargs)
