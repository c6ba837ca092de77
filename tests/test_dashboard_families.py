"""`lit-kd dashboard` against real runs: for each method family, a short offline W&B run with the configs'
callbacks, and the family's workspace must show no panel whose key that run did not log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_kd import DML, KD, PSKD, FitNet, FunctionMatching, InDistill, ModelSpec, MultiTeacherKD, Supervised
from lit_kd.models import create_model
from tests.helpers import digits, offline_wandb, panels_without_data, tiny_trainer

pytest.importorskip("wandb")
pytest.importorskip("wandb_workspaces")

R8 = ModelSpec("resnet8", num_classes=10)
R14 = ModelSpec("resnet14", num_classes=10)


def _function_matching() -> tuple[Any, Any, list]:
    return FunctionMatching(R8, R8, check_teacher=False, report_views=4), digits(augmentation="consistent"), []


def _distpro() -> tuple[Any, Any, list]:
    from lit_kd.methods import DistPro

    return (DistPro(student=R8, teacher=R14, transform="conv1x1", check_teacher=False), digits(meta_split=0.2), [])


def _amd(folder: Path) -> tuple[Any, Any, list]:
    from lit_kd.methods import AMDSearch

    module = AMDSearch(ModelSpec("resnet20_a", num_classes=10), scales=[0.6, 0.3], output_dir=str(folder / "amd"),
                       check_teacher=False, probe_size=16)
    return module, digits(batch_size=16), []


def _indistill() -> tuple[Any, Any, list]:
    from lit_kd.callbacks import RetrievalEvaluation

    teacher = create_model("cnn32", num_classes=10)
    module = InDistill(ModelSpec("cnn32_small", num_classes=10), teacher, check_teacher=False)
    return module, digits(image_size=32, batch_size=32), [RetrievalEvaluation(top_k=10)]


# family -> (build(folder) -> (module, data, extra callbacks), the workspace's --method, has a teacher)
FAMILIES: dict[str, tuple[Callable[[Path], tuple[Any, Any, list]], str, bool]] = {
    "logit (KD)": (lambda _: (KD(R8, R8, check_teacher=False), digits(), []), "KD", True),
    "feature (FitNet)": (lambda _: (FitNet(R8, R14, check_teacher=False), digits(), []), "FitNet", True),
    "multi-teacher": (lambda _: (MultiTeacherKD(R8, [R8, R14], check_teacher=False), digits(), []), "MultiTeacherKD",
                      True),
    "self (PS-KD)": (lambda _: (PSKD(R8), digits(), []), "PSKD", True),
    "online (DML)": (lambda _: (DML([R8, R8]), digits(), []), "DML", False),
    "supervised": (lambda _: (Supervised(R8), digits(), []), "Supervised", False),
    "function matching": (lambda _: _function_matching(), "FunctionMatching", True),
    "DistPro": (lambda _: _distpro(), "DistPro", True),
    "AMD": (_amd, "AMDSearch", True),
    "InDistill": (lambda _: _indistill(), "InDistill", True),
}


def _callbacks(folder: Path, teacher: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor

    from lit_kd.callbacks import DistillationDiagnostics, ImagesPerSecond, RunSummary

    diagnostics = [DistillationDiagnostics(grid_images=4)] if teacher else []
    return [*diagnostics, RunSummary(dirpath=str(folder)), ImagesPerSecond(window=1), LearningRateMonitor()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_dashboard_shows_only_what_its_run_logged(family, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from lit_kd.dashboard import build_workspace

    build, method, teacher = FAMILIES[family]

    def fit() -> None:
        torch.manual_seed(0)
        module, data, extra = build(tmp_path)
        logger = WandbLogger(project="lit_kd_test", save_dir=str(tmp_path), offline=True)
        trainer = tiny_trainer(tmp_path, logger=logger, callbacks=[*_callbacks(tmp_path, teacher), *extra],
                               limit_train_batches=3, limit_val_batches=1, log_every_n_steps=1)
        trainer.fit(module, datamodule=data)

    offline_wandb(fit)
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    missing = panels_without_data(build_workspace("e", "p", method=method, distillation=teacher), run_dir)
    assert not missing, f"{family}: panels whose key the run never logged: {missing}"


def test_chain_dashboard_shows_only_what_a_chain_step_logged(tmp_path):
    from lit_kd.callbacks.chain import AssistantChain, ChainStep
    from lit_kd.dashboard import build_workspace

    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger",
              "init_args": {"project": "lit_kd_test", "save_dir": str(tmp_path / "wandb"), "log_model": False}}
    trainer = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "limit_train_batches": 3, "limit_val_batches": 1,
               "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
               "log_every_n_steps": 1, "logger": logger,
               "callbacks": [{"class_path": "lit_kd.callbacks.DistillationDiagnostics", "init_args": {"grid_images": 4}},
                             {"class_path": "lit_kd.callbacks.ImagesPerSecond", "init_args": {"window": 1}},
                             {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}]}
    data = {"class_path": "lit_kd.data.KDDataModule",
            "init_args": {"dataset": "digits", "batch_size": 64, "image_size": 16, "val_split": 0.1}}
    chain = AssistantChain(teacher=R14, steps=[ChainStep(R8, name="assistant"), ChainStep(R8, name="student")],
                           model={"class_path": "KD", "init_args": {"check_teacher": False}}, data=data,
                           trainer=trainer, root_dir=tmp_path / "chain", name="takd")
    records: list = []
    offline_wandb(lambda: records.extend(chain.run()))
    overview = (tmp_path / "chain" / "overview.md").read_text()
    assert "2 of 2 steps finished" in overview and "| 1 | student | resnet8 |" in overview
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one W&B run per step
    workspace = build_workspace("e", "p", chain="takd", method="KD")
    for run_dir in runs:
        missing = panels_without_data(workspace, run_dir)
        assert not missing, f"{run_dir.name}: panels whose key the step never logged: {missing}"
