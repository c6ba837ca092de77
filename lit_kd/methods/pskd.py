"""PS-KD: progressive self-knowledge distillation, the student's own past predictions as soft targets.

Kim, Ji, Yoon & Hwang, "Self-Knowledge Distillation with Progressive Refinement of Targets" (ICCV
2021). The losses are :func:`lit_kd.losses.pskd_alpha`, :func:`lit_kd.losses.pskd_targets` and
:func:`lit_kd.losses.pskd_loss` (golden-tested against the official code).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import pskd_alpha, pskd_loss, pskd_targets
from lit_kd.methods.base import DistillationModule
from lit_kd.models import ModelSpec

__all__ = ["PSKD"]

TargetSource = Literal["snapshot", "memory"]


class PSKD(DistillationModule):
    r"""Progressive self-knowledge distillation (Kim, Ji, Yoon & Hwang, ICCV 2021): the student's
    targets mix the one-hot label with its own prediction of the previous epoch, more and more.

    .. math::
        \alpha_t = \alpha_T \frac{t}{T}, \qquad
        \tilde y_t = (1-\alpha_t)\, y + \alpha_t\, p_{t-1}(x), \qquad
        L = -\frac{1}{B}\sum_b \sum_c \tilde y_{b,c} \log \mathrm{softmax}(z_b)_c

    (:func:`~lit_kd.losses.pskd_alpha` with the official epoch indexing, :math:`t` = epoch + 1 of
    ``total_epochs``; :func:`~lit_kd.losses.pskd_targets`; :func:`~lit_kd.losses.pskd_loss`). In the
    first epoch the target is the one-hot label (there is no past prediction yet), as officially.
    Defaults: :math:`\alpha_T = 0.8`, the paper's and the official code's.

    **Where** :math:`p_{t-1}` **comes from** (``targets``):

    * ``"snapshot"`` (default): the frozen teacher of :class:`~lit_kd.methods.base.DistillationModule`
      is a *snapshot of the student*, refreshed at each epoch boundary (at the start of epoch t it
      becomes the student as it was at the end of epoch t-1) and frozen in between with the base's
      guarantees: eval mode, no gradients, outside the optimizer. :math:`p_{t-1}(x)` is its
      prediction (temperature 1) on the current batch's teacher view. Because the snapshot is state,
      it is always written to checkpoints (with the epoch it belongs to), so a resumed run equals an
      uninterrupted one, also when it resumes in the middle of an epoch. No teacher-accuracy check
      (the snapshot is the student).
    * ``"memory"``: the official reading (lgcnsai/PS-KD-Pytorch ``main.py``): the softmax of the
      student's own training-mode output for each sample is stored by sample index during the epoch,
      and read at that sample's next visit, so :math:`p_{t-1}(x)` is the prediction made one epoch
      earlier on that epoch's augmented view. Needs ``KDBatch.index`` (``KDDataModule(return_index=
      True)``); the store (samples × classes floats) is kept in checkpoints. A sample not yet seen
      counts as its one-hot label, as the official store is initialized in the first epoch. The
      snapshot network then is never run.

    The two readings differ in what predicts :math:`p_{t-1}`: a single network frozen at the end of
    the previous epoch, in eval mode, on today's view (snapshot), or the network as it was when it
    met the sample during the previous epoch, in training mode, on that epoch's view (memory).

    Args:
        student: the network to train (its snapshot is built from the same spec or a copy of the module).
        alpha_final: :math:`\alpha_T`, the weight of the past prediction in the last epoch.
        targets: ``"snapshot"`` or ``"memory"`` (above).
        total_epochs: T of the schedule (default: the trainer's ``max_epochs``).
        **kwargs: the :class:`~lit_kd.methods.base.StudentModule` arguments (``log_agreement`` too).
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        alpha_final: float = 0.8,
        targets: TargetSource = "snapshot",
        total_epochs: int | None = None,
        **kwargs: Any,
    ) -> None:
        for fixed in ("teacher", "store_teacher", "check_teacher"):
            if fixed in kwargs:
                raise ValueError(f"PSKD sets {fixed} itself: its teacher is a snapshot of the student, always stored "
                                 "in checkpoints and never checked for accuracy.")
        if targets not in ("snapshot", "memory"):
            raise ValueError(f"targets must be 'snapshot' or 'memory', got {targets!r}.")
        if not 0.0 <= alpha_final <= 1.0:
            raise ValueError(f"alpha_final must be in [0, 1], got {alpha_final}.")
        if total_epochs is not None and total_epochs < 1:
            raise ValueError(f"total_epochs must be at least 1, got {total_epochs}.")
        snapshot = copy.deepcopy(student) if isinstance(student, nn.Module) else student
        super().__init__(student, snapshot, store_teacher=targets == "snapshot", check_teacher=False, **kwargs)
        del self.hparams["teacher"]  # the snapshot is not an argument
        self.teacher.load_state_dict(self.student.state_dict())
        self.alpha_final = float(alpha_final)
        self.targets = targets
        self.total_epochs = total_epochs
        # The epoch whose start the snapshot belongs to (checkpointed with it).
        self.register_buffer("snapshot_epoch", torch.tensor(0, dtype=torch.long))
        self.prediction_memory: Tensor | None = None  # (samples, classes), "memory" only
        self.memory_filled: Tensor | None = None

    # ------------------------------------------------------------------ the schedule
    def schedule_length(self) -> int:
        """T of :math:`\\alpha_t`: ``total_epochs`` or the trainer's ``max_epochs``."""
        if self.total_epochs is not None:
            return self.total_epochs
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        if max_epochs is None or max_epochs < 1:
            raise ValueError("PSKD's alpha_t grows to alpha_final over the run's epochs, and the trainer has no "
                             "max_epochs: set trainer.max_epochs or PSKD's total_epochs.")
        return int(max_epochs)

    def alpha_t(self) -> float:
        """:math:`\\alpha_t` of the current epoch (official indexing: ``alpha_final · (epoch + 1) / T``)."""
        return pskd_alpha(self.current_epoch, self.schedule_length(), self.alpha_final)

    def on_fit_start(self) -> None:
        self.schedule_length()  # a clear error before the first step

    def refresh_snapshot(self) -> None:
        """Copy the student's weights and buffers into the frozen snapshot."""
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.eval()
        self.forget_teacher_outputs()  # the cached evaluation logits were the old snapshot's

    def on_train_epoch_start(self) -> None:
        if self.targets == "snapshot" and int(self.snapshot_epoch) != self.current_epoch:
            self.refresh_snapshot()
            self.snapshot_epoch.fill_(self.current_epoch)

    # ------------------------------------------------------------------ the targets
    def previous_predictions(self, batch: KDBatch, labels: Tensor, num_classes: int) -> Tensor | None:
        """:math:`p_{t-1}` for the batch, or ``None`` in the first epoch (the target is the label)."""
        if self.targets == "snapshot":
            if self.current_epoch == 0:
                return None
            logits = self.teacher_logits(batch.teacher_image)
            return F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        index = self.require_index(batch)
        if self.current_epoch == 0 or self.prediction_memory is None:
            return None
        self.grow_memory(int(index.max()) + 1, num_classes)
        index = index.to(self.prediction_memory.device)
        one_hot = F.one_hot(labels, num_classes).to(self.prediction_memory.dtype).to(self.prediction_memory.device)
        stored = torch.where(self.memory_filled[index].unsqueeze(1), self.prediction_memory[index], one_hot)
        return stored.to(labels.device)

    def require_index(self, batch: KDBatch) -> Tensor:
        if batch.index is None:
            raise DataContractError(
                "PSKD(targets='memory') stores each sample's prediction by its index, and the batch has no index. "
                "Set data.return_index: true (KDDataModule), yield (image, target, index) batches, or use "
                "targets='snapshot'.")
        return batch.index

    def grow_memory(self, num_samples: int, num_classes: int) -> None:
        """Make the prediction store hold at least ``num_samples`` rows (indices are positions in the data set)."""
        if self.prediction_memory is None:
            self.prediction_memory = torch.zeros(0, num_classes, device=self.device)
            self.memory_filled = torch.zeros(0, dtype=torch.bool, device=self.device)
        missing = num_samples - self.prediction_memory.shape[0]
        if missing > 0:
            memory, filled = self.prediction_memory, self.memory_filled
            self.prediction_memory = torch.cat([memory, memory.new_zeros(missing, num_classes)])
            self.memory_filled = torch.cat([filled, filled.new_zeros(missing)])

    def remember(self, index: Tensor, probabilities: Tensor) -> None:
        """Store this step's predictions (every rank's, under DDP) by sample index."""
        if self._trainer is not None and self.trainer.world_size > 1:
            index = self.all_gather(index).reshape(-1)
            probabilities = self.all_gather(probabilities).reshape(-1, probabilities.shape[-1])
        self.grow_memory(int(index.max()) + 1, probabilities.shape[-1])
        index = index.to(self.prediction_memory.device)
        self.prediction_memory[index] = probabilities.detach().to(self.prediction_memory)
        self.memory_filled[index] = True

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        labels = batch.target
        if labels is None or labels.ndim != 1:
            raise DataContractError("PSKD mixes the one-hot labels with past predictions and needs class labels; the "
                                    "batch has none. Give labelled data.")
        alpha = self.alpha_t()
        logits = self(batch.image)
        num_classes = logits.shape[-1]
        previous = self.previous_predictions(batch, labels, num_classes)
        loss = pskd_loss(logits, pskd_targets(labels, previous, alpha, num_classes))
        if self.targets == "memory":
            self.remember(batch.index, F.softmax(logits.detach().float(), dim=-1))
        if self._trainer is not None and self.trainer.training:  # inside the training loop only
            self.log("train/pskd_alpha", alpha, on_step=False, on_epoch=True, batch_size=batch.size)
        return logits, {"loss": loss, "pskd": loss.detach()}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.prediction_memory is not None:
            checkpoint["pskd_memory"] = {"predictions": self.prediction_memory.cpu(),
                                         "filled": self.memory_filled.cpu()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        memory = checkpoint.get("pskd_memory")
        if memory is not None:
            self.prediction_memory = memory["predictions"].to(self.device)
            self.memory_filled = memory["filled"].to(self.device)
