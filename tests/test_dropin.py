"""lit_kd dropped into an existing Lightning project (issue 18): the project's own data modules (tests/foreign_data.py,
which never imports lit_kd), callbacks, loggers, LightningCLI entry point and checkpoints work without edits."""

from __future__ import annotations

import ast
import logging
import re
import tomllib
import warnings
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lit_kd import KD, KDBatch, ModelSpec
from lit_kd.methods import base
from tests.foreign_data import FakeImagesDataModule, GrayDigitsDataModule, TwoValLoadersDataModule
from tests.helpers import REPO, snapshot, tiny_trainer


class SmallCNN(nn.Module):
    """A user's network: one strided conv and a linear head on the flattened map, so it runs only on
    ``side``-pixel images of ``channels`` channels."""

    def __init__(self, side: int = 32, channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, stride=4, padding=1)
        self.head = nn.Linear(4 * ((side + 3) // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class AlwaysZero(nn.Module):
    """Answers class 0 for every image (zero weights, a bias on class 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.eye(10)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


def kd(**kwargs) -> KD:
    return KD(student=kwargs.pop("student", SmallCNN()), teacher=kwargs.pop("teacher", SmallCNN()), **kwargs)


# --------------------------------------------------------------------------- 1. pytorch_lightning


def test_pytorch_lightning_objects_are_refused_with_the_fix(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from lit_kd import KDDataModule

    class TheirDataModule(pl.LightningDataModule):
        def train_dataloader(self):
            return FakeImagesDataModule().train_dataloader()

    with pytest.raises(TypeError, match=r"data module \(TheirDataModule\) is a `pytorch_lightning` object.*"
                                        r"import lightning.pytorch as pl"):
        tiny_trainer(tmp_path, limit_train_batches=1).fit(kd(), datamodule=TheirDataModule())
    with pytest.raises(TypeError, match=r"callback \(LearningRateMonitor\) is a `pytorch_lightning` object"):
        tiny_trainer(tmp_path, callbacks=[pl.callbacks.LearningRateMonitor()]).fit(
            kd(), datamodule=FakeImagesDataModule())

    class TheirModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(1, 1)

    with pytest.raises(TypeError, match=r"KDDataModule is a `lightning` data module; the Trainer given it \(Trainer\)"):
        pl.Trainer(logger=False, max_epochs=1).fit(TheirModule(), datamodule=KDDataModule(dataset="digits"))

    # A pytorch_lightning Trainer refuses lit_kd modules before any lit_kd code runs: the module says so when made.
    base._warn_if_pytorch_lightning_imported.cache_clear()
    with pytest.warns(UserWarning, match=r"train them with `lightning.Trainer`, not `pytorch_lightning.Trainer`"):
        kd()


# --------------------------------------------------------------------------- 2. input geometry


def test_networks_are_checked_on_the_datas_real_images(tmp_path):
    # 1-channel 28 px data, networks built for it: refused before (3x32x32 assumed); the normalization has 1 channel
    torch.manual_seed(0)
    gray = ModelSpec("resnet8", num_classes=10, model_kwargs={"in_chans": 1})
    module = KD(student=gray, teacher=SmallCNN(side=28, channels=1))
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=GrayDigitsDataModule())
    assert trainer.state.finished and module.student_input.mean.numel() == 1

    # a teacher that runs only at the data's 48 px
    module = kd(student=SmallCNN(side=48), teacher=SmallCNN(side=48))
    tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1).fit(
        module, datamodule=FakeImagesDataModule(image_size=48))

    # what mismatches is named: the channels, or the size (not a data.image_size the data never declared)
    with pytest.raises(ValueError, match=r"teacher network \(SmallCNN\) cannot run on the images of "
                                         r"GrayDigitsDataModule, 1x28x28: it reads 3-channel images and the data's "
                                         r"have 1.*in_chans=1"):
        tiny_trainer(tmp_path).fit(kd(student=SmallCNN(28, 1), teacher=SmallCNN(28), normalize_inputs=False),
                                   datamodule=GrayDigitsDataModule())
    with pytest.raises(ValueError, match=r"student network \(SmallCNN\) cannot run on the images of "
                                         r"FakeImagesDataModule, 3x32x32 .*too small or of the wrong size.*"
                                         r"give the data larger images") as error:
        tiny_trainer(tmp_path).fit(kd(student=SmallCNN(48)), datamodule=FakeImagesDataModule())
    assert "image_size" not in str(error.value).split("wrong size")[1].split("input_size")[0]


# --------------------------------------------------------------------------- 3. several validation loaders


@pytest.mark.parametrize("names", [False, True])
def test_each_validation_loader_has_its_own_name_and_metrics(tmp_path, names):
    module = kd(student=AlwaysZero(), teacher=SmallCNN())
    trainer = tiny_trainer(tmp_path)
    data = TwoValLoadersDataModule(names=names, loaders=3)
    trainer.validate(module, datamodule=data, verbose=False)
    first, second, third = ("clean", "noisy", "blurred") if names else ("val", "val_1", "val_2")
    metrics = trainer.callback_metrics
    assert float(metrics[f"{first}/acc"]) == 1.0 and float(metrics[f"{second}/acc"]) == 0.0  # not one shared metric
    assert f"{third}/acc" in metrics and "test/acc" not in metrics  # the user's loaders are not taken for a test split
    trainer.test(module, datamodule=data, verbose=False)
    if names:
        assert float(trainer.callback_metrics["noisy/acc"]) == 0.0
    else:
        assert float(trainer.callback_metrics["test/acc"]) == 1.0 and float(trainer.callback_metrics["test_1/acc"]) == 0.0


# --------------------------------------------------------------------------- 4, 5, 7. the project's callbacks, loggers


def test_a_projects_callbacks_and_logger_work_unchanged(tmp_path, caplog):
    torch.manual_seed(0)
    caplog.set_level(logging.INFO)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", auto_insert_metric_name=False,
                                 filename="epoch{epoch}-val_loss{val/loss:.3f}")  # the documented flat template
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[checkpoint, EarlyStopping(monitor="val/loss", patience=3), LearningRateMonitor()])
    teacher = timm.create_model("resnet8", num_classes=10)
    student = ModelSpec("resnet8", num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    module = KD(student=student, teacher=teacher, temperature=2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=FakeImagesDataModule())
    # the frozen teacher's eval mode is not reported as a surprise; the filter is gone after the fit
    assert not [w for w in caught if "in eval mode at the start of training" in str(w.message)]
    assert not [f for f in warnings.filters if "in eval mode" in str(getattr(f[1], "pattern", ""))]

    saved = sorted(p.relative_to(tmp_path / "ckpt").as_posix() for p in (tmp_path / "ckpt").rglob("*.ckpt"))
    assert len(saved) == 1 and re.fullmatch(r"epoch\d-val_loss\d+\.\d{3}\.ckpt", saved[0]), saved
    hparams = yaml.safe_load((Path(trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert hparams["temperature"] == 2.0 and hparams["teacher"] == {"module": "CifarResNet"}
    assert hparams["student"]["mean"] == [0.5, 0.5, 0.5]  # plain YAML, readable by safe_load
    header = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr-SGD" in header and "val/acc" in header
    # each network's normalization is logged once, with where it came from
    said = [line for line in caplog.messages if line.startswith("lit_kd: ")]
    assert len(said) == 2 and "student (CifarResNet)" in said[0] and "mean (0.5, 0.5, 0.5)" in said[0]
    assert "mean/std from the ModelSpec" in said[0]
    assert "teacher (CifarResNet)" in said[1] and "pretrained_cfg" in said[1], said

    predictions = trainer.predict(module, trainer.datamodule.val_dataloader(), return_predictions=True)
    assert set(predictions[0]) == {"probs", "pred", "target"} and predictions[0]["probs"].shape == (16, 10)


def test_plain_lightning_modules_still_get_lightnings_eval_mode_notice(tmp_path):
    class Theirs(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.frozen, self.layer = nn.Linear(1, 1).eval(), nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.layer.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=2)
    with pytest.warns(Warning, match=r"Found 1 module\(s\) in eval mode"):
        tiny_trainer(tmp_path).fit(Theirs(), loader)


def test_configs_checkpoint_names_stay_flat():
    templates = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        for callback in (yaml.safe_load(path.read_text()) or {}).get("trainer", {}).get("callbacks", None) or []:
            args = callback.get("init_args", {}) if isinstance(callback, dict) else {}
            if "filename" in args:
                templates.append((path.name, args["filename"], args.get("auto_insert_metric_name", True)))
    assert templates
    for name, template, auto_insert in templates:
        checkpoint = ModelCheckpoint(filename=template, auto_insert_metric_name=auto_insert)
        keys = re.findall(r"\{([^:}]+)", template)
        formatted = checkpoint.format_checkpoint_name({key: torch.tensor(0.5) for key in keys})
        assert "/" not in formatted, (name, template, formatted)


# --------------------------------------------------------------------------- the user's LightningCLI


def test_the_users_own_lightningcli_entry_point(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(KD, FakeImagesDataModule, args=[
        "fit", "--model.student", "{name: resnet8, num_classes: 10}", "--model.teacher", "{name: resnet8}",
        "--model.num_classes", "10", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--data.batch_size", "8"], save_config_kwargs={"overwrite": True})
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
    assert cli.model.teacher_spec.num_classes == 10 and "val/acc" in cli.trainer.callback_metrics


# --------------------------------------------------------------------------- 4. load_from_checkpoint


def test_load_from_checkpoint_with_specs_and_with_modules(tmp_path):
    torch.manual_seed(0)
    for networks in ("specs", "modules"):
        if networks == "specs":
            module = KD(student=ModelSpec("resnet8", num_classes=10), teacher=ModelSpec("resnet8", num_classes=10))
        else:
            module = kd()
        trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
        trainer.fit(module, datamodule=FakeImagesDataModule())
        path = tmp_path / f"{networks}.ckpt"
        trainer.save_checkpoint(path)
        trained = snapshot(module.student)
        if networks == "specs":
            loaded = KD.load_from_checkpoint(path)
        else:
            with pytest.raises(TypeError, match=re.escape(
                    "KD.load_from_checkpoint(path, student=<your SmallCNN>, teacher=<your SmallCNN>)")):
                KD.load_from_checkpoint(path)
            teacher = SmallCNN()
            loaded = KD.load_from_checkpoint(path, student=SmallCNN(), teacher=teacher)
            assert loaded.teacher is teacher
        assert all(torch.equal(value, trained[key]) for key, value in loaded.student.state_dict().items())


# --------------------------------------------------------------------------- 9. Lightning Fabric


def test_the_distillation_step_runs_under_fabric():
    from lightning.fabric import Fabric

    torch.manual_seed(0)
    fabric = Fabric(accelerator="cpu", devices=1)
    module = kd(temperature=4.0)
    assert "ImageNet mean/std (default" in module.student_input.describe()  # a plain module has no pretrained_cfg
    teacher_before, student_before = snapshot(module.teacher), snapshot(module.student)
    optimizer = torch.optim.SGD(module.trainable_parameters(), lr=0.1)
    module, optimizer = fabric.setup(module, optimizer)
    data = FakeImagesDataModule(batch_size=8)
    data.setup("fit")
    for batch_idx, batch in zip(range(2), fabric.setup_dataloaders(data.train_dataloader())):
        module.train()
        loss = module.training_step(batch, batch_idx)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    assert module.teacher.training is False and all(p.grad is None for p in module.teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in module.teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in module.student.state_dict().items())
    logits, losses = module.training_losses(KDBatch.from_any(next(iter(data.train_dataloader()))))
    assert logits.shape == (8, 10) and {"loss", "ce", "kd"} <= set(losses)


# --------------------------------------------------------------------------- 6, 10. the process


def test_import_leaves_timms_modules_and_needs_no_wandb():
    from lit_kd.models.cifar import ZOO_MODELS

    for module in ("resnet", "vgg", "mobilenetv2", "shufflenet"):
        assert all(timm.models.model_entrypoint(name).__module__.startswith("timm.")
                   for name in timm.list_models(module=module)), module
    assert sorted(timm.list_models(module="lit_kd_zoo")) == sorted(ZOO_MODELS)
    assert not [f for f in warnings.filters if "in eval mode" in str(getattr(f[1], "pattern", ""))]

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies if d.startswith("wandb")]
    for path in (REPO / "lit_kd").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level: what `import lit_kd...` runs
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] == "wandb"], path
