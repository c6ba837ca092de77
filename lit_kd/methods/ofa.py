"""OFA: the method :class:`OFA` and its stage branches, which map a student stage's feature to
logits, so that any architecture's features meet the teacher in logit space.

Hao, Guo, Han, Wang, Xu, Xu, Wang, "One-for-All: Bridge the Gap Between Heterogeneous
Architectures in Knowledge Distillation" (NeurIPS 2023). Each branch's logits are distilled with
:func:`lit_kd.losses.ofa_loss`.

* CNN student (feature maps): separable-convolution blocks that halve the size and double the
  width down to the last stage's size (a 1×1 conv at the last stage), global average pooling, linear.
* ViT/MLP student (token sequences): patch merging down to a 7×7 grid, ``max(4 - stage, 1)``
  transformer blocks, the class token (or the mean token), linear.

:class:`OFABranches` builds them from a timm model's ``feature_info`` and one dummy forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import ofa_loss
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.models import ModelSpec
from lit_kd.taps import FeatureTap, feature_channels

__all__ = ["OFA", "SeparableDownsample", "OFACNNBranch", "PatchMerging", "TransformerBlock", "OFAViTBranch",
           "OFABranches", "ofa_stage_layers", "init_ofa_weights"]


class SeparableDownsample(nn.Sequential):
    """Two depthwise-separable 3×3 convolutions (the first with stride 2), each followed by BN and
    ReLU: halves the spatial size and changes the width to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, in_channels, 1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class OFACNNBranch(nn.Module):
    """Stage branch for a feature map ``(B, C, H, W)``.

    Args:
        in_channels: channels of the stage feature.
        num_downsamples: how many stages follow this one; that many :class:`SeparableDownsample`
            blocks (width doubling, the last one to ``feature_dim``), or a 1×1 conv when 0.
        feature_dim: width before the classifier (official: the larger of the student's and
            the teacher's final feature widths).
        num_classes: the teacher's classes.
    """

    def __init__(self, in_channels: int, num_downsamples: int, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_downsamples < 0:
            raise ValueError(f"num_downsamples must be >= 0, got {num_downsamples}")
        if num_downsamples == 0:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, feature_dim, 1))
        else:
            blocks, width = [], in_channels
            for index in range(num_downsamples):
                out = feature_dim if index == num_downsamples - 1 else 2 * width
                blocks.append(SeparableDownsample(width, out))
                width *= 2
            self.downsample = nn.Sequential(*blocks)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, feature: Tensor) -> Tensor:
        if feature.dim() != 4:
            raise ValueError(f"OFACNNBranch takes (B, C, H, W) feature maps, got shape {tuple(feature.shape)}.")
        return self.head(self.downsample(feature).mean(dim=(2, 3)))


class PatchMerging(nn.Module):
    """Swin-style patch merging of a token grid: each 2×2 neighbourhood is concatenated (order:
    (0,0), (1,0), (0,1), (1,1) as row, column offsets), layer-normalised and projected, halving the grid."""

    def __init__(self, grid_size: tuple[int, int], dim: int, out_dim: int, activation: bool) -> None:
        super().__init__()
        if grid_size[0] % 2 or grid_size[1] % 2:
            raise ValueError(f"Patch merging needs an even token grid, got {grid_size}.")
        self.grid_size = grid_size
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.act = nn.GELU() if activation else nn.Identity()

    def forward(self, tokens: Tensor) -> Tensor:
        batch, length, dim = tokens.shape
        height, width = self.grid_size
        if length != height * width:
            raise ValueError(f"PatchMerging was built for a {height}x{width} grid, got {length} tokens.")
        grid = tokens.reshape(batch, height, width, dim)
        merged = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]],
                           dim=-1)
        return self.act(self.reduction(self.norm(merged.reshape(batch, -1, 4 * dim))))


class TransformerBlock(nn.Module):
    """A pre-norm ViT block (multi-head self-attention and a GELU MLP, each residual), as timm's
    ``Block(dim, num_heads)`` that the official branches use: no query/key/value bias, MLP ratio 4,
    LayerNorm eps 1e-5."""

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TransformerBlock: dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(self.norm1(tokens)).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        tokens = tokens + self.proj(attended.transpose(1, 2).reshape(batch, length, dim))
        return tokens + self.fc2(F.gelu(self.fc1(self.norm2(tokens))))


class OFAViTBranch(nn.Module):
    """Stage branch for ViT/MLP tokens ``(B, prefix + H*W, D)`` or maps ``(B, D, H, W)``.

    The patch tokens (not the prefix tokens) are merged ``max(floor(log2(grid / final_grid)), 0)``
    times (the first merge to ``feature_dim`` with GELU, the last without activation when there
    are several), then ``num_blocks`` transformer blocks run over prefix and patch tokens; the
    classifier reads the first prefix token (the class token) or, without prefix tokens, the mean
    token.

    Args:
        embed_dim: width of the stage's tokens.
        grid_size: the patch-token grid (height, width) or its side.
        num_blocks: transformer blocks (official: ``max(4 - stage, 1)``).
        feature_dim: width of the blocks and the classifier input (official: the student's final
            width, which for a ViT is ``embed_dim``); default ``embed_dim``.
        num_classes: the teacher's classes.
        num_prefix_tokens: class/distillation tokens in front of the patch tokens (0 for maps
            from :class:`lit_kd.taps.FeatureTap`, which drops them).
        final_grid: the grid side the merging aims at (7 in the official code).
        num_heads: attention heads of the blocks (4 in the official code).
    """

    def __init__(self, embed_dim: int, grid_size: int | tuple[int, int], num_blocks: int, num_classes: int,
                 feature_dim: int | None = None, num_prefix_tokens: int = 0, final_grid: int = 7,
                 num_heads: int = 4) -> None:
        super().__init__()
        grid = (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))
        feature_dim = embed_dim if feature_dim is None else feature_dim
        merges = max(int(math.log2(grid[0] / final_grid)), 0)
        if merges == 0 and feature_dim != embed_dim:
            raise ValueError(f"Without patch merging (grid {grid}) the blocks run at the token width {embed_dim}; "
                             f"feature_dim {feature_dim} would not fit. Leave feature_dim unset.")
        layers = []
        for index in range(merges):
            size = (grid[0] // 2**index, grid[1] // 2**index)
            # Official quirk kept: the first merge always has GELU, later ones all but the last.
            activation = index == 0 or index != merges - 1
            layers.append(PatchMerging(size, embed_dim if index == 0 else feature_dim, feature_dim, activation))
        self.grid_size = grid
        self.num_prefix_tokens = num_prefix_tokens
        self.merge = nn.Sequential(*layers)
        self.blocks = nn.Sequential(*[TransformerBlock(feature_dim, num_heads) for _ in range(num_blocks)])
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, feature: Tensor) -> Tensor:
        if feature.dim() == 4:
            if self.num_prefix_tokens:
                raise ValueError("A (B, D, H, W) map has no prefix tokens; build the branch with num_prefix_tokens=0.")
            feature = feature.flatten(2).transpose(1, 2)
        if feature.dim() != 3:
            raise ValueError(f"OFAViTBranch takes (B, tokens, D) or (B, D, H, W), got shape {tuple(feature.shape)}.")
        prefix, patches = feature[:, :self.num_prefix_tokens], feature[:, self.num_prefix_tokens:]
        tokens = self.blocks(torch.cat([prefix, self.merge(patches)], dim=1))
        pooled = tokens[:, 0] if self.num_prefix_tokens else tokens.mean(dim=1)
        return self.head(pooled)


def init_ofa_weights(module: nn.Module) -> None:
    """The official initialisation: convs Kaiming normal (fan-out, ReLU), BN 1/0, linears
    truncated normal (std 0.02, cut at ±2) with zero bias; LayerNorms stay 1/0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def ofa_stage_layers(feature_info: Sequence[dict], num_stages: int = 4) -> list[int]:
    """Indices into ``feature_info`` of OFA's stages 1..n.

    * Hierarchical models (CNNs, Swin): the last entry of each distinct reduction, at most the
      last ``num_stages`` of them (timm ResNets: ``layer1..layer4``; the CIFAR ResNets have 3).
    * Isotropic models (ViT, MLP-Mixer: one reduction for all blocks): the blocks at 1/6, 1/3,
      5/6 and all of the depth (blocks 1, 3, 9, 11 of 12, the official choice for ViTs; lit_kd
      generalises it to other depths).
    """
    reductions = [int(info["reduction"]) for info in feature_info]
    if not reductions:
        raise ValueError("The model has no feature_info; pass the stage layers explicitly.")
    if len(set(reductions)) == 1:
        depth = len(reductions)
        fractions = (1 / 6, 1 / 3, 5 / 6, 1.0)[-num_stages:]
        return [max(round(depth * f) - 1, 0) for f in fractions]
    last_of_reduction = [i for i in range(len(reductions)) if i == len(reductions) - 1
                         or reductions[i + 1] != reductions[i]]
    return last_of_reduction[-num_stages:]


class OFABranches(nn.Module):
    """One OFA branch per chosen student stage, built from a timm model's ``feature_info``.

    Args:
        student: a timm model (or lit_kd CIFAR-zoo model) with ``feature_info`` and ``num_features``.
        num_classes: the teacher's classes.
        teacher_feature_dim: the teacher's final feature width (CNN branches end at the larger of
            it and the student's).
        stages: OFA stage numbers (1-based, default all); features are tapped at
            :func:`ofa_stage_layers`.
        image_size: input side for the one dummy forward that measures the feature shapes.
        class_token: for isotropic students with prefix tokens (ViTs), tap the blocks' whole token
            sequences and classify each branch from its class token, as the official code does;
            ``False``: tap the patch tokens as maps (stage indices) and classify the mean token.

    ``forward(features)`` takes the stage features in the order of ``stages`` (as tapped by
    ``FeatureTap(student, branches.tap_layers)``) and returns one logits tensor per stage.
    ``layers`` are the stages' indices into ``feature_info``; ``tap_layers`` what to tap (the
    same indices, or the blocks' module names in class-token mode).
    """

    def __init__(self, student: nn.Module, num_classes: int, teacher_feature_dim: int,
                 stages: Sequence[int] | None = None, image_size: int = 224, class_token: bool = False) -> None:
        super().__init__()
        if getattr(student, "feature_info", None) is None:
            raise ValueError(f"OFA builds its branches from the student's stages (feature_info), and "
                             f"{type(student).__name__} has none. Use a timm model (CNN, ViT or MLP) or a lit_kd "
                             "CIFAR-zoo model, or give your network a timm-style feature_info list.")
        info = student.feature_info.get_dicts() if hasattr(student.feature_info, "get_dicts") \
            else list(student.feature_info)
        stage_layers = ofa_stage_layers(info)
        count = len(stage_layers)
        stages = list(range(1, count + 1)) if stages is None else [int(s) for s in stages]
        for stage in stages:
            if not 1 <= stage <= count:
                raise ValueError(f"OFA stage {stage} does not exist: the student has stages 1..{count}.")
        self.stages = stages
        self.layers = [stage_layers[stage - 1] for stage in stages]
        isotropic = len({int(i["reduction"]) for i in info}) == 1
        prefix = int(getattr(student, "num_prefix_tokens", 0)) if isotropic and class_token else 0
        # Whole token sequences come from hooks on the blocks (module names); maps from stage indices.
        self.tap_layers: list[int | str] = [info[layer]["module"] for layer in self.layers] if prefix \
            else list(self.layers)
        shapes = feature_channels(FeatureTap(student, self.tap_layers), image_size)
        student_dim = int(student.num_features)
        branches = []
        for stage, shape in zip(stages, shapes):
            if prefix:
                length, channels = shape
                side = math.isqrt(length - prefix)
                if side * side != length - prefix:
                    raise ValueError(f"Stage {stage} of {type(student).__name__} has {length - prefix} patch tokens, "
                                     "not a square grid; use class_token=False.")
                branches.append(OFAViTBranch(channels, side, max(4 - stage, 1), num_classes, feature_dim=student_dim,
                                             num_prefix_tokens=prefix))
                continue
            channels, height, width = shape
            if isotropic:
                branches.append(OFAViTBranch(channels, (height, width), max(4 - stage, 1), num_classes,
                                             feature_dim=student_dim))
            else:
                branches.append(OFACNNBranch(channels, count - stage, max(student_dim, teacher_feature_dim),
                                             num_classes))
        self.branches = nn.ModuleList(branches)
        init_ofa_weights(self)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.branches):
            raise ValueError(f"OFABranches has {len(self.branches)} stages {self.stages}; "
                             f"got {len(features)} features.")
        return [branch(feature) for branch, feature in zip(self.branches, features)]


class OFA(FeatureDistillation):
    r"""Hao, Guo, Han, Wang, Xu, Xu & Wang, "One-for-All: Bridge the Gap Between Heterogeneous
    Architectures in Knowledge Distillation" (NeurIPS 2023).

    .. math::
        L = w_{ce}\,\mathrm{CE}(z_s, y) + w_{kd}\,L_{OFA}(z_s, z_t; \epsilon_{last})
            + w_{ofa} \sum_{k \in \text{stages}} L_{OFA}(\mathrm{branch}_k(f^s_k), z_t; \epsilon_k)

    with OFA's adaptive target-enhanced loss :func:`~lit_kd.losses.ofa_loss`
    (:math:`-\sum_c [(p^t_c + y_c)^{\epsilon} - y_c] \log p^s_c`). Every stage of the student gets
    a trainable branch that maps its feature to the teacher's logit space
    (:class:`OFABranches`, built from the student's ``feature_info`` for any timm or CIFAR-zoo
    architecture: separable-convolution branches for CNNs, patch merging + transformer blocks for
    ViTs/MLPs), so teacher and student may be of different families (CNN, ViT, MLP). The teacher
    contributes only its logits. Branches are trained and checkpointed, never exported.

    Defaults are the official command-line defaults (all weights 1, :math:`T = 1`,
    :math:`\epsilon = 1`, all stages); the README's ImageNet DeiT-T -> ResNet-18 run uses
    ``epsilon: 1.5``. The CE term uses the run's ``label_smoothing`` (0.1 in the official configs).
    Official quirks kept: no :math:`T^2`; soft (mixup) targets enter the target mask as their
    argmax. ViT students classify each branch from the class token (the official
    ``TokenFilter``; ``class_token=False`` uses the mean patch token); lit_kd picks the stages of
    students of any depth (:func:`ofa_stage_layers`: the official blocks 1, 3, 9, 11 of a 12-block
    ViT; the last block of each resolution for CNNs, three stages for the CIFAR ResNets).

    Args:
        stages: OFA stage numbers (1-based) that get a branch; ``None``: all.
        epsilon: :math:`\epsilon` for every term, or one per stage plus one (last) for the logits.
        temperature: softmax temperature :math:`T` of every OFA term.
        ce_weight: weight of the cross-entropy (``--gt-loss-weight``).
        kd_weight: weight of the OFA loss on the student's logits (``--kd-loss-weight``).
        ofa_weight: weight of the summed branch losses (``--ofa-loss-weight``).
        class_token: ViT students: branches read the class token (official) or the mean token.
        probe_size: image side of the dummy forward that sizes the branches (the student's own
            ``input_size`` when it has one).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments (``label_smoothing``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        stages: Sequence[int] | None = None,
        epsilon: float | Sequence[float] = 1.0,
        temperature: float = 1.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        ofa_weight: float = 1.0,
        class_token: bool = True,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        # The teacher gives logits only; the student's taps follow its branches (set below).
        super().__init__(student, teacher, [], [], ce_weight=ce_weight, kd_weight=0.0, temperature=temperature,
                         probe_size=probe_size, **kwargs)
        size = self.student_input.size or probe_size
        teacher_dim = getattr(self.teacher, "num_features", None)
        if teacher_dim is None:
            raise ValueError(f"OFA sizes its CNN branches by the teacher's final feature width (num_features), which "
                             f"{type(self.teacher).__name__} does not declare. Use a timm or lit_kd zoo teacher.")
        self.branches = OFABranches(self.student, self._teacher_classes(), int(teacher_dim), stages, size,
                                    class_token=class_token)
        self.student_tap = FeatureTap(self.student, self.branches.tap_layers)
        self.student_shapes = feature_channels(self.student_tap, size)
        count = len(self.branches.stages)
        epsilons = [float(epsilon)] * (count + 1) if isinstance(epsilon, (int, float)) else [float(e) for e in epsilon]
        if len(epsilons) == 1:
            epsilons *= count + 1
        if len(epsilons) != count + 1 or not all(0 < e < float("inf") for e in epsilons):
            raise ValueError(f"epsilon takes one value, or one per stage ({count}: {self.branches.stages}) plus one "
                             f"for the logits; all finite and > 0. Got {epsilon}.")
        self.epsilons = epsilons
        self.logits_weight, self.ofa_weight = kd_weight, ofa_weight

    @torch.no_grad()
    def _teacher_classes(self) -> int:
        """The teacher's classes (the branches predict them), from one dummy forward."""
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            size = self.teacher_input.size or 32
            param = next(self.teacher.parameters())
            logits = self.teacher(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
        finally:
            self.teacher.train(was_training)
        return int(logits.shape[-1])

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "branches": self.branches}

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        if batch.target is None:
            raise DataContractError("OFA's loss enhances the target class and needs labels, but the batch has none. "
                                    "Give labelled data.")
        branch_losses = [ofa_loss(logits, teacher_logits, batch.target, epsilon, self.temperature)
                         for logits, epsilon in zip(self.branches(student_features), self.epsilons)]
        logits_loss = ofa_loss(student_logits, teacher_logits, batch.target, self.epsilons[-1], self.temperature)
        branches_loss = sum(branch_losses[1:], branch_losses[0])  # summed in the official order
        return {"kd": (self.logits_weight, logits_loss), "ofa": (self.ofa_weight, branches_loss)}
