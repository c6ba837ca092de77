"""ViTKD's trainable parts: per-layer projections for mimicking and the masked-token generator.

Yang, Li, Zeng, Li, Yuan, Li, "ViTKD: Practical Guidelines for ViT feature knowledge distillation"
(2022). The student mimics the teacher's first two layers through linear projections and
*generates* the teacher's last layer from its own last layer with half of the tokens replaced by a
learnable mask token. The mask is an explicit input (:func:`random_token_mask` draws one), so runs
can be reproduced and compared.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ViTKDMimic", "ViTKDGeneration", "random_token_mask"]


def random_token_mask(batch: int, num_tokens: int, mask_ratio: float = 0.5,
                      generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """A ``(batch, num_tokens)`` boolean mask, true for masked tokens, drawn per sample uniformly
    among masks that keep exactly ``int(num_tokens * (1 - mask_ratio))`` tokens (the official
    rule: the tokens with the smallest uniform noise are kept)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    keep = int(num_tokens * (1 - mask_ratio))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    order = torch.argsort(noise, dim=1)
    mask = torch.ones(batch, num_tokens, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, order[:, :keep], False)
    return mask


class ViTKDMimic(nn.Module):
    """One linear projection per shallow layer, student width -> teacher width (identity when the
    widths are equal, as in the official code).

    Args:
        student_dim: student token width.
        teacher_dim: teacher token width.
        num_layers: shallow layers mimicked (2 in the paper: the first two blocks).
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.projections = (nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(num_layers))
                            if student_dim != teacher_dim else None)

    def forward(self, student_tokens: Tensor) -> Tensor:
        """``(B, layers, N, D_s)`` -> ``(B, layers, N, D_t)``."""
        if student_tokens.dim() != 4 or student_tokens.shape[1] != self.num_layers:
            raise ValueError(f"ViTKDMimic takes (batch, {self.num_layers} layers, tokens, dim), "
                             f"got {tuple(student_tokens.shape)}.")
        if self.projections is None:
            return student_tokens
        return torch.stack([proj(student_tokens[:, index]) for index, proj in enumerate(self.projections)], dim=1)


class ViTKDGeneration(nn.Module):
    """The generator of the deep layer: project to the teacher's width, replace the masked tokens
    by a learnable mask token, and run two 3×3 convolutions (ReLU between) over the token grid.

    Args:
        student_dim: student token width.
        teacher_dim: teacher token width.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.align = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, teacher_dim))
        self.generation = nn.Sequential(nn.Conv2d(teacher_dim, teacher_dim, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(teacher_dim, teacher_dim, 3, padding=1))

    def forward(self, student_tokens: Tensor, mask: Tensor) -> Tensor:
        """``(B, N, D_s)`` patch tokens (N a square) and a ``(B, N)`` mask -> generated ``(B, N, D_t)``."""
        if student_tokens.dim() != 3:
            raise ValueError(f"ViTKDGeneration takes (batch, tokens, dim), got {tuple(student_tokens.shape)}.")
        batch, length, _ = student_tokens.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"The generator runs on a square token grid; {length} tokens are not a square "
                             "(pass the patch tokens without the class token).")
        if mask.shape != (batch, length):
            raise ValueError(f"The mask must be (batch, tokens) = {(batch, length)}, got {tuple(mask.shape)}.")
        tokens = self.align(student_tokens) if self.align is not None else student_tokens
        tokens = torch.where(mask.bool().unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        grid = tokens.transpose(1, 2).reshape(batch, -1, side, side)
        return self.generation(grid).flatten(2).transpose(1, 2)
