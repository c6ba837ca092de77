"""Distillation from several frozen teachers: the shared base and multi-teacher KD.

:class:`MultiTeacherDistillation` holds any number of frozen teachers (each a timm or zoo network
with its own normalization and input size, each with the guarantees of
:class:`~lit_kd.methods.base.DistillationModule`); :class:`MultiTeacherKD` distils the weighted
ensemble of their soft labels, with fixed, learned (:class:`LearnedTeacherWeights`) or CA-MKD
confidence weights. MEAL V2 (:mod:`lit_kd.methods.meal_v2`) and DistillWeighted
(:mod:`lit_kd.methods.distill_weighted`) build on the same base. The losses are in
:mod:`lit_kd.losses.multi_teacher`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import ca_mkd_loss, ca_mkd_weights, distill_weighted_loss, multi_teacher_kd_loss
from lit_kd.methods.base import network_record, weighted_sum
from lit_kd.methods.logit import LogitDistillation
from lit_kd.models import ModelSpec

__all__ = ["LearnedTeacherWeights", "MultiTeacherDistillation", "MultiTeacherKD", "Weighting"]

Weighting = Literal["fixed", "learned", "confidence"]


class LearnedTeacherWeights(nn.Module):
    r"""One learnable weight per teacher: :math:`w = \mathrm{softmax}(\theta)`, :math:`\theta \in \mathbb{R}^K`.

    Its output is the ``weights`` argument of :func:`lit_kd.losses.ensemble_soft_targets` and
    :func:`lit_kd.losses.multi_teacher_kd_loss`, which then train :math:`\theta` together with the
    student. The softmax keeps the weights positive and summing to one. Note that the distillation
    loss alone rewards putting all weight on the teacher the student already matches best;
    regularize or schedule the weights' learning rate accordingly.

    Args:
        num_teachers: the number of teachers K (at least one).
        initial_logits: the starting :math:`\theta` (default zeros: equal weights 1/K); a floating
            tensor keeps its dtype.
    """

    def __init__(self, num_teachers: int, initial_logits: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if num_teachers < 1:
            raise ValueError(f"num_teachers must be at least 1, got {num_teachers}.")
        if initial_logits is None:
            initial = torch.zeros(num_teachers)
        else:
            initial = torch.as_tensor(initial_logits)
            if not initial.is_floating_point():
                initial = initial.to(torch.get_default_dtype())
            if initial.shape != (num_teachers,):
                raise ValueError(f"initial_logits must hold one number per teacher ({num_teachers}); "
                                 f"got shape {tuple(initial.shape)}.")
        self.logits = nn.Parameter(initial.clone())

    def forward(self) -> Tensor:
        """The teacher weights, shape ``(K,)``, positive and summing to one."""
        return torch.softmax(self.logits, dim=0)


def declared_classes(network: nn.Module, spec: ModelSpec | None) -> int | None:
    """The class count a network declares (its spec's ``num_classes``, else timm's ``num_classes``
    attribute), or ``None`` when it declares none (then only the probe at ``setup`` knows)."""
    if spec is not None and spec.num_classes is not None:
        return int(spec.num_classes)
    count = getattr(network, "num_classes", None)
    return int(count) if isinstance(count, int) and count > 0 else None


class MultiTeacherDistillation(LogitDistillation):
    """The base of methods that learn from several frozen teachers at once.

    Every teacher is a frozen network of :class:`~lit_kd.methods.base.DistillationModule`: the first
    is ``self.teacher``, the others ``self.teacher_1``, ``self.teacher_2``, ... (from
    :meth:`add_frozen_network`), each with its own input adapter (normalization, input size), in eval
    mode, without gradients, outside the optimizer and the checkpoints. Each teacher runs exactly once
    per training batch under ``no_grad``. With ``check_teacher`` every teacher's validation accuracy
    is measured once per fit (``val/teacher_acc``, ``val/teacher_1_acc``, ...) and a teacher near
    chance level gets a loud warning. Teachers whose class counts differ are refused at construction
    when the networks declare their counts, and before training otherwise.

    Subclasses implement :meth:`ensemble_terms`.

    Args:
        teachers: the frozen teachers (specs or modules), at least one.
        temperature, ce_weight, logit_standardization: see
            :class:`~lit_kd.methods.logit.LogitDistillation`.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teachers: Sequence[ModelSpec | nn.Module],
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        logit_standardization: bool = False,
        **kwargs: Any,
    ) -> None:
        teachers = list(teachers)
        if not teachers:
            raise ValueError(f"{type(self).__name__} learns from frozen teachers and got none: give at least one "
                             "network in teachers (e.g. teachers: [{name: resnet56_a, num_classes: 10, checkpoint: "
                             "...}]).")
        super().__init__(student, teachers[0], temperature=temperature, ce_weight=ce_weight,
                         logit_standardization=logit_standardization, **kwargs)
        specs = [self.teacher_spec]
        self.teacher_names: list[str] = ["teacher"]
        for index, teacher in enumerate(teachers[1:], start=1):
            _, spec = self.add_frozen_network(f"teacher_{index}", teacher, record=False)
            self.teacher_names.append(f"teacher_{index}")
            specs.append(spec)
        # The teachers are one list argument: record them as such, so a checkpoint reloads with the same call.
        del self.hparams["teacher"]
        self.hparams["teachers"] = [network_record(t) for t in teachers]
        self.teacher_classes = self._check_teacher_classes(specs)
        self._other_teachers_checked = False

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_names)

    def _check_teacher_classes(self, specs: list[ModelSpec | None]) -> int | None:
        counts = {name: declared_classes(getattr(self, name), spec) for name, spec in zip(self.teacher_names, specs)}
        known = {name: count for name, count in counts.items() if count is not None}
        if len(set(known.values())) > 1:
            listing = ", ".join(f"{self._describe(name)}: {count} classes" for name, count in known.items())
            raise ValueError(f"{type(self).__name__}'s teachers predict different numbers of classes ({listing}). "
                             "Every teacher must be trained on the student's classes, in the same order: use teacher "
                             "checkpoints of this data set and set each teacher's num_classes to its class count.")
        return next(iter(known.values()), None)

    def _describe(self, name: str) -> str:
        index = self.teacher_names.index(name)
        network = self.hparams["teachers"][index]
        return f"teacher {index} ({network.get('name') or network.get('module')})"

    # ------------------------------------------------------------------ training
    def ensemble_logits(self, teacher_image: Tensor) -> list[Tensor]:
        """Every teacher's logits for pixels in [0, 1], each teacher run once under ``no_grad``."""
        return [self.frozen_logits(name, teacher_image) for name in self.teacher_names]

    def ensemble_terms(self, student_logits: Tensor, teacher_logits: list[Tensor],
                       batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        """The method's terms as ``{name: (weight, value)}``. The logits are the raw ones; apply
        :meth:`distillation_logits` to those the distillation terms read (logit standardization)."""
        raise NotImplementedError(f"{type(self).__name__} must implement ensemble_terms()")

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_logits = self.ensemble_logits(batch.teacher_image)
        logits = self(batch.image)
        terms = self.ensemble_terms(logits, teacher_logits, batch)
        return logits, weighted_sum(**self.ce_term(logits, batch), **terms)

    def log_teacher_weights(self, weights: Tensor, batch_size: int) -> None:
        """Log each teacher's weight (its batch mean for per-sample weights) as ``train/weight_<teacher>``."""
        if self._trainer is None or not self.trainer.training:  # called outside a training loop (tests, notebooks)
            return
        mean_weights = weights.detach().float().reshape(-1, self.num_teachers).mean(dim=0)
        for name, weight in zip(self.teacher_names, mean_weights):
            self.log(f"train/weight_{name}", weight, on_step=False, on_epoch=True, batch_size=batch_size)

    def require_labels(self, batch: KDBatch, why: str) -> Tensor:
        """The batch's class labels, or a :class:`DataContractError` saying the method needs them for ``why``."""
        if batch.target is None or batch.target.ndim != 1:
            raise DataContractError(f"{type(self).__name__} needs class labels for {why}, and the batch has "
                                    f"{'none' if batch.target is None else 'soft labels'}. Give labelled data.")
        return batch.target

    # ------------------------------------------------------------------ every teacher's accuracy
    def _setup_metrics(self, num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        super()._setup_metrics(num_classes)
        self.other_teacher_accuracy = nn.ModuleDict(
            {name: MulticlassAccuracy(num_classes, average="micro").to(self.device) for name in self.teacher_names[1:]})

    def _checking_other_teachers(self) -> bool:
        return (self.check_teacher and not self._other_teachers_checked and self._trainer is not None
                and self.trainer.state.fn == "fit")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        batch = KDBatch.from_any(batch)
        logits = super().validation_step(batch, batch_idx, dataloader_idx)
        if dataloader_idx == 0 and self._checking_other_teachers():
            for name in self.teacher_names[1:]:
                self.other_teacher_accuracy[name].update(self.frozen_logits(name, batch.teacher_image), batch.target)
        return logits

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self._checking_other_teachers():
            return
        for name in self.teacher_names[1:]:
            metric = self.other_teacher_accuracy[name]
            if metric.update_count == 0:
                return
            accuracy = float(metric.compute())
            metric.reset()
            if accuracy < 2.0 / metric.num_classes:
                warnings.warn(
                    f"\n{'!' * 78}\nTEACHER NEAR CHANCE LEVEL: {self._describe(name)} has a validation accuracy of "
                    f"{accuracy:.1%} with {metric.num_classes} classes (chance {1 / metric.num_classes:.1%}).\n"
                    "Distilling from it will harm the student. Check its checkpoint, num_classes and class order, "
                    f"and its input normalization.\n{'!' * 78}", UserWarning, stacklevel=1)
            if not self.trainer.sanity_checking:
                self.log(f"val/{name}_acc", accuracy, sync_dist=True)
        if not self.trainer.sanity_checking:
            self._other_teachers_checked = True


def check_teacher_weights(weights: Sequence[float], num_teachers: int) -> list[float]:
    """``weights`` as a list of ``num_teachers`` finite numbers >= 0 with a positive sum, else a ValueError."""
    values = [float(w) for w in weights]
    if len(values) != num_teachers:
        raise ValueError(f"Got {len(values)} teacher weights for {num_teachers} teachers: give one weight per teacher, "
                         "in the order of teachers.")
    if not all(math.isfinite(w) for w in values):
        raise ValueError(f"Teacher weights must be finite numbers; got {values}.")
    if any(w < 0 for w in values):
        raise ValueError(f"Teacher weights must be >= 0; got {values}.")
    if sum(values) <= 0:
        raise ValueError("Teacher weights sum to zero: give at least one teacher a positive weight.")
    return values


class MultiTeacherKD(MultiTeacherDistillation):
    r"""Knowledge distillation from an ensemble of frozen teachers, with fixed, learned or
    confidence-aware teacher weights.

    .. math::
        L = \lambda_{CE}\,\mathrm{CE}(z^s, y) + \lambda_{KD}\, T^2 \frac{1}{B}\sum_b
            \mathrm{KL}\Big(\sum_{k=1}^{K} w_k\, \mathrm{softmax}(z^k_b/T) \,\Big\|\, \mathrm{softmax}(z^s_b/T)\Big)

    (:func:`~lit_kd.losses.multi_teacher_kd_loss`), the teachers' softened probabilities averaged
    with weights :math:`w` that sum to one:

    * ``weighting="fixed"``: ``weights`` (one number >= 0 per teacher, normalized by their sum;
      default equal weights, the plain ensemble average).
    * ``weighting="learned"``: :math:`w = \mathrm{softmax}(\theta)` with :math:`\theta` trained with
      the student (:class:`LearnedTeacherWeights`, optimized and checkpointed); ``weights``, if given
      (all > 0), sets the starting point. The distillation loss alone drifts the weights towards the
      teacher the student already matches best (see that class).
    * ``weighting="confidence"``: CA-MKD (Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher
      Knowledge Distillation", ICASSP 2022): per-sample weights
      :math:`w_{b,k} = \frac{1}{K-1}\big(1 - \exp(\ell^k_b) / \sum_j \exp(\ell^j_b)\big)` with
      :math:`\ell^k_b = \mathrm{CE}(z^k_b, y_b)`, so the teacher most confident in the right class
      weighs most (:func:`~lit_kd.losses.ca_mkd_weights`, computed on the raw teacher logits), and
      CA-MKD's loss
      :math:`\frac{1}{B}\sum_b\sum_k w_{b,k}\, T^2\,\mathrm{KL}(p^k_b \| p^s_b)`
      (:func:`~lit_kd.losses.ca_mkd_loss`; it has the gradients of the KL to the weighted ensemble,
      the weights being fixed and summing to one). Needs labels and at least two teachers. The
      official code divides by :math:`B \cdot K` instead of :math:`B` (``ca_mkd_official=True``).
      CA-MKD's intermediate-feature term is not part of this method.

    Defaults (``ce_weight`` 1, ``kd_weight`` 1, T = 4) are those of the CA-MKD code's CIFAR-100
    benchmark, which also runs the equal-weight ensemble (AVER-MKD) this way.

    Args:
        teachers: the frozen teachers (specs or modules), each any timm or zoo network with its own
            normalization and input size.
        weighting: ``"fixed"``, ``"learned"`` or ``"confidence"`` (above).
        weights: one weight per teacher (``fixed``: the weights; ``learned``: the starting weights);
            ``None``: equal weights.
        temperature: softmax temperature T of the distillation term.
        ce_weight: weight of the cross-entropy with the labels (0: labels are not needed, except by
            ``confidence``).
        kd_weight: weight of the distillation term.
        ca_mkd_official: with ``confidence``, reproduce the official code's extra division by K.
        **kwargs: the :class:`MultiTeacherDistillation` arguments (``logit_standardization``, ...).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teachers: Sequence[ModelSpec | nn.Module],
        weighting: Weighting = "fixed",
        weights: Sequence[float] | None = None,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        ca_mkd_official: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teachers, temperature=temperature, ce_weight=ce_weight, **kwargs)
        if weighting not in ("fixed", "learned", "confidence"):
            raise ValueError(f"weighting must be 'fixed', 'learned' or 'confidence', got {weighting!r}.")
        self.weighting = weighting
        self.kd_weight = kd_weight
        self.ca_mkd_official = ca_mkd_official
        count = self.num_teachers
        fixed = None if weights is None else check_teacher_weights(weights, count)
        self.teacher_weights: LearnedTeacherWeights | None = None
        if weighting == "fixed":
            total = sum(fixed) if fixed is not None else float(count)
            self.register_buffer("fixed_weights", torch.tensor([w / total for w in fixed] if fixed is not None
                                                               else [1.0 / count] * count), persistent=False)
        elif weighting == "learned":
            if fixed is not None and any(w <= 0 for w in fixed):
                raise ValueError(f"Learned teacher weights start from weights={fixed}, and a softmax cannot start at "
                                 "0: give every teacher a weight > 0 (or none for equal weights).")
            start = None if fixed is None else [math.log(w / sum(fixed)) for w in fixed]
            self.teacher_weights = LearnedTeacherWeights(count, start)
        else:
            if weights is not None:
                raise ValueError("weighting='confidence' computes the weights from the teachers' confidence on each "
                                 "sample: leave weights unset (or use weighting='fixed').")
            if count < 2:
                raise ValueError("weighting='confidence' (CA-MKD) needs at least two teachers; with one teacher use "
                                 "weighting='fixed' (which is KD).")

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = super().trainable_modules()
        if self.teacher_weights is not None:
            modules["teacher_weights"] = self.teacher_weights
        return modules

    def current_weights(self, teacher_logits: list[Tensor], batch: KDBatch) -> Tensor:
        """The teacher weights for this batch: ``(K,)`` (fixed, learned) or ``(B, K)`` (confidence)."""
        if self.weighting == "fixed":
            return self.fixed_weights
        if self.weighting == "learned":
            return self.teacher_weights()
        return ca_mkd_weights(teacher_logits, self.require_labels(batch, "CA-MKD's confidence weights"))

    def ensemble_terms(self, student_logits: Tensor, teacher_logits: list[Tensor],
                       batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        weights = self.current_weights(teacher_logits, batch)
        student = self.distillation_logits(student_logits)
        teachers = [self.distillation_logits(t) for t in teacher_logits]
        if self.weighting != "confidence":
            kd = multi_teacher_kd_loss(student, teachers, weights, self.temperature)
        elif not self.logit_standardization:
            kd = ca_mkd_loss(student, teachers, batch.target, self.temperature, official=self.ca_mkd_official)
        else:
            # Confidence judged on the raw logits; CA-MKD's weighted sum of per-teacher KL terms on the z-scores.
            kd = distill_weighted_loss(student, teachers, weights, self.temperature)
            kd = kd / self.num_teachers if self.ca_mkd_official else kd
        self.log_teacher_weights(weights, batch.size)
        return {"kd": (self.kd_weight, kd)}
