"""Multi-Level Logit Distillation (MLKD): a weak and a strong view, three levels of alignment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import mlkd_terms
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["MLKD"]

STRONG_VIEW = "strong"
_FIX = ("Set data.strong_view: randaugment (KDDataModule), or make your data module declare "
        "DataInfo(views=('strong',)) and put the strongly augmented images in KDBatch.views['strong'].")


class MLKD(LogitDistillation):
    r"""Jin, Wang, Lin, "Multi-Level Logit Distillation" (CVPR 2023).

    .. math::
        L = w_{ce} \big(\mathrm{CE}(z^s_{weak}, y) + \mathrm{CE}(z^s_{strong}, y)\big)
            + L_{instance} + L_{class} + L_{batch}

    Every image comes in a weak view (the batch's ``image``: crop and flip) and a strong view
    (``batch.views["strong"]``: the same plus RandAugment). The student and the teacher see both; the
    distillation terms (:func:`~lit_kd.losses.mlkd_terms`) align the predictions at the temperatures
    :math:`(T, 3, 5, 2, 6)` at three levels: per instance (KL), per batch (the samples' prediction Gram
    matrix) and per class (the classes' correlation over the batch), with the official code's
    confidence masks from the teacher's weak view. The composite follows the official training code
    (``KD_ours``) term by term, quirks included: the class and batch levels read the weak view only,
    and the strong-view instance terms at T = 2 and 6 read the weak logits (see
    :func:`~lit_kd.losses.mlkd_terms`). The terms are logged as ``train/mlkd_instance``,
    ``train/mlkd_class``, ``train/mlkd_batch``, the cross-entropies as ``train/ce`` and ``train/ce_strong``.

    The student runs twice (one forward per view, so BatchNorm sees each view's own statistics, as in
    the official code); the teacher runs once on both views together. A training step therefore costs
    about two student and two teacher forwards (KD: one each).

    The strong view comes from the data, not from the method: ``KDDataModule(strong_view="randaugment")``
    provides it (RandAugment(2, 10) of MLKD's code, on the device) and declares
    ``DataInfo(views=("strong",))``, which MLKD requires before training.

    Logit standardization (``logit_standardization=True``) z-scores the logits inside the instance-level
    terms only, as the logit-standardization paper's MLKD does (its recipe: T 2, kd_weight 9); the
    class and batch levels read the raw logits.

    Defaults are the official CIFAR-100 ones (``cfg.py``): base temperature 4, CE weight 0.1, KD weight
    0.9 (its config trains with SGD lr 0.025); ImageNet: T 1, CE 0.5, KD 0.5.

    Args:
        temperature: the base temperature :math:`T` (> 0), the first of the five.
        ce_weight: weight of each of the two cross-entropies.
        kd_weight: multiplies every distillation term.
        **kwargs: the :class:`~lit_kd.methods.logit.LogitDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, ce_weight=ce_weight, **kwargs)
        self.kd_weight = kd_weight

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            views = self.data_info.require("views", "MLKD", "a strongly augmented view of every training image",
                                           _FIX)
            if STRONG_VIEW not in views:
                raise DataContractError(f"MLKD needs a strongly augmented view named 'strong', and "
                                        f"{self.data_info.source} declares only the views {list(views)}. {_FIX}")

    def strong_view(self, batch: KDBatch) -> Tensor:
        """The batch's strongly augmented images, or a :class:`DataContractError` that says how to get them."""
        strong = batch.views.get(STRONG_VIEW)
        if strong is None:
            raise DataContractError(f"MLKD needs the strongly augmented view batch.views['strong'], and this batch "
                                    f"has only {sorted(batch.views) or 'no extra views'}. {_FIX}")
        if strong.shape != batch.image.shape:
            raise DataContractError(f"MLKD's strong view {tuple(strong.shape)} must have the shape of the weak view "
                                    f"{tuple(batch.image.shape)}.")
        return strong

    def distillation_terms(self, student_logits: Tensor, teacher_logits: Tensor,
                           batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        raise NotImplementedError("MLKD reads both views in training_losses; it has no single-view terms.")

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        strong = self.strong_view(batch)
        size = batch.size
        # The teacher is frozen in eval mode: one forward over both views equals two.
        teacher_weak, teacher_strong = self.teacher_logits(torch.cat([batch.teacher_image, strong])).split(size)
        student_weak = self(batch.image)
        student_strong = self(strong)
        terms = mlkd_terms(student_weak, teacher_weak, student_strong, teacher_strong, self.temperature,
                           self.kd_weight, standardize=self.logit_standardization)
        ce = self.ce_term(student_weak, batch)
        ce_strong = {"ce_strong": value for value in self.ce_term(student_strong, batch).values()}
        losses = weighted_sum(**ce, **ce_strong, mlkd_instance=(1.0, terms["instance"]),
                              mlkd_class=(1.0, terms["class"]), mlkd_batch=(1.0, terms["batch"]))
        return student_weak, losses
