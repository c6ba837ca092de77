"""The views of a batch: how a stored ``uint8`` batch becomes the :class:`~lit_kd.contract.KDBatch`
the networks read, on the training device.

A training batch is augmented by the *recipe* (``cifar``: random crop with 4 px padding + flip;
``imagenet``: RandomResizedCrop + flip; ``none``), and the teacher's view relates to the student's
by the *augmentation* mode: ``consistent`` (the very same tensor), ``independent`` (a second draw)
or ``fixed_teacher`` (the un-augmented evaluation view). Evaluation batches get the deterministic
evaluation view, shared by both networks.

With a *strong view* (``strong_view="randaugment"``), training batches also carry a strongly
augmented copy of the student's view in ``KDBatch.views["strong"]``: the same crop and flip, then
RandAugment (:mod:`lit_kd.data.randaugment`), drawn after every other view from the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lit_kd.contract import Augmentation, KDBatch
from lit_kd.data.augment import center_crop_resize, random_crop_flip, random_resized_crop_flip, to_float
from lit_kd.data.randaugment import randaugment

__all__ = ["BatchViews", "TrainingRecipe", "EvalStyle", "StrongView", "STRONG_VIEW_NAME"]

TrainingRecipe = Literal["cifar", "imagenet", "none"]
EvalStyle = Literal["cifar", "imagenet"]
StrongView = Literal["randaugment"]
#: The key of the strong view in ``KDBatch.views``.
STRONG_VIEW_NAME = "strong"


@dataclass(frozen=True)
class BatchViews:
    """Makes the views of stored batches at side ``image_size``.

    Attributes:
        recipe: the training augmentation.
        augmentation: how the teacher's training view relates to the student's.
        image_size: the side ``S`` of every view.
        eval_style: ``"cifar"``: the whole image resized to ``S``; ``"imagenet"``: the centre
            ``S / decode_size`` of the stored image resized to ``S`` (an exact slice when the image
            is stored at ``decode_size``).
        decode_size: the shorter side ImageNet-style evaluation resizes to before its centre crop.
        streamed: batches arrive already augmented per sample by DataLoader workers (large
            folders); they are only converted to float.
        strong_view: ``"randaugment"``: training batches also carry ``views["strong"]``, RandAugment
            of the student's view (same crop and flip; MLKD's strong view); ``None``: no extra view.
    """

    recipe: TrainingRecipe
    augmentation: Augmentation
    image_size: int
    eval_style: EvalStyle
    decode_size: int
    streamed: bool = False
    strong_view: StrongView | None = None

    def eval_view(self, images: Tensor) -> Tensor:
        """The deterministic evaluation view of stored images, float ``[0, 1]`` at ``S``."""
        side = images.shape[-1]
        if self.eval_style == "imagenet":
            crop = max(1, min(side, round(side * self.image_size / self.decode_size)))
            return center_crop_resize(images, crop, self.image_size)
        return center_crop_resize(images, min(images.shape[-2:]), self.image_size)

    def augment(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One random training view of stored images, float ``[0, 1]`` at ``S``."""
        if self.recipe == "cifar":
            if images.shape[-1] != self.image_size:
                images = self.eval_view(images)
            return random_crop_flip(images, padding=4, generator=generator)
        if self.recipe == "imagenet":
            return random_resized_crop_flip(images, self.image_size, generator=generator)
        return self.eval_view(images)

    def __call__(self, batch: Any, train: bool, generator: torch.Generator | None = None) -> KDBatch:
        """The :class:`KDBatch` of one loader batch (a dict with ``"image"``/``"target"`` and optionally
        ``"teacher_image"``/``"index"``, or an ``(images, targets)`` pair)."""
        if isinstance(batch, (tuple, list)):
            batch = {"image": batch[0], "target": batch[1]}
        images, target = batch["image"], batch["target"]
        if self.streamed:
            image = to_float(images)
            teacher = batch.get("teacher_image")
            teacher_image = image if teacher is None or teacher is images else to_float(teacher)
        elif not train or self.recipe == "none":
            image = teacher_image = self.eval_view(images)
        else:
            image = self.augment(images, generator)
            if self.augmentation == "consistent":
                teacher_image = image
            elif self.augmentation == "independent":
                teacher_image = self.augment(images, generator)
            else:
                teacher_image = self.eval_view(images)
        views = {}
        if train and self.strong_view == "randaugment":  # drawn last: the other views do not depend on it
            views[STRONG_VIEW_NAME] = randaugment(image, generator=generator)
        return KDBatch(image=image, target=target.long(), teacher_image=teacher_image, index=batch.get("index"),
                       views=views)
