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


def count_forwards(network: torch.nn.Module, module: KD, calls: list[str]) -> None:
    """Record the trainer stage of every forward of ``network`` in ``calls``."""
    network.register_forward_hook(lambda *_: calls.append(str(getattr(module.trainer.state.stage, "value", None))))


def test_later_evaluations_reuse_the_teachers_logits(tmp_path):
    """The teacher runs once per evaluation batch per fit; later epochs read its logits back, and the
    logged agreement, KL and diagnostics are those of a run that recomputes them every time."""
    metrics, forwards = {}, {}
    for cache in (True, False):
        torch.manual_seed(0)
        module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10),
                    cache_eval_teacher=cache)
        calls: list[str] = []
        count_forwards(module.teacher, module, calls)
        trainer = tiny_trainer(tmp_path / str(cache), max_epochs=3, limit_train_batches=2, limit_val_batches=2,
                               callbacks=[DistillationDiagnostics()])
        trainer.fit(module, datamodule=digits())
        metrics[cache] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        forwards[cache] = calls.count("validate")
        assert module.cached_evaluation_batches == 0  # emptied at teardown
    loaders = 2  # the val and test splits, 2 batches each
    assert forwards == {True: loaders * 2, False: 3 * loaders * 2}
    assert metrics[True] == metrics[False]
    assert "val/agreement" in metrics[True] and "test/teacher_ece" in metrics[True]


def test_changed_or_forgotten_evaluation_pixels_run_the_teacher_again():
    from lit_kd.contract import KDBatch

    torch.manual_seed(0)
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10), log_agreement=True)
    calls: list[int] = []
    module.teacher.register_forward_hook(lambda *_: calls.append(1))
    images = torch.rand(4, 3, 16, 16)
    batch = KDBatch(images, torch.zeros(4, dtype=torch.long))
    first = module.evaluation_teacher_logits(batch, 0)
    first.mul_(0)  # the caller's copy: the cache keeps its own
    again = module.evaluation_teacher_logits(KDBatch(images.clone(), batch.target), 0)
    assert len(calls) == 1 and torch.equal(again, module.teacher_logits(images))
    calls.clear()
    for changed in (images.flip(-1), images.roll(1, 0), images[:3], images + 1 / 255):
        logits = module.evaluation_teacher_logits(KDBatch(changed, batch.target[:len(changed)]), 0)
        assert torch.equal(logits, module.teacher_logits(changed))
    assert len(calls) == 4 + 4  # each changed batch: its evaluation, and the direct call beside it
    module.evaluation_teacher_logits(batch, 1)  # another batch index: its own entry
    assert module.cached_evaluation_batches == 2
    module.forget_teacher_outputs()
    count = len(calls)
    module.evaluation_teacher_logits(batch, 1)
    assert len(calls) == count + 1
    # Without log_agreement nothing reads the teacher after the first evaluation: nothing is kept.
    quiet = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10))
    quiet.evaluation_teacher_logits(batch, 0)
    assert quiet.cached_evaluation_batches == 0


def test_pixel_fingerprint_tells_one_level_changes_apart_at_imagenet_size():
    from lit_kd.methods.base import pixel_fingerprint

    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    changed = images.clone()
    changed[1, 2, 200, 7] ^= 1  # one intensity level, one pixel
    before, after = pixel_fingerprint(images), pixel_fingerprint(changed)
    assert before[0] == after[0] and before[1] != after[1]
    assert torch.equal(pixel_fingerprint(images.clone()), before)


def test_pskd_refresh_forgets_the_old_snapshots_logits():
    from lit_kd.contract import KDBatch
    from lit_kd.methods.pskd import PSKD

    module = PSKD(ModelSpec("resnet8", num_classes=10), log_agreement=True)
    batch = KDBatch(torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))
    module.evaluation_teacher_logits(batch, 0)
    assert module.cached_evaluation_batches == 1
    with torch.no_grad():
        next(module.student.parameters()).add_(1.0)
    module.refresh_snapshot()
    assert torch.equal(module.evaluation_teacher_logits(batch, 0), module.teacher_logits(batch.teacher_image))
