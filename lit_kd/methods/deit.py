"""DeiT: distillation through a distillation token of a vision-transformer student."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import deit_distillation_loss, deit_inference_logits
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["DeiT"]


class DeiT(LogitDistillation):
    r"""Touvron, Cord, Douze, Massa, Sablayrolles & Jégou, "Training data-efficient image transformers
    & distillation through attention" (ICML 2021).

    The student is a ViT with a class token *and* a distillation token, each with its own head
    (timm's ``*_distilled_*`` models, ``VisionTransformerDistilled``). The class head learns from
    the labels, the distillation head from the teacher (:func:`~lit_kd.losses.deit_distillation_loss`):

    .. math::
        L_{hard} = (1 - \alpha)\,\mathrm{CE}(z_{cls}, y) + \alpha\,\mathrm{CE}(z_{dist}, \arg\max z_t)

    .. math::
        L_{soft} = (1 - \alpha)\,\mathrm{CE}(z_{cls}, y) + \alpha\,T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)
                   \,\|\, \mathrm{softmax}(z_{dist}/T))

    Hard distillation with :math:`\alpha = 1/2`, :math:`T = 1` are the paper's and the official
    defaults. At inference the prediction is the mean of both heads' logits
    (:func:`~lit_kd.losses.deit_inference_logits`); timm's model returns that mean in eval mode, so
    validation, prediction and ``lit-kd export`` (the plain timm model) all use it; the module sets
    the student's ``set_distilled_training(True)`` so that training sees both heads. The class
    head's cross-entropy uses the run's ``label_smoothing`` (DeiT's recipe: 0.1). Official quirk:
    the soft KL is divided by ``batch · classes`` (``soft_reduction="numel"``); lit_kd's default
    divides by the batch, as the paper writes it.

    Args:
        mode: ``"hard"`` (the teacher's argmax as label) or ``"soft"`` (its softened distribution).
        alpha: :math:`\alpha`, the weight of the distillation head's term (``--distillation-alpha``).
        temperature: :math:`T` of the soft mode (``--distillation-tau``).
        soft_reduction: ``"batchmean"`` (paper) or ``"numel"`` (official code) for the soft KL.
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments (``label_smoothing``,
            ``logit_standardization`` for the distillation head's term, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        mode: Literal["hard", "soft"] = "hard",
        alpha: float = 0.5,
        temperature: float = 1.0,
        soft_reduction: Literal["batchmean", "numel"] = "batchmean",
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the distillation head against the class head; it must lie in [0, 1], "
                             f"got {alpha}")
        if mode not in ("hard", "soft") or soft_reduction not in ("batchmean", "numel"):
            raise ValueError(f"mode must be 'hard' or 'soft' and soft_reduction 'batchmean' or 'numel'; got {mode!r} "
                             f"and {soft_reduction!r}")
        super().__init__(student, teacher, temperature=temperature, ce_weight=1.0 - alpha, **kwargs)
        if not (callable(getattr(self.student, "set_distilled_training", None))
                and isinstance(getattr(self.student, "head_dist", None), nn.Module)):
            raise ValueError(
                f"DeiT trains a student with a distillation token and head, and {type(self.student).__name__} has "
                "none. Use a distilled timm ViT (deit_tiny_distilled_patch16_224, deit_small_distilled_patch16_224, "
                "deit_base_distilled_patch16_224, ...), or distill this student with KD.")
        self.student.set_distilled_training(True)
        self.mode, self.alpha, self.soft_reduction = mode, alpha, soft_reduction

    def heads(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(class-token logits, distillation-token logits)`` of the student in training mode."""
        outputs = self.student(self.student_input(images))
        if not isinstance(outputs, tuple) or len(outputs) != 2:
            raise RuntimeError("The student returned one output in training; DeiT needs both heads (call "
                               "student.set_distilled_training(True) and keep the module in training mode).")
        return outputs

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.target is None:
            raise DataContractError("DeiT trains the class token's head on the labels, but the batch has none. "
                                    "Give labelled data.")
        teacher_logits = self.teacher_logits(batch.teacher_image)
        class_logits, distill_logits = self.heads(batch.image)
        options = dict(mode=self.mode, temperature=self.temperature, label_smoothing=self.label_smoothing,
                       soft_reduction=self.soft_reduction)
        # The two terms of deit_distillation_loss, one at a time (alpha 0: the class head's CE; alpha 1:
        # the distillation head's term), so that both are logged; the total is the same.
        class_term = deit_distillation_loss(class_logits, distill_logits, teacher_logits, batch.target, alpha=0.0,
                                            **options)
        distill_term = deit_distillation_loss(class_logits, self.distillation_logits(distill_logits),
                                              self.distillation_logits(teacher_logits), batch.target, alpha=1.0,
                                              **options)
        logits = deit_inference_logits(class_logits, distill_logits)
        return logits, weighted_sum(ce=(1.0 - self.alpha, class_term), distill=(self.alpha, distill_term))
