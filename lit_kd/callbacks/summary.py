"""A run summary that never mixes up last-epoch, best-validation and best-test accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from lit_kd import metric_names as names
from lit_kd.callbacks.reporting import report_dir


class RunSummary(L.Callback):
    """Write ``summary.json`` with three separate accuracies, each with its epoch.

    * ``last``: the final epoch's validation and test accuracy.
    * ``best_val``: the epoch with the best validation accuracy (model selection on held-out
      training data) and the test accuracy *at that epoch* -- the honest number to report.
    * ``best_test``: the best test accuracy over epochs and its epoch. It selects on the test set,
      so it is an optimistic bound; some papers report it, we label it.

    Test accuracy per epoch needs :class:`~lit_kd.data.KDDataModule` with ``monitor_test=True``.
    A W&B logger also gets them as run-summary columns (``summary/best_val_acc``, ...; see
    :mod:`lit_kd.metric_names`), for the runs table of ``lit-kd dashboard``.
    The summary is rewritten after every validation epoch, so a killed run still has one, and its
    state is part of the checkpoint, so a resumed run continues the same record.

    Args:
        filename: file name, written in the trainer's log directory (or ``dirpath``).
        dirpath: where to write it instead of the log directory.
        val_key, test_key: the logged metrics to track.
    """

    def __init__(self, filename: str = "summary.json", dirpath: str | None = None,
                 val_key: str = "val/acc", test_key: str = "test/acc") -> None:
        self.filename = filename
        self.dirpath = dirpath
        self.val_key = val_key
        self.test_key = test_key
        self.record: dict[str, Any] = self._empty()

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"last": None, "best_val": None, "best_test": None, "final_test": None, "teacher_val_acc": None,
                "history": []}

    def path(self, trainer: L.Trainer) -> Path:
        # report_dir, not trainer.log_dir: this runs on rank zero only, and log_dir is a collective
        return (Path(self.dirpath) if self.dirpath else report_dir(trainer)) / self.filename

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, so metrics the module logs there (val/teacher_acc) would be missed.
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        val = _number(metrics.get(self.val_key))
        test = _number(metrics.get(self.test_key))
        teacher = _number(metrics.get("val/teacher_acc"))
        if teacher is not None:
            self.record["teacher_val_acc"] = teacher
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, "val_acc": val, "test_acc": test}
        history = [h for h in self.record["history"] if h["epoch"] != entry["epoch"]]
        self.record["history"] = [*history, entry]
        self.record["last"] = entry
        if val is not None and (self.record["best_val"] is None or val > self.record["best_val"]["val_acc"]):
            self.record["best_val"] = entry
        if test is not None and (self.record["best_test"] is None or test > self.record["best_test"]["test_acc"]):
            self.record["best_test"] = entry
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        test = _number(trainer.callback_metrics.get(self.test_key))
        if test is not None:
            self.record["final_test"] = {"epoch": trainer.current_epoch, "test_acc": test,
                                         "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None}
            self._write(trainer)

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.record, indent=2))
        self._to_wandb(trainer)

    def columns(self) -> dict[str, float]:
        """The record as the W&B run summary's columns (names from :mod:`lit_kd.metric_names`)."""
        record = self.record
        values = {
            names.SUMMARY_LAST_VAL: (record["last"] or {}).get("val_acc"),
            names.SUMMARY_BEST_VAL: (record["best_val"] or {}).get("val_acc"),
            names.SUMMARY_TEST_AT_BEST_VAL: (record["best_val"] or {}).get("test_acc"),
            names.SUMMARY_BEST_TEST: (record["best_test"] or {}).get("test_acc"),
            names.SUMMARY_FINAL_TEST: (record["final_test"] or {}).get("test_acc"),
        }
        return {key: value for key, value in values.items() if value is not None}

    def _to_wandb(self, trainer: L.Trainer) -> None:
        # The runs table of a W&B workspace shows summary values, not files: the three accuracies go there too.
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(self.columns())

    def state_dict(self) -> dict[str, Any]:
        return {"record": json.dumps(self.record)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.record = json.loads(state_dict["record"])


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
