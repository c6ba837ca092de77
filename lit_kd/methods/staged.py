"""Two-stage feature methods (FT, AB, FSP): an initialization stage, then the main training, in one fit.

The methods of this kind first train some parameters alone on an auxiliary objective (FT: the
teacher's paraphraser; AB: the student's layers and connectors on activation boundaries; FSP: the
student's layers on FSP matrices), then train the student on the task. RepDistiller runs the first
stage as a separate loop (``helper/pretrain.py``, ``--init_epochs 30``) with its own SGD optimizer at a
constant learning rate, and the main stage with a fresh optimizer and the usual schedule.

:class:`StagedFeatureDistillation` does the same inside one Lightning fit. The stage is computed
from ``current_epoch`` (epochs ``0 .. pretrain_epochs - 1`` are the initialization stage), so a
checkpoint taken in either stage resumes in the right one. There are two optimizers, both built
by the method's ``optimizer`` callable: the main one over :meth:`trainable_modules` with the
``lr_scheduler``, and the initialization one over :meth:`pretrain_parameters` at ``pretrain_lr``
(constant). The main optimizer and its scheduler do not move during the initialization stage, so
the scheduler's milestones count epochs of the main stage (RepDistiller's 150/180/210 stay
150/180/210 with ``max_epochs = pretrain_epochs + 240``). Both optimizers and the scheduler are
checkpointed.

The module uses manual optimization, so Lightning's ``gradient_clip_val`` and
``accumulate_grad_batches`` do not apply to these methods. Parameters that a stage does not use
receive no gradients, so under DDP use ``strategy: ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["StagedFeatureDistillation"]


class StagedFeatureDistillation(FeatureDistillation):
    """A feature method with an initialization stage of ``pretrain_epochs`` epochs (see the module doc).

    Subclasses implement :meth:`pretrain_losses` (the initialization objective), :meth:`pretrain_parameters`
    (what it trains) and, as every feature method, :meth:`feature_terms` (the main stage's terms).

    Args:
        pretrain_epochs: epochs of the initialization stage (0: none).
        pretrain_lr: constant learning rate of the initialization optimizer; ``None``: the main
            optimizer's initial learning rate (RepDistiller uses its ``--learning_rate``, except
            0.01 for FT with ResNet/WRN students).
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None,
        teacher_layers: Sequence[Layer] | None,
        pretrain_epochs: int = 30,
        pretrain_lr: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, **kwargs)
        if pretrain_epochs < 0 or int(pretrain_epochs) != pretrain_epochs:
            raise ValueError(f"pretrain_epochs must be an integer >= 0, got {pretrain_epochs}")
        if pretrain_lr is not None and not pretrain_lr > 0:
            raise ValueError(f"pretrain_lr must be > 0 (or None for the main learning rate), got {pretrain_lr}")
        self.pretrain_epochs = int(pretrain_epochs)
        self.pretrain_lr = pretrain_lr
        self.automatic_optimization = False

    # ------------------------------------------------------------------ the stages
    @property
    def pretraining(self) -> bool:
        """Whether the current epoch belongs to the initialization stage."""
        return self.current_epoch < self.pretrain_epochs

    @property
    def stage(self) -> str:
        """``"pretrain"`` or ``"main"``, from ``current_epoch``."""
        return "pretrain" if self.pretraining else "main"

    def pretrain_parameters(self) -> list[nn.Parameter]:
        """The parameters the initialization stage trains (nothing else moves in that stage)."""
        raise NotImplementedError(f"{type(self).__name__} must implement pretrain_parameters()")

    def pretrain_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The initialization objective on one batch: ``(student logits, {"loss": total, ...})``."""
        raise NotImplementedError(f"{type(self).__name__} must implement pretrain_losses(batch)")

    def student_feature_parameters(self) -> list[nn.Parameter]:
        """The student's parameters except its classifier's (what RepDistiller's ``get_feat_modules`` holds)."""
        classifier = self.student.get_classifier() if callable(getattr(self.student, "get_classifier", None)) else None
        skip = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
        return [p for p in self.student.parameters() if p.requires_grad and id(p) not in skip]

    def frozen_student_logits(self, image: Tensor) -> Tensor:
        """The student's logits without autograd and in eval mode (for logging while it is not trained)."""
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                return self(image)
        finally:
            self.student.train(was_training)

    def plain_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The main stage without feature terms: CE (and KD when ``kd_weight``); the teacher runs only for KD."""
        teacher_logits = self.teacher_logits(batch.teacher_image) if self.kd_weight else None
        logits = self(batch.image)
        return logits, weighted_sum(**self.logit_terms(logits, teacher_logits, batch))

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> Any:
        main = super().configure_optimizers()
        main_config = main if isinstance(main, dict) else {"optimizer": main}
        scheduler = main_config.get("lr_scheduler", {}).get("scheduler")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(f"{type(self).__name__} steps its scheduler itself (two stages, manual optimization) and "
                             "cannot drive ReduceLROnPlateau: use an epoch or step schedule such as MultiStepLR.")
        if callable(getattr(scheduler, "resolve_total_steps", None)) and self._trainer is not None:
            # The schedule runs in the main stage only.
            epochs = self.trainer.max_epochs
            if epochs is not None and epochs >= 0:
                main_epochs = max(epochs - self.pretrain_epochs, 1)
                if self.scheduler_interval == "step":
                    total = self.trainer.estimated_stepping_batches
                    scheduler.resolve_total_steps(max(int(total * main_epochs / max(epochs, 1)), 1))
                else:
                    scheduler.resolve_total_steps(main_epochs)
        parameters = self.pretrain_parameters()
        if not self.pretrain_epochs or not parameters:
            return main_config
        if _wants_names(self.optimizer_factory):  # optimizers that group parameters by name (lit_kd.optim)
            wanted = {id(p) for p in parameters}
            pretrain_optimizer = self.optimizer_factory([(n, p) for n, p in self.named_parameters() if id(p) in wanted])
        else:
            pretrain_optimizer = self.optimizer_factory(parameters)
        if self.pretrain_lr is not None:
            for group in pretrain_optimizer.param_groups:
                group["lr"] = self.pretrain_lr
        return main_config, {"optimizer": pretrain_optimizer}

    def _optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]

    def _main_scheduler(self) -> Any:
        schedulers = self.lr_schedulers()
        if isinstance(schedulers, (list, tuple)):
            return schedulers[0] if schedulers else None
        return schedulers

    def manual_training_step(self, batch: KDBatch, batch_idx: int) -> Tensor:
        pretraining = self.pretraining
        optimizers = self._optimizers()
        optimizer = optimizers[1] if pretraining and len(optimizers) > 1 else optimizers[0]
        self._catch_up_scheduler(self.current_epoch)
        logits, losses = self.pretrain_losses(batch) if pretraining else self.training_losses(batch)
        optimizer.zero_grad()
        self.manual_backward(losses["loss"])
        optimizer.step()
        scheduler = self._main_scheduler()
        if not pretraining and scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()
        self.log_training(logits, losses, batch.target)
        self.log("train/stage", float(not pretraining), on_step=False, on_epoch=True, batch_size=batch.size)
        return losses["loss"]

    def _catch_up_scheduler(self, epoch: int) -> None:
        """Bring an epoch-interval scheduler to ``epoch - pretrain_epochs`` main-stage epochs.

        The scheduler's position is derived from the epoch rather than from hook order, so it is
        right after a resume from any checkpoint (saved before or after an epoch's end hooks).
        """
        scheduler = self._main_scheduler()
        if scheduler is None or self.scheduler_interval != "epoch" or not hasattr(scheduler, "last_epoch"):
            return
        while scheduler.last_epoch < epoch - self.pretrain_epochs:
            scheduler.step()

    def on_train_epoch_start(self) -> None:
        self._catch_up_scheduler(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # Ready for the next epoch (and for what LearningRateMonitor logs at its start).
        self._catch_up_scheduler(self.current_epoch + 1)

    def parameters_of(self, *modules: nn.Module) -> Iterator[nn.Parameter]:
        """The trainable parameters of ``modules``."""
        for module in modules:
            yield from (p for p in module.parameters() if p.requires_grad)


def _wants_names(factory: Any) -> bool:
    """Whether an optimizer factory (a class, a ``functools.partial`` of one, or a function) declares
    ``accepts_named_parameters = True``, as the base class checks for the main optimizer."""
    candidates = [factory, getattr(factory, "func", None), *getattr(factory, "args", ())]
    return any(getattr(c, "accepts_named_parameters", False) is True for c in candidates if c is not None)
