"""Checkpoints that keep their promises: ``last.ckpt`` is the last epoch, nothing is lost or overwritten
silently, and weights that are not finite are never written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["Checkpoint", "CheckpointError", "NonFiniteWeightsError"]


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be written, holds an earlier run, or lost a file just written."""


class NonFiniteWeightsError(RuntimeError):
    """Weights with NaN or infinite values, which lit_kd never saves or exports."""


class Checkpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with the guarantees lit_kd's configs and chains rely on.

    * ``last.ckpt`` is always the latest epoch. Since Lightning 2.6, ``save_last=True`` on a
      checkpoint that monitors a metric refreshes ``last.ckpt`` only when a top-k save happens in
      the same step, so after an epoch that did not improve it held an older epoch; a resume from
      it repeated epochs. Here it is written at every save point.
    * The folder is checked to be writable before training starts, and every file is checked to
      exist after it was written (a failed save otherwise passed silently).
    * A folder that already holds ``.ckpt`` files of an earlier run is refused before training
      unless this fit resumes from one of them or ``overwrite=True``: a rerun of a config never
      replaces an earlier run's better ``best.ckpt`` silently.
    * The monitored metric must be one the data logs: ``val/acc`` with ``KDDataModule(val_split=0)``
      (whose only validation loader is the test split) is refused before training.
    * Weights that are not finite are never saved (:class:`NonFiniteWeightsError`).

    Args:
        overwrite: allow a fit that does not resume to write into a folder holding checkpoints of an
            earlier run (they are replaced as the new run saves).
        **kwargs: the arguments of ``lightning.pytorch.callbacks.ModelCheckpoint`` (``dirpath``,
            ``filename``, ``monitor``, ``mode``, ``save_last``, ...). The version counter is off by
            default (``best.ckpt`` keeps its name; the overwrite check protects earlier runs).
    """

    def __init__(self, overwrite: bool = False, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=enable_version_counter, **kwargs)
        self.overwrite = overwrite
        self._last_written_step: int | None = None

    # ------------------------------------------------------------------ before training
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not trainer.is_global_zero or self.dirpath is None or "://" in str(self.dirpath):
            return
        folder = Path(self.dirpath)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
        except OSError as err:
            raise CheckpointError(
                f"The checkpoint folder {str(folder)!r} cannot be written ({type(err).__name__}: {err}). Nothing would "
                "be saved: fix its permissions or choose another folder (checkpoint.dirpath or trainer.default_root_dir)."
            ) from err

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not in setup: Lightning knows the checkpoint a fit resumes from only after setup.
        if trainer.is_global_zero and self.dirpath is not None and "://" not in str(self.dirpath):
            folder = Path(self.dirpath)
            earlier = sorted(p.name for p in folder.glob("*.ckpt"))
            resuming = trainer.ckpt_path is not None and Path(trainer.ckpt_path).resolve().parent == folder.resolve()
            if earlier and not resuming and not self.overwrite:
                raise CheckpointError(
                    f"The checkpoint folder {str(folder)!r} already holds checkpoints of an earlier run "
                    f"({', '.join(earlier[:5])}), which this fit would overwrite. Resume that run with "
                    f"--ckpt_path {folder / 'last.ckpt'}, start this one elsewhere (another trainer.default_root_dir "
                    "or checkpoint dirpath), or replace them on purpose with --overwrite true "
                    "(Checkpoint(overwrite=True) in Python).")
        names = getattr(getattr(pl_module, "data_info", None), "val_split_names", ())
        if not self.monitor or not names or "/" not in self.monitor:
            return
        split = self.monitor.split("/", 1)[0]
        if split in ("val", "test") and split not in names:
            raise CheckpointError(
                f"The checkpoint monitors {self.monitor!r}, but the data's validation loaders are {list(names)}, so it is "
                f"never logged (with KDDataModule, val_split: 0 leaves no held-out split). Set data.val_split > 0 "
                f"(model selection on held-out training data), or monitor {names[0]}/acc "
                f"(--checkpoint.monitor {names[0]}/acc: selection on that split, an optimistic number if it is the "
                "test split).")

    # ------------------------------------------------------------------ every save point
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if due:
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        if due:
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last and self._last_written_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        bad = [name for name, value in module.state_dict().items()
               if torch.is_floating_point(value) and not bool(torch.isfinite(value).all())]
        if bad:
            raise NonFiniteWeightsError(
                f"Refusing to save {filepath}: {len(bad)} tensors hold NaN or infinite values (e.g. {bad[:3]}). The "
                "run diverged: lower the learning rate, check the data and the teacher, or resume from an earlier "
                "checkpoint.")
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and "://" not in str(filepath) and not os.path.isfile(filepath):
            raise CheckpointError(f"Saving {filepath} reported success but the file does not exist: the folder is not "
                                  "writable or the disk is full. Nothing of this run would be kept; fix that and resume.")
