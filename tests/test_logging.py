"""Metrics, the run summary, W&B (offline) and the notebooks (every one executed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest

from lit_kd import KD, ModelSpec, Supervised
from lit_kd.callbacks import ImagesPerSecond, RunSummary
from tests.helpers import REPO, digits, tiny_trainer


def test_run_summary_keeps_last_best_val_and_best_test_apart(tmp_path):
    L.seed_everything(0)
    module = Supervised(ModelSpec("resnet8", num_classes=10))
    summary = RunSummary(dirpath=str(tmp_path))
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=4, callbacks=[summary, ImagesPerSecond(2)])
    trainer.fit(module, datamodule=digits())
    record = json.loads((tmp_path / "summary.json").read_text())
    history = record["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert record["last"] == history[-1]
    best_val = max(history, key=lambda h: h["val_acc"])
    best_test = max(history, key=lambda h: h["test_acc"])
    assert record["best_val"]["val_acc"] == best_val["val_acc"]
    assert record["best_val"]["test_acc"] == best_val["test_acc"]  # test accuracy *at* the best-val epoch
    assert record["best_test"]["test_acc"] == best_test["test_acc"]
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/acc", "val/acc", "val/acc_top5", "test/acc", "train/images_per_sec"):
        assert key in metrics, key
    trainer.test(module, datamodule=digits())
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["final_test"]["test_acc"] == pytest.approx(float(trainer.callback_metrics["test/acc"]))


def test_summary_records_teacher_accuracy_of_a_one_epoch_run(tmp_path):
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, callbacks=[RunSummary(dirpath=str(tmp_path))])
    with pytest.warns(UserWarning, match="TEACHER NEAR CHANCE"):
        trainer.fit(module, datamodule=digits())
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["teacher_val_acc"] == pytest.approx(float(trainer.callback_metrics["val/teacher_acc"]))


def test_loss_components_logged_separately(tmp_path):
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=digits())
    for key in ("train/loss", "train/ce", "train/kd"):
        assert key in trainer.callback_metrics
    total = 0.1 * trainer.callback_metrics["train/ce_epoch"] + 0.9 * trainer.callback_metrics["train/kd_epoch"]
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(float(total), rel=1e-4)


def test_wandb_logger_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="lit_kd_test", save_dir=str(tmp_path), offline=True)
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, logger=logger, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1)
    trainer.fit(module, datamodule=digits())
    summary = dict(logger.experiment.summary)
    assert {"val/acc", "train/kd_step", "val/teacher_acc"} <= set(summary)
    logger.experiment.finish()
    run_files = list(tmp_path.rglob("run-*.wandb"))  # the offline run, ready for `wandb sync`
    assert run_files


NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def check_quickstart(outputs: str, out: Path) -> None:
    assert "student test accuracy" in outputs
    assert (out / "runs" / "curves.png").is_file()
    assert os.path.getsize(out / "runs" / "curves.png") > 1000


def check_function_matching(outputs: str, out: Path) -> None:
    assert "function_matching" in outputs and "agreement" in outputs
    for view in ("fixed_teacher", "independent", "consistent", "function_matching"):
        assert (out / f"views_{view}.png").stat().st_size > 2000, view  # what each view fed the networks
    assert list(out.glob("fm_function_matching/*/function_matching_views.png"))  # the report's picture


def check_distpro_and_indistill(outputs: str, out: Path) -> None:
    assert "after the replay" in outputs and "mAP (euclidean)" in outputs
    search = list(out.glob("distpro_search/*"))
    assert (search[0] / "distpro_alpha_heatmap.png").is_file() and (search[0] / "distpro_process.pt").is_file()
    assert list(out.glob("indistill/*/retrieval_pr_curve.png"))


def check_assistant_chains(outputs: str, out: Path) -> None:
    assert "steps finished" in outputs and (out / "takd" / "overview.md").is_file()


# Per notebook: extra environment (the notebook's parameter cell already holds tiny settings) and a check.
NOTEBOOK_SETTINGS = {
    "quickstart": ({"QUICKSTART_EPOCHS": "1", "QUICKSTART_THREADS": "1", "QUICKSTART_DIR": "{out}/runs"}, check_quickstart),
    "function_matching": ({}, check_function_matching),
    "distpro_and_indistill": ({}, check_distpro_and_indistill),
    "assistant_chains": ({}, check_assistant_chains),
}


def test_every_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is stored with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    """Runs the notebook top to bottom in a fresh kernel (tiny settings); any error fails the test."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    env, check = NOTEBOOK_SETTINGS.get(path.stem, ({}, None))
    monkeypatch.setenv("LIT_KD_NOTEBOOK_DIR", str(tmp_path))  # where the notebooks write runs and data
    monkeypatch.setenv("WANDB_MODE", "offline")
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(out=tmp_path))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    assert not [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if check is not None:
        outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
        check(outputs, tmp_path)
