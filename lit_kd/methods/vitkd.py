"""ViTKD: the method :class:`ViTKD` and its trainable parts, per-layer projections for mimicking
and the masked-token generator.

Yang, Li, Zeng, Li, Yuan, Li, "ViTKD: Practical Guidelines for ViT feature knowledge distillation"
(2022). The student mimics the teacher's first two layers through linear projections and
*generates* the teacher's last layer from its own last layer with half of the tokens replaced by a
learnable mask token. The mask is an explicit input (:func:`random_token_mask` draws one), so runs
can be reproduced and compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import vitkd_generation_loss, vitkd_mimic_loss
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.models import ModelSpec
from lit_kd.seeding import SeededDraws

__all__ = ["ViTKD", "ViTKDMimic", "ViTKDGeneration", "random_token_mask"]


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


class ViTKD(FeatureDistillation):
    r"""Yang, Li, Zeng, Li, Yuan & Li, "ViTKD: Practical Guidelines for ViT feature knowledge
    distillation" (2022).

    .. math::
        L = w_{ce}\,\mathrm{CE}(z_s, y) + \alpha\,L_{lr}(F^s_{1,2}, F^t_{1,2})
            + \beta\,L_{gen}(G(F^s_{deep}, M), F^t_{deep}, M)

    *Mimicking* of the shallow layers (:func:`~lit_kd.losses.vitkd_mimic_loss`): the patch tokens of
    the student's first two blocks, each through its own linear projection
    (:class:`ViTKDMimic`), regress the teacher's. *Generation* of the deep layer
    (:func:`~lit_kd.losses.vitkd_generation_loss`): the student's last-layer patch tokens (after
    the final norm), with a random ``mask_ratio`` of them replaced by a learnable mask token, go
    through a small convolutional generator (:class:`ViTKDGeneration`) that must produce the
    teacher's masked tokens. Class and distillation tokens are left out (each network's
    ``num_prefix_tokens``). The masks are drawn per batch from a generator seeded by the run's seed,
    the rank and the batches seen (checkpointed: a resumed run draws the same masks).

    Tokens are read by :class:`~lit_kd.taps.FeatureTap` hooks on the named modules of timm ViTs
    (``blocks.0``, ``blocks.1`` and ``norm``: whole token sequences, prefix tokens first); student
    and teacher need the same patch grid. Defaults are the official DeiT configs
    (``alpha_vitkd`` 3e-5, ``beta_vitkd`` 3e-6, ``lambda_vitkd`` 0.5) with the plain CE of the
    student (label smoothing as the run sets it; DeiT's recipe 0.1).

    Args:
        shallow_layers: the mimicked layers: stage indices (``feature_info``) or module names.
        deep_layer: the generated layer (module name; ``"norm"``: the last block after the final norm).
        alpha: weight of the mimicking loss.
        beta: weight of the generation loss.
        mask_ratio: :math:`\lambda`, the fraction of deep tokens masked.
        ce_weight: weight of the cross-entropy.
        kd_weight: weight of Hinton's :math:`T^2`-KL term on the logits (0: off, as in ViTKD alone).
        temperature: its temperature.
        probe_size: image side of the dummy forward that sizes the projections (the networks'
            own ``input_size`` when they have one).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        shallow_layers: Sequence[int | str] = ("blocks.0", "blocks.1"),
        deep_layer: str = "norm",
        alpha: float = 3e-5,
        beta: float = 3e-6,
        mask_ratio: float = 0.5,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 1.0,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        layers = [*shallow_layers, deep_layer]
        super().__init__(student, teacher, layers, layers, ce_weight=ce_weight, kd_weight=kd_weight,
                         temperature=temperature, probe_size=probe_size, **kwargs)
        self.student_prefix = int(getattr(self.student, "num_prefix_tokens", 0))
        self.teacher_prefix = int(getattr(self.teacher, "num_prefix_tokens", 0))
        shapes = {"student": (self.student_shapes, self.student_prefix),
                  "teacher": (self.teacher_shapes, self.teacher_prefix)}
        for name, (found, prefix) in shapes.items():
            if any(len(shape) != 2 or shape[0] <= prefix for shape in found):
                raise ValueError(
                    f"ViTKD reads token sequences (tokens, dim) of ViT layers {layers}; the {name} "
                    f"({type(getattr(self, name)).__name__}) gives {found}. Use timm vision transformers (DeiT, "
                    "ViT) for both networks, or name layers whose outputs are token sequences.")
        student_tokens = [shape[0] - self.student_prefix for shape in self.student_shapes]
        teacher_tokens = [shape[0] - self.teacher_prefix for shape in self.teacher_shapes]
        if student_tokens != teacher_tokens:
            raise ValueError(f"ViTKD compares patch tokens one to one, but the student has {student_tokens} and the "
                             f"teacher {teacher_tokens} per layer. Give both the same patch grid (patch size and "
                             "input size).")
        student_dim, teacher_dim = self.student_shapes[0][1], self.teacher_shapes[0][1]
        self.mimic = ViTKDMimic(student_dim, teacher_dim, num_layers=len(shallow_layers))
        self.generation = ViTKDGeneration(self.student_shapes[-1][1], self.teacher_shapes[-1][1])
        self.alpha, self.beta, self.mask_ratio = alpha, beta, mask_ratio
        self.mask_draws = SeededDraws()

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "mimic": self.mimic, "generation": self.generation}

    def next_mask(self, batch: int, num_tokens: int, device: torch.device) -> Tensor:
        """This batch's ``(batch, tokens)`` mask (true: masked), from the run's seed, the rank and the
        number of batches drawn so far (checkpointed)."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        generator = self.mask_draws.next(device, rank)
        return random_token_mask(batch, num_tokens, self.mask_ratio, generator, device)

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        student_patches = [feature[:, self.student_prefix:] for feature in student_features]
        teacher_patches = [feature[:, self.teacher_prefix:] for feature in teacher_features]
        mimicked = self.mimic(torch.stack(student_patches[:-1], dim=1))
        shallow_target = torch.stack(teacher_patches[:-1], dim=1)
        deep, deep_target = student_patches[-1], teacher_patches[-1]
        mask = self.next_mask(deep.shape[0], deep.shape[1], deep.device)
        generated = self.generation(deep, mask)
        return {"mimic": (self.alpha, vitkd_mimic_loss(mimicked, shallow_target)),
                "generation": (self.beta, vitkd_generation_loss(generated, deep_target, mask, self.mask_ratio))}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lit_kd"]["vitkd_masks"] = self.mask_draws.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lit_kd", {}).get("vitkd_masks")
        if state:
            self.mask_draws.load_state_dict(state)
