"""ReviewKD's trainable parts: attention-based fusion (ABF) and the review path over student stages.

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021). The student's
stage features are fused from the deepest to the shallowest: each level reduces its own feature
to a shared width, merges it with the (upsampled) fused feature of the level below it through
two spatial attention maps, and maps the result to the teacher's width. Every level's output is
compared with the teacher's feature of that level by :func:`lit_kd.losses.review_kd_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttentionBasedFusion", "KnowledgeReview"]

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
