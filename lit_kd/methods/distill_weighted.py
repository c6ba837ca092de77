"""DistillWeighted: several source models, each weighted by its relevance to the target task.

Borup, Phoo & Hariharan, "Distilling from Similar Tasks for Transfer Learning on a Budget" (ICCV
2023). The loss is :func:`lit_kd.losses.distill_weighted_loss`; the relevance score is pluggable
(a :class:`RelevanceScore` named by ``class_path`` in a config).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import distill_weighted_loss, relevance_weights
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.multi_teacher import MultiTeacherDistillation
from lit_kd.models import ModelSpec

__all__ = ["RelevanceScore", "SourceAccuracy", "SourceLikelihood", "DistillWeighted"]


class RelevanceScore:
    """How relevant each source model is to the target task, from its predictions on labelled target data.

    ``score(source_logits, target_labels)`` takes one ``(N, C)`` logit tensor per source (the
    sources' predictions of the target classes on N labelled target samples) and the labels ``(N,)``
    and returns one score per source ``(S,)``; :func:`~lit_kd.losses.relevance_weights` turns the
    scores into the weights of the distillation terms. Subclass it and name the subclass in a
    config (``relevance: {class_path: my_package.MyScore, init_args: {...}}``); keep the constructor
    arguments plain data (they are stored in the checkpoint's hyperparameters).
    """

    def __call__(self, source_logits: Sequence[Tensor], target_labels: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(source_logits, target_labels)")


class SourceAccuracy(RelevanceScore):
    """The top-1 accuracy of each source's pseudo-labels on the labelled target samples (lit_kd's default score)."""

    def __call__(self, source_logits: Sequence[Tensor], target_labels: Tensor) -> Tensor:
        return torch.stack([(logits.argmax(dim=-1) == target_labels).float().mean() for logits in source_logits])


class SourceLikelihood(RelevanceScore):
    """The geometric mean of the probability each source gives the true label, :math:`\\exp(-\\mathrm{CE})`:
    a soft version of :class:`SourceAccuracy` that also rewards calibrated confidence.

    Args:
        temperature: the softmax temperature of the sources' probabilities.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = check_temperature(temperature)

    def __call__(self, source_logits: Sequence[Tensor], target_labels: Tensor) -> Tensor:
        return torch.stack([torch.exp(-F.cross_entropy(logits.float() / self.temperature, target_labels))
                            for logits in source_logits])


def _relevance_record(score: RelevanceScore) -> dict[str, Any]:
    cls = type(score)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(vars(score))}


def _relevance_from_record(record: dict[str, Any]) -> RelevanceScore:
    module, _, name = record["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**record.get("init_args", {}))


class DistillWeighted(MultiTeacherDistillation):
    r"""DistillWeighted (Borup, Phoo & Hariharan, "Distilling from Similar Tasks for Transfer
    Learning on a Budget", ICCV 2023): distillation from several source models, each weighted by
    its relevance to the target task.

    .. math::
        L = \lambda_{CE}\,\mathrm{CE}(z^{st}, y) + \lambda_{KD} \sum_{s=1}^{S} \alpha_s \; T^2
            \frac{1}{B}\sum_b \mathrm{KL}\big(\mathrm{softmax}(z^s_b/T) \,\|\, \mathrm{softmax}(z^{st}_b/T)\big),
        \qquad \alpha = \mathrm{normalize}(r)

    (:func:`~lit_kd.losses.distill_weighted_loss`), with :math:`r_s` the relevance score of source
    :math:`s` and :math:`\alpha` its normalization (:func:`~lit_kd.losses.relevance_weights`: divided
    by the sum, or a softmax at ``relevance_temperature``; a small temperature approaches picking the
    single most relevant source, the paper's DistillNearest). The weights are not trained.

    **What the paper uses, what lit_kd implements.** The paper (of which only the abstract could be
    read here; no official code was found, so the loss is hand-derived and tested against a
    hand-computed value) distils source models trained on *other* tasks, whose soft pseudo-labels
    come from target heads on their features, weighted by task-similarity metrics computed from the
    sources' features and the few target labels. lit_kd's sources already predict the target
    classes (their heads are part of the network given as a source), and the relevance is a
    pluggable :class:`RelevanceScore` of the sources' logits on labelled target data: the built-in
    :class:`SourceAccuracy` (the default: how often each source's pseudo-label is right) and
    :class:`SourceLikelihood`; a feature-based task-similarity metric (LogME, LEEP, NCE, kNN accuracy)
    is a :class:`RelevanceScore` subclass, or its values can be given directly as ``scores``.

    When the scores are computed: ``relevance_from="train_split"`` (default) computes them once,
    before the first training step, on the training split without augmentation
    (``DataInfo.database_dataloader``, which :class:`~lit_kd.data.KDDataModule` declares), from at
    most ``relevance_samples`` samples; they are kept in the checkpoint (a resumed run does not
    recompute them). ``relevance_from="batch"`` scores every labelled training batch instead.

    Args:
        teachers: the source models (specs or modules), at least one, all predicting the target classes.
        relevance: the score (default :class:`SourceAccuracy`).
        scores: fixed relevance scores, one per source (skip the computation).
        relevance_temperature: ``None``: weights = scores / sum (scores >= 0); else softmax(scores / τ).
        relevance_from: ``"train_split"`` or ``"batch"`` (above).
        relevance_samples: at most this many training samples score the sources (``None``: all).
        temperature: softmax temperature T of the distillation terms.
        ce_weight: weight of the cross-entropy with the target labels.
        kd_weight: weight of the weighted distillation terms.
        **kwargs: the :class:`~lit_kd.methods.multi_teacher.MultiTeacherDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teachers: Sequence[ModelSpec | nn.Module],
        relevance: RelevanceScore | None = None,
        scores: Sequence[float] | None = None,
        relevance_temperature: float | None = None,
        relevance_from: Literal["train_split", "batch"] = "train_split",
        relevance_samples: int | None = None,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teachers, temperature=temperature, ce_weight=ce_weight, **kwargs)
        if isinstance(relevance, dict):  # the record of a checkpoint's hyperparameters
            relevance = _relevance_from_record(relevance)
        self.relevance = relevance if relevance is not None else SourceAccuracy()
        if not callable(self.relevance):
            raise ValueError(f"relevance must be a RelevanceScore (callable), got {type(self.relevance).__name__}.")
        self.hparams["relevance"] = _relevance_record(self.relevance)  # plain data for weights_only checkpoints
        if relevance_from not in ("train_split", "batch"):
            raise ValueError(f"relevance_from must be 'train_split' or 'batch', got {relevance_from!r}.")
        if relevance_samples is not None and relevance_samples < 1:
            raise ValueError(f"relevance_samples must be >= 1 (or None for all), got {relevance_samples}.")
        self.relevance_from = relevance_from
        self.relevance_samples = relevance_samples
        self.relevance_temperature = (None if relevance_temperature is None
                                      else check_temperature(relevance_temperature, "relevance_temperature"))
        self.kd_weight = kd_weight
        # The scores are state: computed once (or given), kept in checkpoints.
        self.register_buffer("relevance_scores", torch.zeros(self.num_teachers))
        self.register_buffer("scores_ready", torch.tensor(False))
        if scores is not None:
            given = torch.as_tensor([float(s) for s in scores])
            if given.numel() != self.num_teachers:
                raise ValueError(f"Got {given.numel()} relevance scores for {self.num_teachers} sources: give one per "
                                 "source, in the order of teachers.")
            relevance_weights(given, self.relevance_temperature)  # refuses negative or all-zero scores now
            self.relevance_scores.copy_(given)
            self.scores_ready.fill_(True)
        self.scores_known = bool(self.scores_ready)  # the buffer's value, read without a device sync per step

    def source_weights(self) -> Tensor:
        """The current weights :math:`\\alpha` of the sources (after the scores are known)."""
        return relevance_weights(self.relevance_scores, self.relevance_temperature)

    def score_sources(self, source_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
        """The relevance score of every source, checked: ``(S,)`` finite numbers."""
        scores = torch.as_tensor(self.relevance(list(source_logits), labels)).detach().float().reshape(-1)
        if scores.numel() != self.num_teachers:
            raise ValueError(f"{type(self.relevance).__name__} returned {scores.numel()} scores for "
                             f"{self.num_teachers} sources: a relevance score returns one number per source.")
        relevance_weights(scores, self.relevance_temperature)  # a clear error for unusable scores
        return scores.to(self.relevance_scores.device)

    @torch.no_grad()
    def compute_relevance(self) -> Tensor:
        """Score the sources on the un-augmented training split (at most ``relevance_samples`` samples)."""
        info = self.data_info
        info.require("database_dataloader", "DistillWeighted(relevance_from='train_split')",
                     "the training split without augmentation to score the sources",
                     "Use KDDataModule, declare DataInfo(database_dataloader=...), give scores, or set "
                     "relevance_from='batch'.")
        logits: list[list[Tensor]] = [[] for _ in self.teacher_names]
        labels: list[Tensor] = []
        seen = 0
        for raw in info.database_dataloader():
            batch = info.eval_batch(self.transfer_batch_to_device(raw, self.device, 0))
            target = self.require_labels(batch, "scoring the sources' relevance")
            for store, source in zip(logits, self.ensemble_logits(batch.teacher_image)):
                store.append(source.float())
            labels.append(target)
            seen += batch.size
            if self.relevance_samples is not None and seen >= self.relevance_samples:
                break
        if not labels:
            raise ValueError("DistillWeighted found no training samples to score the sources on.")
        limit = self.relevance_samples or seen
        return self.score_sources([torch.cat(s)[:limit] for s in logits], torch.cat(labels)[:limit])

    def on_train_start(self) -> None:
        self.scores_known = bool(self.scores_ready)  # restored from a checkpoint, or not
        if self.relevance_from == "train_split" and not self.scores_known:
            self.relevance_scores.copy_(self.compute_relevance())
            self.scores_ready.fill_(True)
            self.scores_known = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.scores_known = bool(checkpoint["state_dict"].get("scores_ready", False))

    def ensemble_terms(self, student_logits: Tensor, teacher_logits: list[Tensor],
                       batch: KDBatch) -> dict[str, tuple[float, Tensor]]:
        if self.scores_known:
            scores = self.relevance_scores
        elif self.relevance_from == "batch":
            labels = self.require_labels(batch, "scoring the sources' relevance on each batch")
            scores = self.score_sources(teacher_logits, labels)
        else:
            raise RuntimeError("DistillWeighted has no relevance scores yet: they are computed at the start of a fit "
                               "(relevance_from='train_split'); give scores to train outside a fit.")
        kd = distill_weighted_loss(self.distillation_logits(student_logits),
                                   [self.distillation_logits(t) for t in teacher_logits], scores, self.temperature,
                                   self.relevance_temperature)
        self.log_teacher_weights(relevance_weights(scores, self.relevance_temperature), batch.size)
        return {"kd": (self.kd_weight, kd)}
