"""Bad, hostile and careless input: one test per class of failure, each asserting the outcome a user
relies on (a clear error, no code run, no file written, nothing overwritten or lost)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from lit_kd import KD, ModelSpec, Supervised
from lit_kd.callbacks import RunSummary
from lit_kd.callbacks.checkpoint import Checkpoint, CheckpointError
from lit_kd.cli import main
from lit_kd.methods.base import InputAdapter, NonFiniteLossError
from tests.helpers import REPO, digits, tiny_trainer

QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
         "--data.init_args.image_size", "16"]


def run_cli(argv: list[str]) -> int:
    """The exit code of ``lit-kd ARGV`` (0 when it returns normally)."""
    try:
        main(argv)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


# --------------------------------------------------------------------------- unsafe input


class WritesAFile:
    """A pickle payload that creates a file when unpickled (stands in for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_cifar_pickle_runs_no_code(tmp_path):
    from lit_kd.data import KDDataModule
    from lit_kd.data.cifar import UnsafePickleError
    from tests.test_cli import write_fake_cifar

    root = write_fake_cifar(tmp_path / "data", 10)
    marker = tmp_path / "pwned"
    for name in ("batches.meta", "data_batch_1"):
        target = root / "cifar-10-batches-py" / name
        original = target.read_bytes()
        target.write_bytes(pickle.dumps({b"label_names": WritesAFile(marker)}, protocol=2))
        with pytest.raises(UnsafePickleError, match=r"refusing to load \w+\.open.*not a CIFAR batch"):
            KDDataModule("cifar10", data_dir=str(root)).setup("fit")
        assert not marker.exists()
        target.write_bytes(original)
    KDDataModule("cifar10", data_dir=str(root)).setup("fit")  # the real format still loads


# --------------------------------------------------------------------------- lost or stale checkpoints


def test_last_ckpt_is_the_last_epoch_even_when_the_monitored_metric_stops_improving(tmp_path):
    L.seed_everything(0)
    # mode "max" on a loss: after epoch 0 nothing "improves", so no top-k save happens again.
    checkpoint = Checkpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/loss", mode="max", save_last=True)
    summary = RunSummary(dirpath=str(tmp_path))
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=3, limit_val_batches=1,
                           enable_checkpointing=True, callbacks=[checkpoint, summary])
    trainer.fit(Supervised(ModelSpec("resnet8", num_classes=10)), datamodule=digits())
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    assert last["epoch"] == summary.record["last"]["epoch"] == 2
    assert last["global_step"] == trainer.global_step
    assert best["epoch"] == 0  # best stays where the (inverted) monitor peaked


def test_a_checkpoint_folder_that_cannot_be_written_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    checkpoint = Checkpoint(dirpath=blocker / "checkpoints", monitor="val/acc", mode="max")
    module = Supervised(ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    with pytest.raises(CheckpointError, match="cannot be written"):
        trainer.fit(module, datamodule=digits())
    assert module.global_step == 0


def test_a_save_that_leaves_no_file_stops_the_run(tmp_path, monkeypatch):
    checkpoint = Checkpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", save_last=True)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=True,
                           callbacks=[checkpoint])
    monkeypatch.setattr(trainer, "save_checkpoint", lambda *args, **kwargs: None)  # a write that "succeeds"
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.fit(Supervised(ModelSpec("resnet8", num_classes=10)), datamodule=digits())


def test_rerunning_a_config_never_overwrites_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "quickstart_teacher.yaml")
    assert run_cli(["fit", "--config", config, *QUICK]) == 0
    best = tmp_path / "runs" / "quickstart" / "teacher" / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    assert run_cli(["fit", "--config", config, *QUICK]) == 2  # refused, with the ways out
    assert best.read_bytes() == before
    last = best.parent / "last.ckpt"
    assert run_cli(["fit", "--config", config, *QUICK, "--trainer.max_epochs", "2", "--ckpt_path", str(last)]) == 0
    assert run_cli(["fit", "--config", config, *QUICK, "--overwrite", "true"]) == 0


def test_export_never_replaces_a_file_unless_forced(tmp_path):
    from lit_kd.export import export_student

    module = Supervised(ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=digits())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    out = tmp_path / "student.safetensors"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="--force"):
        export_student(tmp_path / "run.ckpt", out)
    assert out.read_text() == "precious"
    assert run_cli(["export", "--ckpt", str(tmp_path / "run.ckpt"), "--out", str(out)]) == 2
    export_student(tmp_path / "run.ckpt", out, force=True)
    assert out.stat().st_size > 1000


# --------------------------------------------------------------------------- silently wrong


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing(tmp_path):
    L.seed_everything(0)
    module = Supervised(ModelSpec("resnet8", num_classes=10),
                        optimizer=lambda params: torch.optim.SGD(params, lr=1e12))
    checkpoint = Checkpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", save_last=True)
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=5, enable_checkpointing=True,
                           callbacks=[checkpoint])
    with pytest.raises(NonFiniteLossError, match=r"at step \d+, in the term\(s\) \['loss', 'ce'\].*learning rate"):
        trainer.fit(module, datamodule=digits())
    assert not list((tmp_path / "ckpt").glob("*.ckpt"))


def test_a_teacher_with_nan_weights_is_refused_and_nan_weights_are_never_exported(tmp_path):
    from lit_kd.export import export_student

    broken = Supervised(ModelSpec("resnet8", num_classes=10)).student
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    torch.save(broken.state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10,
                                                          checkpoint=str(tmp_path / "teacher.pth")))
    torch.save({"state_dict": {f"student.{k}": v for k, v in broken.state_dict().items()}}, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match="not exporting a broken model"):
        export_student(tmp_path / "nan.ckpt", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_ckpt_path_never_silently_replaces_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(["fit", "--config", str(REPO / "configs" / "quickstart_teacher.yaml"), *QUICK]) == 0
    teacher = tmp_path / "runs" / "quickstart" / "teacher" / "checkpoints" / "last.ckpt"
    kd = ["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), *QUICK,
          "--model.init_args.teacher.checkpoint", str(teacher)]
    capsys.readouterr()
    assert run_cli([*kd, "--ckpt_path", str(teacher)]) == 2  # a Supervised checkpoint given to a KD run
    err = capsys.readouterr().err
    assert "method: checkpoint lit_kd.methods.Supervised, config lit_kd.methods.KD" in err and "Traceback" not in err
    assert run_cli(kd) == 0
    student = tmp_path / "runs" / "quickstart" / "student" / "checkpoints" / "last.ckpt"
    assert run_cli([*kd, "--trainer.max_epochs", "2", "--ckpt_path", str(student),
                    "--model.init_args.temperature", "2"]) == 2  # an override the old behaviour dropped
    assert "temperature: checkpoint 4.0, config 2.0" in capsys.readouterr().err
    assert run_cli([*kd, "--trainer.max_epochs", "2", "--ckpt_path", str(student)]) == 0  # same settings: resumes


def test_symlink_loops_list_each_image_once_and_never_in_two_splits(tmp_path):
    from PIL import Image

    from lit_kd.data import KDDataModule

    for split in ("train", "val"):
        for c in ("a", "b"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "train" / "a" / "loop").symlink_to(tmp_path / "train" / "a")  # a folder containing itself
    (tmp_path / "train" / "b" / "again.png").symlink_to(tmp_path / "train" / "b" / "0.png")
    with pytest.warns(UserWarning, match="a second time through symbolic links"):
        dm = KDDataModule("folder", data_dir=str(tmp_path), image_size=8, val_split=0.25)
        layout = dm._folder_layout()
    real = [os.path.realpath(tmp_path / name) for name in layout.train.names]
    assert len(real) == len(set(real)) == 8
    dm = KDDataModule("folder", data_dir=str(tmp_path), image_size=8, val_split=0.5, in_memory=False, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    train, held_out = set(dm.splits.train.names), set(dm.splits.database.names)
    assert train == held_out  # the database is the training split itself
    held = [os.path.realpath(tmp_path / n) for n in dm.splits.val.names]
    assert not set(held) & {os.path.realpath(tmp_path / n) for n in dm.splits.train.names}


def test_val_split_zero_with_a_config_that_monitors_val_acc_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_cli(["fit", "--config", str(REPO / "configs" / "quickstart_teacher.yaml"), *QUICK,
                    "--data.init_args.val_split", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "val_split" in err and "test/acc" in err
    assert not list(tmp_path.rglob("*.ckpt"))


def test_loss_weights_out_of_range_and_integer_limits(tmp_path):
    student, teacher = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10)
    for bad in ({"ce_weight": -0.1}, {"kd_weight": float("nan")}, {"kd_weight": -1}):
        with pytest.raises(ValueError, match="finite numbers >= 0"):
            KD(student, teacher, **bad)
    from lit_kd.cli import LitKDCLI
    from lit_kd.data import KDDataModule
    from lit_kd.methods.base import StudentModule

    common = ["--config", str(REPO / "configs" / "quickstart_teacher.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    cli = LitKDCLI(StudentModule, KDDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                   args=[*common, "--trainer.limit_val_batches", "1", "--trainer.limit_train_batches", "0.5"])
    assert cli.trainer.limit_val_batches == 1 and isinstance(cli.trainer.limit_val_batches, int)  # one batch
    assert cli.trainer.limit_train_batches == 0.5


def test_a_large_upsampling_is_announced_once():
    adapter = InputAdapter((0.5,) * 3, (0.5,) * 3, size=224)
    with pytest.warns(UserWarning, match="upsampled 28x"):
        adapter(torch.rand(1, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter(torch.rand(1, 3, 8, 8))  # once
        InputAdapter((0.5,) * 3, (0.5,) * 3, size=64)(torch.rand(1, 3, 32, 32))  # 2x: no warning


# --------------------------------------------------------------------------- chains


def tiny_chain(root: Path, **overrides):
    from lit_kd import AssistantChain, ChainStep

    trainer = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                   enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    config = dict(teacher=ModelSpec("resnet14", num_classes=10),
                  steps=[ChainStep(student=ModelSpec("resnet8", num_classes=10), name="assistant"),
                         ChainStep(student=ModelSpec("resnet8", num_classes=10), name="student")],
                  model={"class_path": "KD", "init_args": {"check_teacher": False}},
                  data=lambda: digits(image_size=16, batch_size=16), trainer=trainer, root_dir=root, name="tiny")
    config.update(overrides)
    return AssistantChain(**config)


def test_chain_lock_keeps_a_second_run_out_and_stale_locks_are_taken_over(tmp_path):
    from lit_kd.callbacks.chain import ChainConfigError

    (tmp_path / "chain").mkdir()
    lock = tmp_path / "chain" / "chain.lock"
    import socket

    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "earlier"}))  # pid 1 lives
    with pytest.raises(ChainConfigError, match="is being run by process 1"):
        tiny_chain(tmp_path / "chain").run()
    assert not (tmp_path / "chain" / "0_assistant").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}))
    with pytest.warns(UserWarning, match="stale chain lock"):
        records = tiny_chain(tmp_path / "chain").run()
    assert len(records) == 2 and not lock.exists()


def test_chain_checks_finished_steps_moves_with_its_folder_and_names_a_broken_manifest(tmp_path):
    from lit_kd.callbacks.chain import ChainConfigError

    records = tiny_chain(tmp_path / "a").run()
    manifest = json.loads((tmp_path / "a" / "chain.json").read_text())
    assert not any(Path(step["checkpoint"]).is_absolute() for step in manifest["steps"])
    for record in records:  # what run() returns is usable as it is
        last = torch.load(record.last_checkpoint, weights_only=True)
        assert last["epoch"] == record.summary["last"]["epoch"]
    shutil.move(tmp_path / "a", tmp_path / "moved")
    again = tiny_chain(tmp_path / "moved").run()  # nothing to train: every step is finished
    assert [Path(r.checkpoint).parent.parent.parent for r in again] == [tmp_path / "moved"] * 2
    Path(again[0].checkpoint).unlink()
    with pytest.raises(ChainConfigError, match=r"Finished step 0 \('assistant'\) recorded .* no longer exists"):
        tiny_chain(tmp_path / "moved").run()
    (tmp_path / "moved" / "chain.json").write_text('{"format": 1, "chain": "tiny", "steps": [{"ind')
    with pytest.raises(ChainConfigError, match="chain.json' is not valid JSON"):
        tiny_chain(tmp_path / "moved").run()


def test_every_chain_step_is_checked_before_the_first_trains(tmp_path):
    from lit_kd import ChainStep
    from lit_kd.callbacks.chain import ChainConfigError

    steps = [ChainStep(student=ModelSpec("resnet8", num_classes=10), name="assistant"),
             ChainStep(student=ModelSpec("resnet8", num_classes=10), name="student", guides="all")]
    with pytest.raises(ChainConfigError, match="takes no 'assistants' argument"):
        tiny_chain(tmp_path / "c", steps=steps).run()
    steps = [ChainStep(student=ModelSpec("resnet8", num_classes=10), name="assistant"),
             ChainStep(student=ModelSpec("resnet8", num_classes=10), name="student",
                       model={"init_args": {"temprature": 2.0}})]
    with pytest.raises(ChainConfigError, match="Step 1.*do not parse"):
        tiny_chain(tmp_path / "c", steps=steps).run()
    assert not (tmp_path / "c" / "0_assistant").exists()


# --------------------------------------------------------------------------- clear messages


def test_rejected_arguments_are_one_plain_message(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "quickstart_teacher.yaml")
    assert run_cli(["fit", "--config", config, *QUICK, "--model", "KDD"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'KDD'" in err and "FitNet" in err and "StudentModule" not in err
    kd = str(REPO / "configs" / "quickstart.yaml")
    assert run_cli(["fit", "--config", kd, *QUICK, "--model.init_args.temperature", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-kd: error:") and "Traceback" not in err and len(err.splitlines()) <= 3
    for c in ("only",):
        (tmp_path / "one" / "train" / c).mkdir(parents=True)
        (tmp_path / "one" / "val" / c).mkdir(parents=True)
        for split in ("train", "val"):
            Image.new("RGB", (8, 8)).save(tmp_path / "one" / split / c / "0.png")
    assert run_cli(["fit", "--config", config, *QUICK, "--data.init_args.dataset", "folder",
                    "--data.init_args.data_dir", str(tmp_path / "one")]) == 2
    assert "single class folder ('only')" in capsys.readouterr().err
    assert run_cli([]) == 2 and "export" in capsys.readouterr().out
    assert run_cli(["--help"]) == 0 and "chain" in capsys.readouterr().out


# --------------------------------------------------------------------------- DDP parity

DDP_SCRIPT = r'''
import os, sys
import lightning as L, torch
from torch.utils.data import DataLoader, TensorDataset
import lit_kd
from lit_kd import KD, ModelSpec

world, batch, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
L.seed_everything(0)
g = torch.Generator().manual_seed(0)
images, labels = torch.rand(64, 3, 16, 16, generator=g), torch.randint(0, 10, (64,), generator=g)
# Same order in both runs: rank r reads samples r, r + world, ... (Lightning's own sampler would shuffle them).
rank = int(os.environ.get("LOCAL_RANK", 0))
loader = DataLoader(TensorDataset(images, labels), batch_size=batch, sampler=list(range(rank, 64, world)))
torch.manual_seed(1)
# A student without BatchNorm: per-rank batch statistics would differ from one process's (SyncBatchNorm needs GPUs).
student = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(128, 10))
module = KD(student, ModelSpec("resnet14", num_classes=10), check_teacher=False,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
strategy = "ddp" if world > 1 else "auto"
trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=world, strategy=strategy,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    use_distributed_sampler=False, deterministic=True)
trainer.fit(module, loader)
same = all(torch.equal(v, teacher_before[k]) for k, v in module.teacher.state_dict().items())
rank = trainer.global_rank
torch.save({"student": module.student.state_dict(), "teacher_unchanged": same},
           f"{out}.rank{rank}.pt")
'''


def test_two_process_ddp_equals_one_process_with_the_doubled_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for world, batch in ((1, 16), (2, 8)):
        result = subprocess.run([sys.executable, str(script), str(world), str(batch), str(tmp_path / f"w{world}")],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    single = torch.load(tmp_path / "w1.rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"w2.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert single["teacher_unchanged"] and all(r["teacher_unchanged"] for r in ranks)
    for key, value in single["student"].items():
        assert torch.equal(ranks[0]["student"][key], ranks[1]["student"][key]), key  # the ranks agree exactly
        if value.is_floating_point():  # DDP = one process with the doubled batch, up to float32 summation order
            torch.testing.assert_close(ranks[0]["student"][key], value, rtol=1e-4, atol=1e-5)


def test_an_empty_checkpoint_path_is_refused_instead_of_loading_nothing():
    from lit_kd.models import create_model

    with pytest.raises(ValueError, match="empty checkpoint path"):
        create_model(ModelSpec("resnet8", num_classes=10, checkpoint=""))
