"""VGG with batch normalization for CIFAR, as in the distillation literature.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (arXiv:1409.1556), configurations A/B/D/E (VGG-11/13/16/19), plus the shallow
VGG-8 (one conv per block) of the CRD code base (Tian et al., "Contrastive Representation
Distillation", ICLR 2020). The CIFAR versions have five blocks of 3x3 conv-BN-ReLU layers,
2x2 max pooling after the first three blocks (none after the fourth at 32x32 input), global
average pooling and a single linear layer 512 -> classes (no hidden FC layers).

timm already has ``vgg11``..``vgg19`` (ImageNet VGGs), so these are registered as
``vgg8_cifar``, ``vgg11_cifar``, ``vgg13_cifar``, ``vgg16_cifar`` and ``vgg19_cifar``.

Tap points (``feature_info``): ``block0``..``block4`` (after the block's last ReLU).
``preact=True`` returns the output of each block's last BN, before that ReLU
(``relu(preact) == post``). Module names (``block{i}.{j}``, ``classifier``) match the CRD code
base, so its checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from lit_kd.models.cifar._base import CifarNet, PreactSequential, cifar_cfg, init_weights
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["CifarVGG", "VGG_CFGS"]

VGG_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _conv_bn_relu_block(in_chs: int, widths: Sequence[int]) -> PreactSequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chs, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_chs = width
    return PreactSequential(*layers)


class CifarVGG(CifarNet):
    """VGG-BN for 32x32 inputs: five conv blocks, max pooling after blocks 0-2, a linear head.

    Args:
        cfg: conv widths of the five blocks (see :data:`VGG_CFGS`).
        num_classes: classifier size (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        cfg: Sequence[Sequence[int]] = VGG_CFGS["vgg13"],
        num_classes: int = 100,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"a CIFAR VGG has 5 blocks, got {len(cfg)}")
        steps: list[str] = []
        feature_info: list[dict[str, Any]] = []
        in_chs, reduction = in_chans, 1
        for index, widths in enumerate(cfg):
            self.add_module(f"block{index}", _conv_bn_relu_block(in_chs, widths))
            steps.append(f"block{index}")
            feature_info.append(dict(num_chs=widths[-1], reduction=reduction, module=f"block{index}"))
            in_chs = widths[-1]
            if index < 3:
                self.add_module(f"pool{index}", nn.MaxPool2d(kernel_size=2, stride=2))
                steps.append(f"pool{index}")
                reduction *= 2
        self._init_head(in_chs, num_classes, drop_rate, "classifier")
        self._set_body(steps, feature_info)
        init_weights(self, linear_std=0.01)


def _create_vgg(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build_model_with_cfg(
        CifarVGG,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)),
        cfg=VGG_CFGS[variant.removesuffix("_cifar")],
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        f"{name}_cifar": cifar_cfg(
            first_conv="block0.0",
            classifier="classifier",
            pool_size=(4, 4),
            paper_ids="arXiv:1409.1556",
            paper_name="Very Deep Convolutional Networks for Large-Scale Image Recognition",
        )
        for name in VGG_CFGS
    }
)


@register_zoo_model
def vgg8_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-8-BN for CIFAR (CRD's ``vgg8``), ~3.96M parameters at 100 classes."""
    return _create_vgg("vgg8_cifar", pretrained, **kwargs)


@register_zoo_model
def vgg11_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-11-BN (config A) for CIFAR, ~9.28M parameters at 100 classes."""
    return _create_vgg("vgg11_cifar", pretrained, **kwargs)


@register_zoo_model
def vgg13_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-13-BN (config B) for CIFAR, ~9.46M parameters at 100 classes."""
    return _create_vgg("vgg13_cifar", pretrained, **kwargs)


@register_zoo_model
def vgg16_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16-BN (config D) for CIFAR, ~14.8M parameters at 100 classes."""
    return _create_vgg("vgg16_cifar", pretrained, **kwargs)


@register_zoo_model
def vgg19_cifar(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-19-BN (config E) for CIFAR, ~20.1M parameters at 100 classes."""
    return _create_vgg("vgg19_cifar", pretrained, **kwargs)
