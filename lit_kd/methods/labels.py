"""The class labels a method reads from a batch, with the error a user needs when they are missing."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from lit_kd.contract import DataContractError, KDBatch

__all__ = ["class_targets"]


def class_targets(batch: KDBatch, method: str, why: str, soft: Literal["error", "argmax"] = "error") -> Tensor:
    """The batch's class indices (``B``, int64) for a method whose loss reads the labels.

    Args:
        batch: the training batch.
        method: the method's name, for the message.
        why: what the labels are for, for the message (e.g. "its target/non-target split").
        soft: what to do with soft labels (``B×K``, e.g. from mixup): ``"error"``, or ``"argmax"``
            (the class of largest weight, as some official implementations do).

    Raises:
        DataContractError: the batch has no labels, or soft labels with ``soft="error"``.
    """
    target = batch.target
    if target is None:
        raise DataContractError(f"{method} needs class labels ({why}), but the batch has none. Train it on "
                                "labelled data (KDBatch.target, e.g. (image, target) batches); for unlabelled data "
                                "use a method that needs no labels, such as KD with ce_weight: 0.")
    if target.ndim == 2 and soft == "argmax":
        return target.argmax(dim=1)
    if target.ndim != 1:
        raise DataContractError(f"{method} needs one class index per sample ({why}); got targets of shape "
                                f"{tuple(target.shape)} (soft labels, e.g. from mixup). Turn mixup off or "
                                "convert the labels with target.argmax(dim=1).")
    return target.long()
