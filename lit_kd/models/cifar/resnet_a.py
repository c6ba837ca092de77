"""The original CIFAR ResNets of He et al. (2016), with parameter-free option-A shortcuts.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385), Section 4.2 and Table 6: ResNet-20/32/44/56/110 with 0.27/0.46/0.66/0.85/1.7M
parameters on CIFAR-10. Where a stage changes the shape, the shortcut takes every second pixel
and zero-pads the new channels (``planes // 4`` on each side); it has no parameters.

The module names (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``)
are those of the widely used pretrained CIFAR-10 checkpoints (Y. Idelbayev,
``pytorch_resnet_cifar10``; the ``*.th`` teachers in ``shared/data/teachers``), so they load
strictly, directly or through timm::

    timm.create_model("resnet56_a", pretrained=True,
                      pretrained_cfg_overlay=dict(file=".../resnet56-4bfd9763.th"))

Those weights were trained on pixels normalized with the ImageNet mean/std, which is what the
default pretrained cfg declares (10 classes, 32x32). Taps and ``preact`` as in
:mod:`lit_kd.models.cifar.resnet` (same blocks).
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs

from lit_kd.models.cifar._base import IMAGENET_MEAN, IMAGENET_STD, cifar_cfg
from lit_kd.models.cifar.resnet import CifarResNet
from lit_kd.models.cifar.lit_kd_zoo import register_zoo_model

__all__ = ["create_cifar_resnet_a"]


def create_cifar_resnet_a(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Build an option-A CIFAR ResNet (16/32/64 channels) through timm."""
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        widths=(16, 16, 32, 64),
        shortcut="A",
        classifier_name="linear",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg(
            num_classes=10,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            classifier="linear",
            pool_size=(8, 8),
            license="bsd-2-clause",
            paper_ids="arXiv:1512.03385",
            paper_name="Deep Residual Learning for Image Recognition",
            origin_url="https://github.com/akamaster/pytorch_resnet_cifar10",
        )
        for name in ("resnet20_a", "resnet32_a", "resnet44_a", "resnet56_a", "resnet110_a")
    }
)


@register_zoo_model
def resnet20_a(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 of He et al. (option A), 0.27M parameters at 10 classes."""
    return create_cifar_resnet_a("resnet20_a", pretrained, depth=20, **kwargs)


@register_zoo_model
def resnet32_a(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 of He et al. (option A), 0.46M parameters at 10 classes."""
    return create_cifar_resnet_a("resnet32_a", pretrained, depth=32, **kwargs)


@register_zoo_model
def resnet44_a(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 of He et al. (option A), 0.66M parameters at 10 classes."""
    return create_cifar_resnet_a("resnet44_a", pretrained, depth=44, **kwargs)


@register_zoo_model
def resnet56_a(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 of He et al. (option A), 0.85M parameters at 10 classes."""
    return create_cifar_resnet_a("resnet56_a", pretrained, depth=56, **kwargs)


@register_zoo_model
def resnet110_a(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 of He et al. (option A), 1.7M parameters at 10 classes."""
    return create_cifar_resnet_a("resnet110_a", pretrained, depth=110, **kwargs)
