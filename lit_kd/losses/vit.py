"""Losses for vision-transformer students: DeiT's distillation token, ViTKD, DMAE."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["deit_distillation_loss", "deit_inference_logits", "vitkd_mimic_loss", "vitkd_generation_loss",
           "vitkd_loss", "dmae_feature_loss", "mae_reconstruction_loss", "patchify"]


# --------------------------------------------------------------------------- DeiT

def deit_distillation_loss(class_logits: Tensor, distill_logits: Tensor, teacher_logits: Tensor, target: Tensor,
                           mode: Literal["soft", "hard"] = "hard", alpha: float = 0.5, temperature: float = 1.0,
                           label_smoothing: float = 0.0,
                           soft_reduction: Literal["batchmean", "numel"] = "batchmean") -> Tensor:
    r"""DeiT's loss for a student with a class and a distillation token, Touvron et al., "Training
    data-efficient image transformers & distillation through attention" (ICML 2021).

    The class token's head is trained on the labels, the distillation token's head on the teacher:

    .. math::
        L_{soft} = (1 - \alpha)\, \mathrm{CE}(z_{cls}, y)
                   + \alpha\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(z_t / T) \,\|\,
                   \mathrm{softmax}(z_{dist} / T)\big)

    .. math::
        L_{hard} = (1 - \alpha)\, \mathrm{CE}(z_{cls}, y) + \alpha\, \mathrm{CE}(z_{dist}, \arg\max z_t)

    (the paper's hard distillation has :math:`\alpha = 1/2`). The KL divergence is summed over
    classes and averaged over the batch (``soft_reduction="batchmean"``, the paper's definition).
    The official code divides the summed KL by ``batch * classes`` instead (``"numel"``, kept there
    as "legacy PyTorch behaviour", facebookresearch/deit issues 61 and 116), which makes the soft
    term ``classes`` times smaller; pass ``soft_reduction="numel"`` to reproduce it.

    Args:
        class_logits: ``(B, C)`` logits of the class-token head.
        distill_logits: ``(B, C)`` logits of the distillation-token head.
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` class indices or ``(B, C)`` class probabilities (mixup/cutmix).
        mode: ``"hard"`` (the paper's best) or ``"soft"``.
        alpha: weight of the distillation term (official default 0.5).
        temperature: softmax temperature of the soft mode (official default 1).
        label_smoothing: label smoothing of the class-token cross-entropy (the recipe uses 0.1 when
            mixup is off); only for class-index targets.
        soft_reduction: ``"batchmean"`` (paper) or ``"numel"`` (official code) for the soft KL.
    """
    if not class_logits.shape == distill_logits.shape == teacher_logits.shape or class_logits.dim() != 2:
        raise ValueError(
            f"DeiT needs (batch, classes) logits of one shape from the class head, the distillation head and the "
            f"teacher; got {tuple(class_logits.shape)}, {tuple(distill_logits.shape)}, {tuple(teacher_logits.shape)}."
        )
    if mode not in ("soft", "hard"):
        raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
    if soft_reduction not in ("batchmean", "numel"):
        raise ValueError(f"soft_reduction must be 'batchmean' or 'numel', got {soft_reduction!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha weighs the distillation term against the label term; it must lie in [0, 1], "
                         f"got {alpha}")
    temperature = check_temperature(temperature)
    class_logits, distill_logits, teacher_logits = promote(class_logits, distill_logits, teacher_logits)
    if target.is_floating_point():
        if target.shape != class_logits.shape:
            raise ValueError(f"Soft targets must have the logits' shape {tuple(class_logits.shape)}, "
                             f"got {tuple(target.shape)}.")
        if label_smoothing:
            raise ValueError("label_smoothing applies to class-index targets; smooth soft targets beforehand.")
        target = target.to(class_logits.dtype)
    base = F.cross_entropy(class_logits, target, label_smoothing=label_smoothing)
    teacher_logits = teacher_logits.detach()
    if mode == "hard":
        distill = F.cross_entropy(distill_logits, teacher_logits.argmax(dim=1))
    else:
        kl = F.kl_div(F.log_softmax(distill_logits / temperature, dim=1),
                      F.log_softmax(teacher_logits / temperature, dim=1), reduction="sum", log_target=True)
        divisor = distill_logits.shape[0] if soft_reduction == "batchmean" else distill_logits.numel()
        distill = kl * temperature**2 / divisor
    return (1 - alpha) * base + alpha * distill


def deit_inference_logits(class_logits: Tensor, distill_logits: Tensor) -> Tensor:
    """DeiT's prediction at test time: the mean of the class-token and distillation-token logits."""
    if class_logits.shape != distill_logits.shape:
        raise ValueError(f"The two heads' logits differ in shape: {tuple(class_logits.shape)} and "
                         f"{tuple(distill_logits.shape)}.")
    return (class_logits + distill_logits) / 2


# --------------------------------------------------------------------------- ViTKD

def vitkd_mimic_loss(student_tokens: Tensor, teacher_tokens: Tensor) -> Tensor:
    r"""ViTKD's mimicking loss for shallow layers, Yang et al., "ViTKD: Practical Guidelines for ViT
    feature knowledge distillation" (2022).

    .. math::
        L_{lr} = \frac{1}{B} \sum_{b, l, n, d} \big(\mathrm{proj}_l(F^s_{b,l})_{n,d} - F^t_{b,l,n,d}\big)^2

    the squared error summed over layers, tokens and channels, averaged over the batch, between the
    student's shallow-layer patch tokens after a per-layer linear projection
    (:class:`lit_kd.methods.vitkd.ViTKDMimic`) and the teacher's.

    Args:
        student_tokens: projected student tokens ``(B, layers, N, D)`` (any shape with the batch first).
        teacher_tokens: the teacher's tokens, same shape.
    """
    if student_tokens.shape != teacher_tokens.shape:
        raise ValueError(
            f"ViTKD mimicking needs equal shapes; got student {tuple(student_tokens.shape)} and teacher "
            f"{tuple(teacher_tokens.shape)}. Project the student tokens to the teacher's width (ViTKDMimic)."
        )
    student_tokens, teacher_tokens = promote(student_tokens, teacher_tokens)
    return ((student_tokens - teacher_tokens) ** 2).sum() / student_tokens.shape[0]


def vitkd_generation_loss(generated_tokens: Tensor, teacher_tokens: Tensor, mask: Tensor,
                          mask_ratio: float = 0.5) -> Tensor:
    r"""ViTKD's generation loss for the deep layer.

    .. math::
        L_{gen} = \frac{1}{B \lambda} \sum_{b, n} M_{b,n} \sum_d \big(G(F^s)_{b,n,d} - F^t_{b,n,d}\big)^2

    The student's last-layer patch tokens, with the masked ones (:math:`M = 1`) replaced by a
    learnable mask token, go through a small convolutional generator :math:`G`
    (:class:`lit_kd.methods.vitkd.ViTKDGeneration`); only the masked tokens are compared with the
    teacher's. The division by the mask ratio :math:`\lambda` is the official code's normalisation.

    Args:
        generated_tokens: the generator's output ``(B, N, D)``.
        teacher_tokens: the teacher's last-layer patch tokens ``(B, N, D)``.
        mask: ``(B, N)``, true (or 1) where a token was masked.
        mask_ratio: :math:`\lambda`, the fraction of tokens that were masked (0.5 in the paper).
    """
    if generated_tokens.shape != teacher_tokens.shape or generated_tokens.dim() != 3:
        raise ValueError(
            f"ViTKD generation needs (batch, tokens, dim) tensors of one shape; got {tuple(generated_tokens.shape)} "
            f"and {tuple(teacher_tokens.shape)}."
        )
    if mask.shape != generated_tokens.shape[:2]:
        raise ValueError(f"The mask must be (batch, tokens) = {tuple(generated_tokens.shape[:2])}, "
                         f"got {tuple(mask.shape)}.")
    if not 0.0 < mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must lie in (0, 1], got {mask_ratio}")
    generated_tokens, teacher_tokens = promote(generated_tokens, teacher_tokens)
    weights = mask.to(generated_tokens.dtype).unsqueeze(-1)
    squared = ((generated_tokens - teacher_tokens) * weights) ** 2
    return squared.sum() / generated_tokens.shape[0] / mask_ratio


def vitkd_loss(student_shallow: Tensor, teacher_shallow: Tensor, generated_deep: Tensor, teacher_deep: Tensor,
               mask: Tensor, alpha: float = 3e-5, beta: float = 3e-6, mask_ratio: float = 0.5) -> Tensor:
    r"""ViTKD's feature loss :math:`\alpha L_{lr} + \beta L_{gen}` (defaults from the official
    DeiT configs: :math:`\alpha = 3\cdot10^{-5}`, :math:`\beta = 3\cdot10^{-6}`, :math:`\lambda = 0.5`);
    see :func:`vitkd_mimic_loss` and :func:`vitkd_generation_loss`."""
    return (alpha * vitkd_mimic_loss(student_shallow, teacher_shallow)
            + beta * vitkd_generation_loss(generated_deep, teacher_deep, mask, mask_ratio))


# --------------------------------------------------------------------------- DMAE / masked autoencoders

def dmae_feature_loss(student_features: Tensor, teacher_features: Tensor, distance: Literal["l1", "l2"] = "l1",
                      normalize: bool = True) -> Tensor:
    r"""DMAE's feature-alignment loss, Bai et al., "Masked Autoencoders Enable Efficient Knowledge
    Distillers" (CVPR 2023).

    .. math::
        L_{dist} = \frac{1}{N} \sum \Big| \frac{F^t}{\lVert F^t \rVert} - \frac{P(F^s)}{\lVert P(F^s) \rVert} \Big|

    between the teacher's intermediate tokens and the student's (the class token and the visible
    patch tokens of the same masked image, both models seeing only those), after the student's
    projection :math:`P` (:class:`lit_kd.methods.dmae.DMAEProjector`) and L2 normalisation of every
    token over channels; the mean runs over all elements. ``distance="l1"`` is the released recipe
    (``--embedding_distillation_func L1``), ``"l2"`` the mean squared error alternative. The
    official code normalises only when a projection head is used; ``normalize=False`` compares raw
    features (its setting without a projector). The teacher features are detached.

    Args:
        student_features: projected student tokens ``(B, 1 + K, D)``.
        teacher_features: teacher tokens at the aligned block, same shape.
        distance: ``"l1"`` or ``"l2"``.
        normalize: L2-normalise each token before comparing.
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"DMAE needs equal shapes; got student {tuple(student_features.shape)} and teacher "
            f"{tuple(teacher_features.shape)}. Project the student to the teacher's width and give both the same "
            "visible tokens."
        )
    if distance not in ("l1", "l2"):
        raise ValueError(f"distance must be 'l1' or 'l2', got {distance!r}")
    student_features, teacher_features = promote(student_features, teacher_features)
    teacher_features = teacher_features.detach()
    if normalize:
        student_features = F.normalize(student_features, dim=-1)
        teacher_features = F.normalize(teacher_features, dim=-1)
    if distance == "l1":
        return F.l1_loss(student_features, teacher_features)
    return F.mse_loss(student_features, teacher_features)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` images as ``(B, H*W/p², p*p*C)`` patches, row-major over the patch grid and,
    inside a patch, over (row, column, channel), as MAE orders its pixel targets."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"Image size {height}x{width} is not a multiple of the patch size {patch_size}.")
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def mae_reconstruction_loss(predicted_patches: Tensor, images: Tensor, mask: Tensor, patch_size: int,
                            normalize_target: bool = False) -> Tensor:
    r"""The masked-autoencoder pixel loss that DMAE's student keeps optimising (He et al., "Masked
    Autoencoders Are Scalable Vision Learners", CVPR 2022).

    .. math::
        L_{MAE} = \frac{\sum_{b,n} M_{b,n} \, \frac{1}{P} \sum_j (\hat x_{b,n,j} - x_{b,n,j})^2}{\sum_{b,n} M_{b,n}}

    the per-patch mean squared error averaged over the masked patches (:math:`M = 1`). With
    ``normalize_target`` every target patch is standardised by its own mean and variance
    (unbiased, ``+1e-6``) first, MAE's ``norm_pix_loss``.

    Args:
        predicted_patches: the decoder's output ``(B, N, p*p*C)`` in :func:`patchify` order.
        images: the input images ``(B, C, H, W)``.
        mask: ``(B, N)``, 1 where a patch was masked.
        patch_size: :math:`p`.
        normalize_target: standardise each target patch.
    """
    target = patchify(images, patch_size)
    if predicted_patches.shape != target.shape:
        raise ValueError(f"Predicted patches {tuple(predicted_patches.shape)} do not match the images' patches "
                         f"{tuple(target.shape)} for patch size {patch_size}.")
    if mask.shape != target.shape[:2]:
        raise ValueError(f"The mask must be (batch, patches) = {tuple(target.shape[:2])}, got {tuple(mask.shape)}.")
    predicted_patches, target = promote(predicted_patches, target)
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((predicted_patches - target) ** 2).mean(dim=-1)
    weights = mask.to(per_patch.dtype)
    masked = weights.sum()
    if masked == 0:
        raise ValueError("No patch is masked; the reconstruction loss averages over masked patches.")
    return (per_patch * weights).sum() / masked
