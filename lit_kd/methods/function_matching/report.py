"""Function matching's pictures: the images the two networks were actually fed (after the shared
view and mixup), drawn once per epoch by :class:`FunctionMatchingReport`.

Teacher-student agreement over steps is a logged scalar (``train/agreement``), not a picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_kd import metric_names as names
from lit_kd.callbacks.reporting import log_image, report_dir, show_image

__all__ = ["FedViews", "FunctionMatchingReport", "plot_views"]


@dataclass
class FedViews:
    """The first images of one training batch as the networks read them (pixels before normalization),
    on the CPU: ``student`` and ``teacher`` (the same tensor for the consistent views), the mixup
    coefficient ``a`` (``None`` without mixing), the view's name and the epoch and step."""

    student: Tensor
    teacher: Tensor
    mixup_a: float | None
    view: str
    epoch: int
    step: int

    @property
    def shared(self) -> bool:
        """Whether both networks read the very same pixels."""
        return self.student.shape == self.teacher.shape and bool((self.student == self.teacher).all())


def plot_views(views: FedViews, path: Path) -> Path:
    """A grid of the fed images: one row when both networks read the same pixels, else a student row
    and a teacher row; the title names the view, the epoch and the mixup coefficient."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend is left alone

    rows = [("student and teacher", views.student)] if views.shared else [("student", views.student),
                                                                           ("teacher", views.teacher)]
    count = views.student.shape[0]
    fig = Figure(figsize=(1.3 * count + 0.6, 1.4 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), count, squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(count):
            ax = axes[row][column]
            show_image(ax, images[column])
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(label, fontsize=8)
    mix = "no mixup" if views.mixup_a is None else f"mixup a = {views.mixup_a:.2f}"
    fig.suptitle(f"{views.view}: epoch {views.epoch}, step {views.step}, {mix}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


class FunctionMatchingReport(L.Callback):
    """Once every ``every_n_epochs`` epochs, the first ``images`` images of that epoch's first training
    batch, as both networks read them, drawn to ``function_matching_views.png`` in the run's folder
    (overwritten) and logged as ``function_matching/views`` by loggers that show pictures (one image
    per epoch in W&B's media slider). :class:`~lit_kd.methods.FunctionMatching` attaches it itself
    (its ``report_views`` sets ``images``; 0 switches the report off).

    Args:
        images: how many images per picture.
        every_n_epochs: draw every this many epochs.
    """

    def __init__(self, images: int = 8, every_n_epochs: int = 1) -> None:
        if images < 1 or every_n_epochs < 1:
            raise ValueError(f"images and every_n_epochs must be >= 1, got {images} and {every_n_epochs}")
        self.images = images
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and trainer.current_epoch % self.every_n_epochs == 0:
            pl_module.capture_views = self.images  # the method keeps the next batch's first images

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        views = getattr(pl_module, "fed_views", None)
        if views is None or not trainer.is_global_zero:
            return
        pl_module.fed_views = None
        try:
            path = plot_views(views, report_dir(trainer) / "function_matching_views.png")
        except ImportError:
            rank_zero_warn("matplotlib is not installed: no picture of function matching's views")
            return
        log_image(trainer, names.FUNCTION_MATCHING_VIEWS, path)
