"""ReviewKD's trainable parts: attention-based fusion (ABF) and the review path over student stages.

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021). The student's
stage features are fused from the deepest to the shallowest: each level reduces its own feature
to a shared width, merges it with the (upsampled) fused feature of the level below it through
two spatial attention maps, and maps the result to the teacher's width. Every level's output is
compared with the teacher's feature of that level by :func:`lit_kd.losses.review_kd_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import review_kd_loss
from lit_kd.methods.feature import FeatureDistillation, Layer, stages_after_stem
from lit_kd.models import ModelSpec
from lit_kd.taps import PRE_LOGITS

__all__ = ["AttentionBasedFusion", "KnowledgeReview", "ReviewKD"]

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class AttentionBasedFusion(nn.Module):
    """One level of the review path (the paper's ABF module).

    ``reduce`` (1×1 conv + BN) brings the student feature to ``mid_channels``; when ``fuse`` is
    set, it is merged with the fused feature of the deeper level, resized (nearest) to this
    level's size, as ``x * a_0 + residual * a_1`` with two attention maps ``a`` predicted by a
    1×1 conv + sigmoid from both; ``output`` (3×3 conv + BN) maps the result to ``out_channels``.

    Args:
        in_channels: channels of the student feature at this level.
        mid_channels: the shared width of the fused features (official: ``min(512, deepest channels)``).
        out_channels: channels of the teacher feature at this level.
        fuse: whether this level receives a deeper fused feature (every level but the deepest).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                    nn.BatchNorm2d(mid_channels))
        self.output = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                    nn.BatchNorm2d(out_channels))
        self.attention = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
                          if fuse else None)
        # The official initialisation of both convolutions (kaiming uniform with a=1).
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.output[0].weight, a=1)

    def forward(self, feature: Tensor, residual: Tensor | None = None,
                out_size: Size | None = None) -> tuple[Tensor, Tensor]:
        """``(output, fused)``: the level's output (teacher width, ``out_size``) and the fused
        feature handed to the next shallower level."""
        fused = self.reduce(feature)
        if self.attention is not None:
            if residual is None:
                raise ValueError("This fusion level merges a deeper level's fused feature: pass `residual`.")
            residual = F.interpolate(residual, size=fused.shape[-2:], mode="nearest")
            weights = self.attention(torch.cat([fused, residual], dim=1))
            fused = fused * weights[:, 0:1] + residual * weights[:, 1:2]
        elif residual is not None:
            raise ValueError("The deepest fusion level has no attention branch; it takes no `residual`.")
        if out_size is not None and tuple(fused.shape[-2:]) != _pair(out_size):
            fused = F.interpolate(fused, size=_pair(out_size), mode="nearest")
        return self.output(fused), fused


class KnowledgeReview(nn.Module):
    """The review path: one :class:`AttentionBasedFusion` per student level, run deepest first.

    Args:
        in_channels: student channels per level, shallow to deep (the deepest level is usually the
            globally pooled feature as a 1×1 map, as in the paper).
        out_channels: teacher channels per level, same order.
        mid_channels: shared fused width; default ``min(512, in_channels[-1])`` as in the official code.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int],
                 mid_channels: int | None = None) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels) or not in_channels:
            raise ValueError(
                f"KnowledgeReview needs one teacher width per student level; got in_channels {list(in_channels)} "
                f"and out_channels {list(out_channels)}."
            )
        mid = min(512, int(in_channels[-1])) if mid_channels is None else int(mid_channels)
        last = len(in_channels) - 1
        self.fusions = nn.ModuleList(
            AttentionBasedFusion(int(c_in), mid, int(c_out), fuse=index < last)
            for index, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        )

    def forward(self, student_features: Sequence[Tensor],
                out_sizes: Sequence[Size] | None = None) -> list[Tensor]:
        """The review outputs, shallow to deep like ``student_features``.

        Args:
            student_features: one feature per level, shallow to deep.
            out_sizes: the teacher's spatial size per level (outputs are resized, nearest, before
                the output conv); ``None`` keeps each level's own size.
        """
        count = len(self.fusions)
        if len(student_features) != count:
            raise ValueError(f"KnowledgeReview was built for {count} levels, got {len(student_features)} features.")
        if out_sizes is not None and len(out_sizes) != count:
            raise ValueError(f"out_sizes needs one size per level ({count}), got {len(out_sizes)}.")
        outputs: list[Tensor] = [student_features[0]] * count
        residual: Tensor | None = None
        for index in reversed(range(count)):
            size = None if out_sizes is None else out_sizes[index]
            outputs[index], residual = self.fusions[index](student_features[index], residual, size)
        return outputs


def _as_map(feature: Tensor) -> Tensor:
    """A pooled ``(B, C)`` embedding as a ``(B, C, 1, 1)`` map; maps pass unchanged."""
    return feature[:, :, None, None] if feature.dim() == 2 else feature


class ReviewKD(FeatureDistillation):
    r"""Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \lambda(e) \, w_{review} \sum_{i=1}^{n}
            L_{HCL}\big(\mathrm{ABF}_i(f^s_i, \dots, f^s_n), f^t_i\big),
        \qquad \lambda(e) = \min(e / e_{warm}, 1)

    The review path (:class:`KnowledgeReview`: one :class:`AttentionBasedFusion` per level, run
    from the deepest level up, each merging its own student feature with the fused deeper ones)
    produces one output per level in the teacher's shape; the hierarchical context loss
    (:func:`lit_kd.losses.review_kd_loss`) compares it with the teacher's feature of that level. The
    review path is a trainable part of the method (optimized, checkpointed, not exported).

    Levels and defaults follow the official code (dvlab-research/ReviewKD, and mdistiller's port):
    the outputs of every stage after the stem plus the pooled embedding as a 1×1 map
    (``"pre_logits"``) for both networks; the teacher's stage features **before** their ReLU
    (``teacher_preact=True``, the official ``preact=True`` teacher), the student's after it on
    CIFAR (mdistiller ``STU_PREACT: False``). The fused width is ``min(512, deepest student
    channels)``. Loss weight 1.0 and a 20-epoch linear warm-up are the official defaults; the
    published CIFAR runs use per-pair weights (resnet32x4→resnet8x4 and wrn_40_2→wrn_16_2: 5.0,
    resnet56→resnet20: 0.6; see ``docs/feature_methods.md``). ImageNet: weight 1.0, no warm-up.

    The warm-up counts epochs from 0, as the official training loop does (no review loss in the
    first epoch); ``warmup_start="mdistiller"`` counts from 1, as mdistiller's trainer does
    (:math:`\lambda = 1/e_{warm}` in the first epoch).

    Args:
        student_layers: student levels, shallow to deep; ``None``: every stage after the stem and
            ``"pre_logits"``.
        teacher_layers: the teacher's levels; ``None``: the same choice.
        teacher_preact: read the teacher's stage features before their ReLU.
        review_weight: :math:`w_{review}`.
        warmup_epochs: :math:`e_{warm}` (0: no warm-up).
        warmup_start: ``"reviewkd"`` (epochs counted from 0) or ``"mdistiller"`` (from 1).
        mid_channels: the fused width (``None``: ``min(512, deepest student channels)``).
        levels: pooled sizes of the hierarchical context loss.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments (``preact``
            for the student, ``kd_weight``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        teacher_preact: bool = True,
        review_weight: float = 1.0,
        warmup_epochs: int = 20,
        warmup_start: Literal["reviewkd", "mdistiller"] = "reviewkd",
        mid_channels: int | None = None,
        levels: Sequence[int] = (4, 2, 1),
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, teacher_preact=teacher_preact,
                         ce_weight=ce_weight, **kwargs)
        self.require_pairs("ReviewKD")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if warmup_start not in ("reviewkd", "mdistiller"):
            raise ValueError(f"warmup_start must be 'reviewkd' or 'mdistiller', got {warmup_start!r}")
        for role, layers, shapes in (("student", self.student_tap.layers, self.student_shapes),
                                     ("teacher", self.teacher_tap.layers, self.teacher_shapes)):
            for layer, shape in zip(layers, shapes):
                if len(shape) not in (1, 3):
                    raise ValueError(f"ReviewKD reads feature maps (C, H, W) or pooled embeddings (C,); the {role} "
                                     f"layer {layer!r} gives {shape}. Choose convolutional stages or 'pre_logits'.")
        self.review = KnowledgeReview([shape[0] for shape in self.student_shapes],
                                      [shape[0] for shape in self.teacher_shapes], mid_channels)
        self.review_weight, self.warmup_epochs, self.warmup_start = review_weight, int(warmup_epochs), warmup_start
        self.levels = tuple(int(level) for level in levels)

    def default_layers(self, network: nn.Module) -> list[Layer]:
        """Every stage after the stem, then the pooled embedding (the official review levels)."""
        return [*stages_after_stem(network), PRE_LOGITS]

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "review": self.review}

    def warmup_factor(self, epoch: int | None = None) -> float:
        """:math:`\lambda(e)` at ``epoch`` (default: the current epoch)."""
        epoch = self.current_epoch if epoch is None else epoch
        if not self.warmup_epochs:
            return 1.0
        counted = epoch + (1 if self.warmup_start == "mdistiller" else 0)
        return min(counted / self.warmup_epochs, 1.0)

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        teacher_maps = [_as_map(f) for f in teacher_features]
        outputs = self.review([_as_map(f) for f in student_features], [tuple(t.shape[-2:]) for t in teacher_maps])
        value = review_kd_loss(outputs, teacher_maps, self.levels)
        return {"review": (self.review_weight * self.warmup_factor(), value)}
