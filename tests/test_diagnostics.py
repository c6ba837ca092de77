"""DistillationDiagnostics: teacher-student scalars to any logger, tables and pictures where shown."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_kd import KD, ModelSpec, Supervised
from lit_kd import metric_names as names
from lit_kd.callbacks import DistillationDiagnostics
from lit_kd.callbacks.diagnostics import expected_calibration_error
from tests.helpers import digits, tiny_trainer
from tests.test_reporting import tensorboard_tags

DIAGNOSTIC_SCALARS = (names.AGREEMENT, names.KL, names.TEACHER_ACC, names.ACC_GAP, names.ECE, names.TEACHER_ECE)


def test_expected_calibration_error_matches_its_definition():
    torch.manual_seed(0)
    probs = torch.rand(500, 5).softmax(-1)
    target = torch.randint(0, 5, (500,))
    confidence, prediction = probs.max(-1)
    bins = 10
    index = (confidence * bins).long().clamp(max=bins - 1)
    calibration = torch.zeros(3, bins)
    expected = 0.0
    for b in range(bins):
        chosen = index == b
        calibration[:, b] = torch.tensor([chosen.sum(), confidence[chosen].sum(), (prediction == target)[chosen].sum()])
        if chosen.any():
            gap = (prediction == target)[chosen].float().mean() - confidence[chosen].mean()
            expected += chosen.float().mean() * gap.abs()
    assert expected_calibration_error(calibration) == pytest.approx(float(expected), abs=1e-6)
    assert expected_calibration_error(torch.zeros(3, bins)) == 0.0


def kd_module() -> KD:
    torch.manual_seed(0)
    return KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10), check_teacher=False)


def test_scalars_tables_and_pictures_of_a_kd_run(tmp_path):
    board = TensorBoardLogger(tmp_path, name="tb")
    csv_logger = CSVLogger(tmp_path, name="csv")
    module = kd_module()
    trainer = tiny_trainer(tmp_path, logger=[csv_logger, board], limit_train_batches=1, limit_val_batches=2,
                           callbacks=[DistillationDiagnostics(grid_images=4)])
    trainer.fit(module, datamodule=digits())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for split in ("val", "test"):
        for name in DIAGNOSTIC_SCALARS:
            assert names.key(name, split) in metrics, names.key(name, split)
        gap = metrics[f"{split}/teacher_acc"] - metrics[f"{split}/acc"]
        assert metrics[f"{split}/acc_gap"] == pytest.approx(gap, abs=1e-5)  # same batches as the module's metric
        assert 0 <= metrics[f"{split}/ece"] <= 1 and 0 <= metrics[f"{split}/agreement"] <= 1
    folder = tmp_path / "csv" / "version_0"
    rows = (folder / "val_class_gap.csv").read_text().splitlines()
    assert rows[0] == "class,student_acc,teacher_acc,gap,samples" and len(rows) == 11  # 10 classes, header
    gaps = [float(row.split(",")[3]) for row in rows[1:]]
    assert gaps == sorted(gaps, reverse=True)  # where the student lags most first
    for stem in ("val_reliability", "val_class_gap_plot", "val_disagreements"):
        assert (folder / f"{stem}.png").stat().st_size > 1000
    board.experiment.close()
    tags = tensorboard_tags(tmp_path / "tb")
    for name in (names.RELIABILITY, names.CLASS_GAP_PLOT, names.DISAGREEMENTS):
        assert names.key(name) in tags
    assert "val/class_gap/text_summary" in tags and "val/ece" in tags


def test_csv_only_runs_log_scalars_and_draw_nothing(tmp_path):
    trainer = tiny_trainer(tmp_path, logger=CSVLogger(tmp_path, name="csv"), limit_train_batches=1, limit_val_batches=1,
                           callbacks=[DistillationDiagnostics()])
    trainer.fit(kd_module(), datamodule=digits())
    assert "val/ece" in trainer.callback_metrics and "val/agreement" in trainer.callback_metrics
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*class_gap*"))


def test_methods_without_a_teacher_are_left_alone(tmp_path):
    diagnostics = DistillationDiagnostics()
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1, callbacks=[diagnostics])
    trainer.fit(Supervised(ModelSpec("resnet8", num_classes=10)), datamodule=digits())
    assert not diagnostics.enabled and "val/ece" not in trainer.callback_metrics


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bins"):
        DistillationDiagnostics(bins=0)
