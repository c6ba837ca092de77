"""DMAE: the method :class:`DMAE`, its trainable parts (the student's projection head, the MAE
decoder), its masking of patches and the encoding of the visible ones.

Bai, Wang, Xiao, Wei, Wang, Yuille, Zhou, Xie, "Masked Autoencoders Enable Efficient Knowledge
Distillers" (CVPR 2023). Teacher and student both encode only the visible patches of one masked
image; an intermediate student block, projected to the teacher's width, is aligned with a teacher
block by :func:`lit_kd.losses.dmae_feature_loss`, next to the student's MAE pixel loss
(:func:`lit_kd.losses.mae_reconstruction_loss`). The visible indices are an explicit input
(:func:`random_visible_indices` draws them) so that teacher and student see the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import dmae_feature_loss, mae_reconstruction_loss
from lit_kd.methods.base import DistillationModule, weighted_sum
from lit_kd.models import ModelSpec
from lit_kd.seeding import SeededDraws

__all__ = ["DMAE", "DMAEProjector", "MAEDecoder", "encode_visible", "random_visible_indices", "gather_tokens",
           "sincos_position_embedding"]


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


# ----------------------------------------------------------------------------- masked encoding of a timm ViT

VIT_PARTS = ("patch_embed", "blocks", "norm", "_pos_embed", "num_prefix_tokens", "forward_head")


def check_vit(model: nn.Module, role: str) -> None:
    """A clear error unless ``model`` is a timm vision transformer that can encode a subset of patches."""
    missing = [part for part in VIT_PARTS if not hasattr(model, part)]
    if missing:
        raise ValueError(
            f"DMAE encodes only the visible patches, which needs a timm VisionTransformer as {role} (patch_embed, "
            f"position embeddings, blocks); {type(model).__name__} lacks {missing}. Use e.g. vit_base_patch16_224 "
            "or deit_small_patch16_224.")


def encode_visible(vit: nn.Module, pixels: Tensor, visible_index: Tensor, blocks: Sequence[int],
                   run_all: bool = True) -> tuple[list[Tensor], Tensor | None]:
    """Run a timm ViT on the prefix tokens and the visible patches ``visible_index`` only.

    Patches are embedded with their position embeddings (the ViT's own ``_pos_embed``), the masked
    ones dropped, and the blocks run on what remains, as MAE's encoder does. Returns the outputs of
    ``blocks`` (before the final norm, prefix tokens first) and, with ``run_all``, the final normed
    tokens after the last block; otherwise the blocks after ``max(blocks)`` are not run at all.
    """
    tokens = vit.patch_embed(pixels)
    if tokens.dim() == 4:  # NHWC patch grids (dynamic image size)
        tokens = tokens.flatten(1, 2)
    tokens = vit._pos_embed(tokens)
    prefix = int(vit.num_prefix_tokens)
    tokens = torch.cat([tokens[:, :prefix], gather_tokens(tokens[:, prefix:], visible_index)], dim=1)
    tokens = vit.norm_pre(tokens) if hasattr(vit, "norm_pre") else tokens
    wanted = set(int(b) for b in blocks)
    last = len(vit.blocks) - 1 if run_all else max(wanted)
    outputs: dict[int, Tensor] = {}
    for index in range(last + 1):
        tokens = vit.blocks[index](tokens)
        if index in wanted:
            outputs[index] = tokens
    return [outputs[int(b)] for b in blocks], vit.norm(tokens) if run_all else None


def sincos_position_embedding(dim: int, grid: tuple[int, int], prefix_tokens: int = 1) -> Tensor:
    r"""MAE's fixed 2-D sine-cosine position embedding, ``(prefix + H·W, dim)``, zeros for prefix tokens.

    Half of the channels encode the column, half the row; each half is
    :math:`[\sin(p\,\omega_k), \cos(p\,\omega_k)]` with :math:`\omega_k = 10000^{-k/(d/4)}`,
    :math:`k = 0..d/4-1`.
    """
    if dim % 4:
        raise ValueError(f"The sine-cosine position embedding needs a width divisible by 4, got {dim}.")
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64), torch.arange(grid[1], dtype=torch.float64),
                                indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def one_axis(position: Tensor) -> Tensor:
        angles = position.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([one_axis(cols), one_axis(rows)], dim=1)
    return torch.cat([torch.zeros(prefix_tokens, dim, dtype=torch.float64), table]).float()


class MAEDecoder(nn.Module):
    """MAE's light decoder (He et al., CVPR 2022): a linear map to ``decoder_dim``, a learnable mask
    token in every masked position, fixed sine-cosine position embeddings, ``depth`` transformer
    blocks, a norm and a linear prediction of each patch's pixels (``p·p·channels``, in
    :func:`lit_kd.losses.patchify` order). Defaults of MAE's ``dec512d8b``.

    Args:
        embed_dim: width of the encoder's tokens.
        grid_size: the patch grid (rows, columns).
        patch_size: the patch side ``p``.
        in_chans: image channels.
        decoder_dim: width of the decoder.
        depth: decoder blocks.
        num_heads: attention heads of the blocks.
        num_prefix_tokens: class (and other) tokens in front of the encoder's patch tokens.
    """

    def __init__(self, embed_dim: int, grid_size: tuple[int, int], patch_size: int, in_chans: int = 3,
                 decoder_dim: int = 512, depth: int = 8, num_heads: int = 16, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("position", sincos_position_embedding(decoder_dim, self.grid_size, num_prefix_tokens),
                             persistent=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(decoder_dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
                                      for _ in range(depth)])
        self.norm = norm(decoder_dim)
        self.predict = nn.Linear(decoder_dim, patch_size * patch_size * in_chans)
        # MAE's initialisation: Xavier-uniform linears with zero bias, LayerNorms 1/0, mask token N(0, 0.02).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, visible_index: Tensor) -> Tensor:
        """``(B, prefix + K, D)`` encoded tokens of the visible patches ``visible_index`` (``B×K``) ->
        ``(B, H·W, p·p·C)`` predicted pixels of every patch."""
        tokens = self.embed(latent)
        prefix, visible = tokens[:, :self.num_prefix_tokens], tokens[:, self.num_prefix_tokens:]
        batch, count = visible.shape[0], self.grid_size[0] * self.grid_size[1]
        grid = self.mask_token.to(visible.dtype).expand(batch, count, -1)
        grid = grid.scatter(1, visible_index.unsqueeze(-1).expand(-1, -1, visible.shape[-1]), visible)
        tokens = torch.cat([prefix, grid], dim=1) + self.position.to(visible.dtype)
        return self.predict(self.norm(self.blocks(tokens)))[:, self.num_prefix_tokens:]


# ----------------------------------------------------------------------------- the method

def default_block(depth: int) -> int:
    """The aligned block at three quarters of the depth: block 8 of 12 (ViT-B), 17 of 24 (ViT-L),
    the official choice for DMAE's ViT-L -> ViT-B (0-based)."""
    return max(round(0.75 * depth) - 1, 0)


class DMAE(DistillationModule):
    r"""Bai, Wang, Xiao, Wei, Wang, Yuille, Zhou & Xie, "Masked Autoencoders Enable Efficient Knowledge
    Distillers" (CVPR 2023).

    .. math::
        L = w_{rec}\,L_{MAE}(D(E_s(x_{vis})), x, M)
            + w_{feat} \sum_{(i, j)} \Big\lVert \frac{F^t_j(x_{vis})}{\lVert F^t_j \rVert}
              - \frac{P_i(F^s_i(x_{vis}))}{\lVert P_i(F^s_i) \rVert} \Big\rVert_1
            + w_{ce}\,\mathrm{CE}(z_s(x), y)

    Each step draws one random mask (``mask_ratio`` 0.75 of the patches removed,
    :func:`random_visible_indices`) for the batch. Student and teacher both encode **only the
    visible patches** (and the class token) of that one masked image (:func:`encode_visible`); the
    teacher runs only up to its aligned block, under ``no_grad``. The student's block ``i``,
    projected to the teacher's width (:class:`DMAEProjector`), is aligned with the teacher's block
    ``j`` on the class token and the visible tokens (:func:`~lit_kd.losses.dmae_feature_loss`:
    L1 between L2-normalised tokens). The student also keeps MAE's objective: a light decoder
    (:class:`MAEDecoder`) predicts the pixels of the masked patches
    (:func:`~lit_kd.losses.mae_reconstruction_loss`). Projectors and decoder are trained and
    checkpointed, not exported; the student's classifier is untouched unless ``ce_weight > 0``.

    **What is reproduced.** DMAE is a *pre-training* distillation: the official run
    (``pretrain.sh``) distils an MAE ViT-L into an MAE ViT-B for 100 epochs without labels
    (reconstruction of the original pixels + L1 alignment of student block 8 with teacher block
    17, a linear projector 768 -> 1024; AdamW, base lr 1.5e-4 · batch / 256, weight decay 0.05,
    batch 4096), then fine-tunes the student on the labels (``finetune.sh``, plain supervised
    fine-tuning: in lit_kd a :class:`~lit_kd.methods.Supervised` run from the exported student).
    This module is the first stage with the official defaults (``ce_weight: 0``; the training
    accuracy it logs is the untrained head's on the masked view). Differences: the student is a
    timm ViT (learned position embeddings, where MAE's are fixed sine-cosine; its classifier head is
    carried along unused), the teacher is any timm ViT (e.g. timm's MAE ViT-L,
    ``vit_large_patch16_224.mae``), and the official code's unused teacher decoder pass is skipped.
    ``ce_weight > 0`` adds the cross-entropy of the student on the whole image (one more forward), a
    single-stage variant that is not in the paper.

    Args:
        student_blocks: the aligned student blocks (0-based); ``None``: the block at 3/4 depth
            (8 for a 12-block ViT, as the official ViT-B student).
        teacher_blocks: the teacher blocks they align with, one each; ``None``: 3/4 depth (17 of 24).
        mask_ratio: fraction of patches removed (MAE/DMAE: 0.75).
        projector: ``"linear"`` (official ``fc-1layer``) or ``"mlp"`` (``mlp-1layer``).
        distance: ``"l1"`` (official) or ``"l2"`` of the feature alignment.
        feature_weight: weight of each block's alignment loss (official: 1).
        reconstruction_weight: weight of the MAE pixel loss (official: 1; 0 drops the decoder).
        normalize_target: MAE's ``norm_pix_loss`` (off in DMAE's run).
        decoder_dim: decoder width (512).
        decoder_depth: decoder blocks (8).
        decoder_heads: decoder attention heads (16).
        ce_weight: weight of the cross-entropy on the whole image (0: label-free, as the paper).
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_blocks: Sequence[int] | None = None,
        teacher_blocks: Sequence[int] | None = None,
        mask_ratio: float = 0.75,
        projector: Literal["linear", "mlp"] = "linear",
        distance: Literal["l1", "l2"] = "l1",
        feature_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        normalize_target: bool = False,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        ce_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        check_vit(self.student, "student")
        check_vit(self.teacher, "teacher")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
        grid = tuple(self.student.patch_embed.grid_size)
        if tuple(self.teacher.patch_embed.grid_size) != grid:
            raise ValueError(f"DMAE gives student and teacher the same visible patches, so both need one patch grid; "
                             f"the student has {grid}, the teacher {tuple(self.teacher.patch_embed.grid_size)}. "
                             "Choose patch and input sizes that give the same grid.")
        student_depth, teacher_depth = len(self.student.blocks), len(self.teacher.blocks)
        self.student_blocks = ([default_block(student_depth)] if student_blocks is None
                               else [int(b) for b in student_blocks])
        self.teacher_blocks = ([default_block(teacher_depth)] if teacher_blocks is None
                               else [int(b) for b in teacher_blocks])
        if len(self.student_blocks) != len(self.teacher_blocks) or not self.student_blocks:
            raise ValueError(f"Each aligned student block needs one teacher block; got {self.student_blocks} and "
                             f"{self.teacher_blocks}.")
        for name, chosen, depth in (("student", self.student_blocks, student_depth),
                                    ("teacher", self.teacher_blocks, teacher_depth)):
            if not all(0 <= b < depth for b in chosen):
                raise ValueError(f"The {name} has blocks 0..{depth - 1}; got {chosen}.")
        student_dim, teacher_dim = int(self.student.embed_dim), int(self.teacher.embed_dim)
        self.projectors = nn.ModuleList(DMAEProjector(student_dim, teacher_dim, projector) for _ in self.student_blocks)
        self.patch_size = int(self.student.patch_embed.patch_size[0])
        self.num_patches = grid[0] * grid[1]
        self.decoder = (MAEDecoder(student_dim, grid, self.patch_size, decoder_dim=decoder_dim, depth=decoder_depth,
                                   num_heads=decoder_heads, num_prefix_tokens=int(self.student.num_prefix_tokens))
                        if reconstruction_weight else None)
        self.mask_ratio, self.distance, self.normalize_target = mask_ratio, distance, normalize_target
        self.feature_weight, self.reconstruction_weight = feature_weight, reconstruction_weight
        self.ce_weight = ce_weight
        self.mask_draws = SeededDraws()

    def trainable_modules(self) -> dict[str, nn.Module]:
        parts = {"student": self.student, "projectors": self.projectors}
        return {**parts, "decoder": self.decoder} if self.decoder is not None else parts

    def next_visible(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """This batch's ``(visible_index, mask)``, from the run's seed, the rank and the batches seen
        (checkpointed: a resumed run draws the same masks)."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        generator = self.mask_draws.next(device, rank)
        return random_visible_indices(batch, self.num_patches, self.mask_ratio, generator, device)

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        pixels = self.student_input(batch.image)
        visible, mask = self.next_visible(pixels.shape[0], pixels.device)
        with self.no_teacher_grad():
            teacher_features, _ = encode_visible(self.teacher, self.teacher_input(batch.teacher_image), visible,
                                                 self.teacher_blocks, run_all=False)
        teacher_features = self.in_run_precision(teacher_features, pixels)
        student_features, latent = encode_visible(self.student, pixels, visible, self.student_blocks)
        terms: dict[str, tuple[float, Tensor]] = {}
        for index, (projector, student_feature, teacher_feature) in enumerate(
                zip(self.projectors, student_features, teacher_features)):
            name = "align" if len(self.projectors) == 1 else f"align_{index}"
            terms[name] = (self.feature_weight, dmae_feature_loss(projector(student_feature), teacher_feature,
                                                                  self.distance))
        if self.decoder is not None:
            predicted = self.decoder(latent, visible)
            terms["reconstruction"] = (self.reconstruction_weight,
                                       mae_reconstruction_loss(predicted, pixels, mask, self.patch_size,
                                                               self.normalize_target))
        logits = self.student.forward_head(latent)  # the masked view's logits, for the training accuracy
        if self.ce_weight:
            if batch.target is None:
                raise DataContractError(f"DMAE weighs the cross-entropy by ce_weight={self.ce_weight}, but the batch "
                                        "has no labels. Give labelled data or set ce_weight: 0.")
            logits = self(batch.image)
            terms["ce"] = (self.ce_weight, self.cross_entropy(logits, batch.target))
        return logits, weighted_sum(**terms)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lit_kd"]["dmae_masks"] = self.mask_draws.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lit_kd", {}).get("dmae_masks")
        if state:
            self.mask_draws.load_state_dict(state)
