"""OFD's trainable parts: the connectors (conv + BN) and the teacher margins they are compared with.

Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).
Features are taken before the ReLU (``FeatureTap(..., preact=True)`` or the BN module by name) at
the end of each stage; the student's go through a connector to the teacher's width, the teacher's
through the margin ReLU :math:`\max(x, m)` with margins from the teacher's BN statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses.overhaul import Reduction, ofd_loss, ofd_margin
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec
from lit_kd.models.cifar.wrn import WideResNet
from lit_kd.taps import feature_info

__all__ = ["OFDConnector", "OFDDistillation", "OFD", "norms_before_relu", "bn_margin"]


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


def bn_margin(norm: nn.Module) -> Tensor:
    """The margins of :func:`lit_kd.losses.ofd_margin` from a BN's weight and bias, also for channels
    whose scale is zero (an untrained timm block's last BN): there the response is the constant
    bias :math:`\\beta`, and the margin is its limit :math:`\\min(\\beta, 0)` (the official code
    divides by zero)."""
    weight, bias = norm.weight.detach(), norm.bias.detach()
    zero = weight == 0
    if not bool(zero.any()):
        return ofd_margin(weight, bias)
    margin = ofd_margin(torch.where(zero, torch.ones_like(weight), weight), bias)
    return torch.where(zero, bias.clamp(max=0).to(margin.dtype), margin)


class OFDDistillation(nn.Module):
    """Connectors for several feature positions plus the teacher margins (buffers), and the loss.

    Args:
        student_channels: student channels per position, shallow to deep.
        teacher_channels: teacher channels per position.
        teacher_norms: the teacher's BN before each position's ReLU; their weight/bias give the
            margins (:func:`bn_margin`, i.e. :func:`lit_kd.losses.ofd_margin`), fixed at construction as
            in the paper.
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
            self.register_buffer(f"margin{index}", bn_margin(norm))
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


def _is_norm(module: nn.Module | None) -> bool:
    return isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm))


def norms_before_relu(model: nn.Module, layers: Sequence[Layer]) -> list[str]:
    """The module name of the batch norm whose statistics describe each tapped pre-ReLU feature.

    What OFD's margins need (the official ``get_bn_before_relu``): a layer named by a BN module is
    that BN; for the stage outputs of the lit_kd CIFAR zoo and of timm ResNets, the last block's
    last BN (``layer3.4.bn2``; ``bn3`` for bottlenecks); for the pre-activation WRNs, the BN that
    normalizes the stage output next (``block2.0.bn1``, ``block3.0.bn1``, the final ``bn1``), as in
    the official code; otherwise the last BN inside the tapped module (VGG blocks). A ValueError
    asks for explicit names where none of these applies.
    """
    modules = dict(model.named_modules())
    stages = feature_info(model)
    names: list[str] = []
    for layer in layers:
        if isinstance(layer, int):
            if not -len(stages) <= layer < len(stages):
                raise ValueError(f"Stage {layer} does not exist: {type(model).__name__} has {len(stages)} stages.")
            name = stages[layer]["module"]
        else:
            name = str(layer)
        module = modules.get(name)
        found = _norm_for(model, name, module, modules) if module is not None else None
        if found is None:
            raise ValueError(
                f"OFD cannot tell which batch norm precedes the ReLU of {type(model).__name__}'s layer {layer!r}. "
                "Name the teacher's BN before each tapped ReLU with teacher_norms (module names, e.g. "
                "'layer1.1.bn2')."
            )
        names.append(found)
    return names


def _norm_for(model: nn.Module, name: str, module: nn.Module, modules: dict[str, nn.Module]) -> str | None:
    if _is_norm(module):
        return name
    if isinstance(model, WideResNet):  # pre-activation: the next BN normalizes this output
        following = {"conv1": "block1.0.bn1", "block1": "block2.0.bn1", "block2": "block3.0.bn1", "act": "bn1",
                     "bn1": "bn1", "block3": "bn1"}
        candidate = following.get(name)
        return candidate if candidate in modules and _is_norm(modules[candidate]) else None
    children = list(module.children())
    if children and isinstance(module, nn.Sequential):
        last = children[-1]
        for attribute in ("bn3", "bn2"):  # residual blocks: the BN added to the shortcut before the ReLU
            if _is_norm(getattr(last, attribute, None)):
                return f"{name}.{len(children) - 1}.{attribute}"
    inner = [child for child, sub in module.named_modules() if child and _is_norm(sub)]
    return f"{name}.{inner[-1]}" if inner else None


class OFD(FeatureDistillation):
    r"""Heo, Kim, Yun, Park, Kwak & Choi, "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \sum_{i=1}^{n} \frac{1}{2^{\,n-i}} \,
            \frac{1}{B} \, d_p\big(\max(f^t_i, m_i), \, r_i(f^s_i)\big)

    on pre-ReLU features: the teacher's through the margin ReLU :math:`\max(x, m)` with per-channel
    margins :math:`m = \mathbb{E}[x \mid x < 0]` from its BN statistics (:func:`lit_kd.losses.ofd_margin`),
    the student's through a connector (1×1 conv + BN, :class:`OFDConnector`, trainable with the
    student), compared by the partial L2 distance :math:`d_p` that ignores a student response below
    a negative teacher response (:func:`lit_kd.losses.ofd_loss`). The deepest position has weight 1,
    each shallower one half of the next.

    **Weight.** The official training scripts divide the summed distance by the batch size and 1000
    (CIFAR) or 10000 (ImageNet): ``ofd_weight`` 1e-3 (the default) or 1e-4 with the per-batch mean
    computed here; mdistiller's ``FEAT_WEIGHT`` 1e-3 on its ``mean(0).sum()`` is the same value.

    **Features.** Pre-ReLU outputs of every stage after the stem (``preact=True``, the CIFAR zoo;
    mdistiller's ``preact_feats[1:]``). Margins come from the teacher's BN before each ReLU,
    found by :func:`norms_before_relu` (the official ``get_bn_before_relu``) or named in
    ``teacher_norms``. For models without ``preact`` (timm), tap BN modules by name with
    ``preact=False`` (e.g. ``layer4.1.bn2``): the tapped feature is then the BN output, which for a
    residual block lacks the shortcut that the official ResNets add before their ReLU.

    **mdistiller's variant.** ``pool_teacher=True`` average-pools a teacher map to the student's
    size (mdistiller); by default the sizes must match (the paper, the clovaai code).
    ``kernel_size`` sets mdistiller's connector kernel. Both official codes run the *teacher* in
    training mode (batch statistics in its BN layers) while distilling; lit_kd keeps the teacher in
    eval mode, frozen, as for every method.

    Args:
        student_layers: student positions; ``None``: every stage after the stem.
        teacher_layers: the teacher's positions; ``None``: every stage after the stem.
        preact: read the stage features before their ReLU (both networks).
        teacher_norms: the teacher BN (module name) before each tapped ReLU; ``None``: found by
            :func:`norms_before_relu`.
        ofd_weight: :math:`\beta`.
        kernel_size: the connectors' kernel size (1 in the paper).
        pool_teacher: pool teacher maps to the student's spatial size (mdistiller).
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        preact: bool = True,
        teacher_norms: Sequence[str] | None = None,
        ofd_weight: float = 1e-3,
        kernel_size: int = 1,
        pool_teacher: bool = False,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, preact=preact, ce_weight=ce_weight,
                         **kwargs)
        count = self.require_pairs("OFD")
        self.require_feature_maps("OFD")
        teacher_modules = dict(self.teacher.named_modules())
        if not preact:
            for role, network, layers in (("student", self.student, self.student_tap.layers),
                                          ("teacher", self.teacher, self.teacher_tap.layers)):
                modules = dict(network.named_modules())
                plain = [layer for layer in layers if not (isinstance(layer, str) and _is_norm(modules.get(layer)))]
                if plain:
                    raise ValueError(
                        f"OFD compares features before their ReLU, but preact=False and the {role} layers {plain} are "
                        "not batch-norm modules. Set preact: true (CIFAR zoo), or name the BN before each ReLU "
                        "(e.g. 'layer4.1.bn2' for timm ResNets)."
                    )
        if teacher_norms is None:
            teacher_norms = norms_before_relu(self.teacher, self.teacher_tap.layers)
        teacher_norms = list(teacher_norms)
        if len(teacher_norms) != count:
            raise ValueError(f"teacher_norms needs one BN name per teacher layer ({count}); got {teacher_norms}.")
        missing = [n for n in teacher_norms if not _is_norm(teacher_modules.get(n))]
        if missing:
            raise ValueError(f"teacher_norms {missing} are not batch-norm modules of the teacher "
                             f"({type(self.teacher).__name__}).")
        for index, (s, t) in enumerate(zip(self.student_shapes, self.teacher_shapes)):
            if not pool_teacher and s[1:] != t[1:]:
                raise ValueError(
                    f"OFD position {index}: the student map {s} and the teacher map {t} differ in spatial size. The "
                    "connector keeps the size: pair stages of one size, or set pool_teacher: true (mdistiller pools "
                    "the teacher map to the student's size)."
                )
            if pool_teacher and (s[1] > t[1] or s[2] > t[2]):
                raise ValueError(f"OFD position {index}: pool_teacher pools the teacher map {t} down to the student's "
                                 f"{s}, which is larger. Pair stages where the teacher map is at least as large.")
        self.distillation = OFDDistillation([s[0] for s in self.student_shapes], [t[0] for t in self.teacher_shapes],
                                            [teacher_modules[n] for n in teacher_norms], kernel_size, pool_teacher)
        self.teacher_norms = teacher_norms
        self.ofd_weight = ofd_weight

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "connectors": self.distillation}

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        return {"ofd": (self.ofd_weight, self.distillation(student_features, teacher_features, "batchmean"))}
