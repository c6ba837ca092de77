"""The assistant chain: runs, resumes without repeating a finished step, refuses foreign manifests, DDP, W&B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_kd.callbacks.chain import AssistantChain, ChainConfigError, ChainStep
from lit_kd.models import ModelSpec
from tests.helpers import REPO, SHARED_DATA

DIGITS = {"class_path": "lit_kd.data.KDDataModule",
          "init_args": {"dataset": "digits", "batch_size": 16, "image_size": 8, "val_split": 0.1}}
TRAINER = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
           "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
           "deterministic": True}


class ChainKilled(RuntimeError):
    pass


class KillAt(L.Callback):
    """Raise (like a killed job) when the chain reaches ``step`` at the start of ``epoch``."""

    def __init__(self, step: int, epoch: int = 0) -> None:
        self.step, self.epoch = step, epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        chain = next(c for c in trainer.callbacks if isinstance(c, AssistantChain))
        if chain.step_index == self.step and trainer.current_epoch == self.epoch:
            raise ChainKilled(f"killed in step {self.step}, epoch {self.epoch}")


class FitLog(L.Callback):
    """Which (step, starting epoch) each fit ran."""

    def __init__(self) -> None:
        self.fits: list[tuple[int, int]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        chain = next(c for c in trainer.callbacks if isinstance(c, AssistantChain))
        self.fits.append((chain.step_index, trainer.current_epoch))


def three_step_chain(root: Path, callbacks=(), temperature: float = 4.0, name: str = "tiny") -> AssistantChain:
    return AssistantChain(
        teacher=ModelSpec("resnet14", num_classes=10),
        steps=[ChainStep(ModelSpec("resnet8", num_classes=10), name="assistant1"),
               ChainStep(ModelSpec("resnet8", num_classes=10), name="assistant2",
                         model={"init_args": {"temperature": temperature}}),
               ChainStep(ModelSpec("resnet8", num_classes=10), name="student", trainer={"max_epochs": 2})],
        model={"class_path": "KD", "init_args": {"check_teacher": False,
               "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}}},
        data=DIGITS, trainer=TRAINER, root_dir=root, name=name, callbacks=callbacks)


def student_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("student.")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("uninterrupted")
    return root, three_step_chain(root).run()


def test_chain_runs_every_step_and_passes_checkpoints_on(uninterrupted):
    root, records = uninterrupted
    assert [r.index for r in records] == [0, 1, 2]
    manifest = json.loads((root / "chain.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["assistant1", "assistant2", "student"]
    assert manifest["running"] is None
    for record in records:
        assert Path(record.checkpoint).is_file() and record.checkpoint == record.best_checkpoint
        assert record.metrics["val/acc"] >= 0 and record.summary["best_val"] is not None
    assert [r.parameters for r in records] == [78_042] * 3
    # Each step's teacher is the previous step's chosen checkpoint.
    hparams = torch.load(records[2].checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["teacher"]["checkpoint"] == records[1].checkpoint
    assert hparams["temperature"] == 4.0


@pytest.mark.parametrize("kill", [(1, 0), (2, 1)], ids=["after-step-0", "mid-last-step"])
def test_killed_chain_resumes_without_repeating_a_step(uninterrupted, tmp_path, kill):
    _, reference = uninterrupted
    with pytest.raises(ChainKilled):
        three_step_chain(tmp_path, callbacks=[KillAt(*kill)]).run()
    finished = json.loads((tmp_path / "chain.json").read_text())["steps"]
    assert len(finished) == kill[0]
    first_step_file = tmp_path / finished[0]["checkpoint"]  # stored relative to the chain folder
    mtime = first_step_file.stat().st_mtime_ns

    log = FitLog()
    records = three_step_chain(tmp_path, callbacks=[log]).run()
    # Finished steps are never rerun; the step that died resumes from its last checkpoint.
    assert [step for step, _ in log.fits] == list(range(kill[0], 3))
    assert log.fits[0] == kill
    assert first_step_file.stat().st_mtime_ns == mtime
    final, expected = student_weights(records[-1].checkpoint), student_weights(reference[-1].checkpoint)
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key


def test_manifest_of_another_configuration_or_chain_is_refused(uninterrupted):
    root, _ = uninterrupted
    with pytest.raises(ChainConfigError, match=r"different configuration: finished step 1 \('assistant2'\)"):
        three_step_chain(root, temperature=2.0).run()
    with pytest.raises(ChainConfigError, match="belongs to chain 'tiny', not 'other'"):
        three_step_chain(root, name="other").run()
    before = (root / "chain.json").read_text()
    assert (root / "chain.json").read_text() == before


def test_student_larger_than_its_teacher_is_refused_before_training(tmp_path):
    chain = AssistantChain(teacher=ModelSpec("resnet8", num_classes=10),
                           steps=[ChainStep(ModelSpec("resnet14", num_classes=10), name="big")],
                           data=DIGITS, trainer=TRAINER, root_dir=tmp_path)
    with pytest.raises(ChainConfigError, match=r"student resnet14 has 175,258 parameters, more than its teacher "
                                               r"resnet8 \(78,042\).*largest student to the smallest"):
        chain.run()
    assert not (tmp_path / "chain.json").exists()


def test_module_students_pass_their_trained_weights_on(tmp_path):
    import timm

    from tests.helpers import snapshot

    torch.manual_seed(0)
    assistant = timm.create_model("resnet8", num_classes=10)  # e.g. a pruned network that has no spec
    before = snapshot(assistant)
    seen = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen[len(seen)] = snapshot(pl_module.teacher)

    chain = AssistantChain(teacher=ModelSpec("resnet14", num_classes=10),
                           steps=[ChainStep(assistant, name="module_assistant"),
                                  ChainStep(ModelSpec("resnet8", num_classes=10), name="student")],
                           model={"class_path": "KD", "init_args": {"check_teacher": False}},
                           data=DIGITS, trainer=TRAINER, root_dir=tmp_path, callbacks=[Spy()])
    records = chain.run()
    assert all(torch.equal(v, before[k]) for k, v in snapshot(assistant).items())  # the given module is untouched
    trained = {k[len("student."):]: v for k, v in student_weights(records[0].checkpoint).items()}
    assert trained.keys() == seen[1].keys()
    assert all(torch.equal(seen[1][k], trained[k]) for k in trained)  # step 1's teacher = step 0's checkpoint
    assert not all(torch.equal(trained[k], before[k]) for k in trained)


def test_bad_chain_configs_say_what_to_fix(tmp_path):
    from lit_kd.callbacks.chain import load_chain_config

    with pytest.raises(ChainConfigError, match="Unknown top-level keys.*'stpes'"):
        load_chain_config({"teacher": {"name": "resnet8"}, "stpes": []})
    with pytest.raises(ChainConfigError, match="no 'assistants' argument"):
        AssistantChain(teacher=ModelSpec("resnet14", num_classes=10),
                       steps=[ChainStep(ModelSpec("resnet8", num_classes=10), guides="all")],
                       data=DIGITS, trainer=TRAINER, root_dir=tmp_path).run()


def test_dgkd_step_learns_from_teacher_and_assistants_and_logs_to_one_wandb_group(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    seen: list[dict] = []

    class Spy(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            run = trainer.logger.experiment
            seen.append({"group": run.group, "name": run.name, "step": run.config["chain_step"],
                         "guides": [type(pl_module).__name__, *getattr(pl_module, "assistant_names", [])]})

    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger",
             "init_args": {"project": "lit_kd_tests", "save_dir": str(tmp_path / "wandb"), "log_model": False}}
    chain = AssistantChain(
        teacher=ModelSpec("resnet14", num_classes=10),
        steps=[ChainStep(ModelSpec("resnet8", num_classes=10), name="assistant"),
               ChainStep(ModelSpec("resnet8", num_classes=10), name="student", guides="all",
                         model={"class_path": "lit_kd.methods.DGKD", "init_args": {"drop_num": 1}})],
        model={"class_path": "KD", "init_args": {"check_teacher": False}},
        data=DIGITS, trainer={**TRAINER, "logger": wandb}, root_dir=tmp_path / "chain", name="dgkd",
        callbacks=[Spy()])
    records = chain.run()
    assert [s["group"] for s in seen] == ["dgkd", "dgkd"]
    assert [s["step"] for s in seen] == [0, 1]
    assert seen[1]["name"] == "dgkd/1_student"
    assert seen[1]["guides"] == ["DGKD", "assistant_0"]
    hparams = torch.load(records[1].checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["assistants"][0]["checkpoint"] == records[0].checkpoint
    assert hparams["teacher"]["name"] == "resnet14" and hparams["drop_num"] == 1


DDP_SCRIPT = """
import json, os, sys
sys.path.insert(0, {repo!r})
from lit_kd.callbacks.chain import AssistantChain, ChainStep
from lit_kd.models import ModelSpec

root = {root!r}
chain = AssistantChain(
    teacher=ModelSpec("resnet14", num_classes=10),
    steps=[ChainStep(ModelSpec("resnet8", num_classes=10), name="assistant"),
           ChainStep(ModelSpec("resnet8", num_classes=10), name="student")],
    model={{"class_path": "KD", "init_args": {{"check_teacher": False}}}},
    data={data!r}, trainer={trainer!r}, root_dir=root, name="ddp")
records = chain.run()
rank = int(os.environ.get("LOCAL_RANK", 0))
with open(os.path.join(root, f"rank{{rank}}.json"), "w") as f:
    json.dump({{"checkpoints": [r.checkpoint for r in records], "world_size": [r.world_size for r in records]}}, f)
"""


def test_two_step_chain_under_ddp_with_two_cpu_processes(tmp_path):
    root = tmp_path / "chain"
    trainer = {**TRAINER, "devices": 2, "strategy": "ddp", "deterministic": False}
    script = tmp_path / "ddp_chain.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT).format(repo=str(REPO), root=str(root), data=DIGITS,
                                                         trainer=trainer))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank ran the same steps and handed on the same checkpoints
    assert ranks[0]["world_size"] == [2, 2]
    manifest = json.loads((root / "chain.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["assistant", "student"]
    assert not list(root.glob("chain.json.tmp*"))


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "chains").glob("*.yaml")), ids=lambda p: p.name)
def test_every_chain_config_runs_through_the_cli(config, tmp_path, monkeypatch):
    import timm
    import yaml

    from lit_kd.cli import main
    from tests.test_cli import write_fake_cifar

    monkeypatch.chdir(tmp_path)
    chain = yaml.safe_load(config.read_text())
    teacher = tmp_path / "teacher.pth"
    torch.save(timm.create_model(chain["teacher"]["name"], num_classes=10).state_dict(), teacher)
    if SHARED_DATA.exists():  # the shipped path points at the shared pretrained teacher
        assert (REPO / chain["teacher"]["checkpoint"]).resolve().is_file()
    chain["teacher"]["checkpoint"] = str(teacher)
    chain["data"]["init_args"].update(data_dir=str(write_fake_cifar(tmp_path / "data", 10)), batch_size=16)
    chain["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                            enable_progress_bar=False)
    chain["model"]["init_args"]["check_teacher"] = False
    small = tmp_path / "chain.yaml"
    small.write_text(yaml.safe_dump(chain))
    with pytest.raises(SystemExit) as exit_info:
        main(["chain", "--config", str(small)])
    assert exit_info.value.code == 0
    manifest = json.loads((tmp_path / chain["chain"]["root_dir"] / "chain.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == [s["name"] for s in chain["steps"]]
