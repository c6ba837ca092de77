"""The CIFAR model zoo of the distillation literature, registered in timm.

Importing this package registers every model with ``timm.register_model``, so that, e.g.,
``timm.create_model("resnet8x4", num_classes=100)`` or ``timm.create_model("resnet56_a")``
works. One module per family:

* :mod:`.resnet` -- ``resnet8/14/20/32/44/56/110``, ``resnet8x4``, ``resnet32x4`` (option-B shortcuts)
* :mod:`.resnet_a` -- ``resnet20_a/32_a/44_a/56_a/110_a`` (He et al.'s option-A ResNets; pretrained
  CIFAR-10 teachers load into these)
* :mod:`.wrn` -- ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``
* :mod:`.vgg` -- ``vgg8_cifar``, ``vgg11_cifar``, ``vgg13_cifar``, ``vgg16_cifar``, ``vgg19_cifar``
* :mod:`.mobilenetv2` -- ``mobilenetv2_cifar``
* :mod:`.shufflenet` -- ``shufflenetv1_cifar``, ``shufflenetv2_cifar``
* :mod:`.cnn32` -- ``cnn32``, ``cnn32_small`` (InDistill's auxiliary and student, unpadded convs)

Every model has timm's classifier interface plus ``forward_intermediates(..., preact=True)``
for pre-activation features; see :class:`lit_kd.models.cifar._base.CifarNet` and
``docs/model_zoo.md``.
"""

from __future__ import annotations

import timm

from lit_kd.models.cifar import cnn32, mobilenetv2, resnet, resnet_a, shufflenet, vgg, wrn  # noqa: F401  (registers)
from lit_kd.models.cifar._base import CifarNet
from lit_kd.models.cifar.cnn32 import Cnn32
from lit_kd.models.cifar.mobilenetv2 import MobileNetV2Cifar
from lit_kd.models.cifar.resnet import CifarResNet
from lit_kd.models.cifar.shufflenet import ShuffleNetV1Cifar, ShuffleNetV2Cifar
from lit_kd.models.cifar.vgg import CifarVGG
from lit_kd.models.cifar.wrn import WideResNet

__all__ = [
    "ZOO_MODELS",
    "CifarNet",
    "Cnn32",
    "CifarResNet",
    "CifarVGG",
    "MobileNetV2Cifar",
    "ShuffleNetV1Cifar",
    "ShuffleNetV2Cifar",
    "WideResNet",
]

#: Names of all registered zoo models, sorted.
ZOO_MODELS: tuple[str, ...] = tuple(
    sorted(
        name
        for name in timm.list_models()
        if timm.models.model_entrypoint(name).__module__.startswith(f"{__name__}.")
    )
)
