"""DMAE's trainable part (the student's projection head) and its masking of patches.

Bai, Wang, Xiao, Wei, Wang, Yuille, Zhou, Xie, "Masked Autoencoders Enable Efficient Knowledge
Distillers" (CVPR 2023). Teacher and student both encode only the visible patches of one masked
image; an intermediate student block, projected to the teacher's width, is aligned with a teacher
block by :func:`lit_kd.losses.dmae_feature_loss`, next to the student's MAE pixel loss
(:func:`lit_kd.losses.mae_reconstruction_loss`). The visible indices are an explicit input
(:func:`random_visible_indices` draws them) so that teacher and student see the same patches.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["DMAEProjector", "random_visible_indices", "gather_tokens"]


def random_visible_indices(batch: int, num_patches: int, mask_ratio: float = 0.75,
                           generator: torch.Generator | None = None,
                           device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(visible_index, mask)``: per sample the indices ``(batch, K)`` of ``K = int(num_patches *
    (1 - mask_ratio))`` kept patches (in the order of increasing uniform noise, as MAE draws them)
    and the ``(batch, num_patches)`` mask, 1.0 for removed patches."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves no visible patch of {num_patches}.")
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    visible = torch.argsort(noise, dim=1)[:, :keep]
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask.scatter_(1, visible, 0.0)
    return visible, mask


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """``tokens[b, index[b]]`` for every sample: ``(B, N, D)`` and ``(B, K)`` -> ``(B, K, D)``."""
    if tokens.dim() != 3 or index.dim() != 2 or index.shape[0] != tokens.shape[0]:
        raise ValueError(f"gather_tokens takes (B, N, D) tokens and (B, K) indices; got {tuple(tokens.shape)} "
                         f"and {tuple(index.shape)}.")
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class DMAEProjector(nn.Module):
    """The student's projection head for one aligned block: student width -> teacher width.

    Args:
        student_dim: student token width.
        teacher_dim: teacher token width.
        kind: ``"linear"`` (the official default, ``fc-1layer``) or ``"mlp"`` (``mlp-1layer``:
            linear, GELU, linear, hidden width = teacher width).
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: Literal["linear", "mlp"] = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.layers = nn.Sequential(nn.Linear(student_dim, teacher_dim))
        elif kind == "mlp":
            self.layers = nn.Sequential(nn.Linear(student_dim, teacher_dim), nn.GELU(),
                                        nn.Linear(teacher_dim, teacher_dim))
        else:
            raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, tokens: Tensor) -> Tensor:
        return self.layers(tokens)
