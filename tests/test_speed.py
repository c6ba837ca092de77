"""Speed switches (issue 17): logging paid only when written, torch.compile, channels-last, teacher precision."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_kd import KD
from tests.helpers import tiny_trainer


class Tiny(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stem(x).mean((2, 3)))


def loader(batches: int, batch: int = 8, classes: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(batches * batch, 3, 8, 8, generator=g),
                         torch.randint(0, classes, (batches * batch,), generator=g))
    return DataLoader(data, batch_size=batch)


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


# --------------------------------------------------------------------------- logging only when written


def test_training_logs_are_handed_to_lightning_only_when_written_and_epoch_means_are_exact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = KD(Tiny(), Tiny(), num_classes=10, normalize_inputs=False, check_teacher=False)
    calls: list[int] = []
    original = module.log

    def counting_log(name, *args, **kwargs):
        if name.startswith("train/"):
            calls.append(module.trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(module, "log", counting_log)
    steps = StepLosses()
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=0, log_every_n_steps=3,
                           logger=CSVLogger(tmp_path), callbacks=[steps])
    trainer.fit(module, train_dataloaders=loader(7))
    # Written at stepping batches 3, 6 (epoch 0), 9, 12 (epoch 1: its batches 2, 5), plus each epoch's last batch (7).
    # Per write: loss, ce, kd, acc, acc_top5.
    assert sorted(set(calls)) == [2, 3, 5, 6, 7]
    assert len(calls) == 5 * 6
    metrics = trainer.callback_metrics
    second_epoch = steps.losses[7:]
    assert float(metrics["train/loss_epoch"]) == pytest.approx(sum(second_epoch) / 7, rel=1e-5)
    assert {"train/loss", "train/ce_epoch", "train/kd_step", "train/acc", "train/acc_top5"} <= set(metrics)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    step_rows = [r for r in rows if r.get("train/loss_step")]
    # A written step value is the mean since the previous write: steps 1-3 for the first row.
    assert float(step_rows[0]["train/loss_step"]) == pytest.approx(sum(steps.losses[:3]) / 3, rel=1e-5)


def test_training_accuracy_matches_a_direct_count(tmp_path):
    torch.manual_seed(0)
    module = KD(Tiny(), Tiny(), num_classes=10, normalize_inputs=False, check_teacher=False)
    data = loader(5)
    trainer = tiny_trainer(tmp_path, limit_val_batches=0, log_every_n_steps=2)
    hits = {"top1": 0, "top5": 0, "n": 0}

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            with torch.no_grad():
                logits = pl_module(batch[0])
            hits["top1"] += int((logits.argmax(-1) == batch[1]).sum())
            hits["top5"] += int((logits.topk(5, -1).indices == batch[1][:, None]).any(-1).sum())
            hits["n"] += len(batch[1])

    trainer.callbacks.append(Count())
    trainer.fit(module, train_dataloaders=data)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(hits["top1"] / hits["n"])
    assert float(trainer.callback_metrics["train/acc_top5"]) == pytest.approx(hits["top5"] / hits["n"])
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))
