"""Decoupled Knowledge Distillation (DKD)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import dkd_terms, dkd_warmup_factor
from lit_kd.methods.labels import class_targets
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["DKD"]


class DKD(LogitDistillation):
    r"""Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y)
            + \min\big(\tfrac{e}{E_{warm}}, 1\big) \big(\alpha \, \mathrm{TCKD} + \beta \, \mathrm{NCKD}\big)

    KD split into the binary "target vs. rest" KL (TCKD) and the KL among the non-target classes
    (NCKD), each times :math:`T^2` (:func:`~lit_kd.losses.dkd_terms`), so that NCKD's weight no longer
    shrinks with the teacher's confidence. The distillation part ramps up linearly over
    ``warmup_epochs``; :math:`e` counts epochs from 1 as the official trainer (mdistiller) does
    (``current_epoch + 1``), so the first epoch has weight ``1 / warmup_epochs``. Both parts are logged
    unweighted as ``train/tckd`` and ``train/nckd``.

    Defaults are the official CIFAR-100 ones (mdistiller ``cfg.py``): α 1, β 8, T 4, warm-up 20, CE 1;
    β is 2 for resnet56→resnet20 and resnet110→resnet32 and 6 for vgg13→vgg8, vgg13→MobileNetV2,
    wrn_40_2→wrn_16_2 and wrn_40_2→wrn_40_1. ImageNet ResNet-34→ResNet-18: α 1, β 0.5, T 1, warm-up 1.
    With ``logit_standardization=True`` the logit-standardization paper (Sun et al., CVPR 2024) uses
    α 9, β 72 (both times its KD weight 9) and T 2.

    The paper removes the target class from the non-target distribution; the official code masks
    it by subtracting 1000 from ``z / T``, which leaks when the target logit exceeds the others by
    about ``1000 T``: ``official_mask=True`` computes it that way.

    Args:
        alpha: weight α of TCKD.
        beta: weight β of NCKD.
        temperature: softmax temperature T (> 0).
        warmup_epochs: epochs over which the DKD weight rises to 1 (> 0; 1: full weight at once).
        ce_weight: weight of the cross-entropy with the labels.
        official_mask: compute the terms as the official code does (see above).
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments
            (``logit_standardization``, ...).

    The batches must carry hard class labels: the target class decides the decoupling.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: float = 20,
        ce_weight: float = 1.0,
        official_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        dkd_warmup_factor(1, warmup_epochs)  # checks warmup_epochs > 0 before training
        self.alpha = alpha
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.official_mask = official_mask

    def warmup_factor(self) -> float:
        """The weight of the DKD term in the current epoch (official epoch count: ``current_epoch + 1``)."""
        return dkd_warmup_factor(self.current_epoch + 1, self.warmup_epochs)

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        target = class_targets(batch, "DKD", "its target/non-target split reads the label of every sample")
        tckd, nckd = dkd_terms(student_logits, teacher_logits, target, self.temperature, self.official_mask)
        factor = self.warmup_factor()
        return {"tckd": (factor * self.alpha, tckd), "nckd": (factor * self.beta, nckd)}
