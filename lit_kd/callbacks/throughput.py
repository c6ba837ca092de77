"""Training throughput in images per second."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from lit_kd import metric_names as names
from lit_kd.contract import KDBatch


class ImagesPerSecond(L.Callback):
    """Log ``train/images_per_sec``: images of the global batch over the wall time of a step.

    Measured from the start of one training batch to the start of the next, so it includes data
    loading and augmentation, i.e. what the run really achieves.

    Args:
        window: number of steps averaged per logged value.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._images = 0
        self._start: float | None = None
        self._steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images, self._steps = None, 0, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self._start is None:
            self._start = now
            return
        if self._steps >= self.window:
            rate = self._images / (now - self._start)
            pl_module.log(names.IMAGES_PER_SEC, rate, on_step=True, on_epoch=False, prog_bar=True)
            self._start, self._images, self._steps = now, 0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._start is None:
            return
        # Any batch form; a meta-validation batch (KDBatch.meta) is not counted as trained images.
        self._images += KDBatch.from_any(batch).size * trainer.world_size
        self._steps += 1
