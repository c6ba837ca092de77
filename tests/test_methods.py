"""The frozen-teacher contract, gradients, checkpoints, resume, and bad input of the methods."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lit_kd import KD, FitNet, ModelSpec, Supervised
from lit_kd.contract import KDBatch
from lit_kd.models import CheckpointError
from tests.helpers import digits, snapshot, tiny_trainer


def kd_module(**kwargs) -> KD:
    kwargs.setdefault("teacher", ModelSpec("resnet14", num_classes=10))
    kwargs.setdefault("student", ModelSpec("resnet8", num_classes=10))
    return KD(**kwargs)


def test_teacher_bitwise_unchanged_and_not_optimized(tmp_path):
    L.seed_everything(0)
    module = kd_module()
    before = snapshot(module.teacher)
    student_before = snapshot(module.student)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    trainer.fit(module, datamodule=digits())
    after = snapshot(module.teacher)
    assert before.keys() == after.keys()
    for key in before:  # weights and BN running statistics / num_batches_tracked
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(student_before[k], v) for k, v in snapshot(module.student).items())
    teacher_params = {id(p) for p in module.teacher.parameters()}
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized and not optimized & teacher_params
    assert not module.teacher.training and all(not p.requires_grad for p in module.teacher.parameters())


def test_teacher_stays_in_eval_mode_through_train_and_validate(tmp_path):
    module = kd_module()
    module.train()
    assert module.student.training and not module.teacher.training
    assert not any(m.training for m in module.teacher.modules())
    trainer = tiny_trainer(tmp_path, limit_val_batches=2)
    trainer.validate(module, datamodule=digits())
    module.train()
    assert not any(m.training for m in module.teacher.modules())


@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_gradients_reach_only_student_and_connector(method):
    torch.manual_seed(0)
    teacher, student = ModelSpec("resnet14", num_classes=10), ModelSpec("resnet8", num_classes=10)
    module = KD(student, teacher) if method == "kd" else FitNet(student, teacher)
    module.train()
    batch = KDBatch(image=torch.rand(4, 3, 16, 16), target=torch.randint(0, 10, (4,)))
    _, losses = module.training_losses(batch)
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters() if p.requires_grad)
    if method == "fitnet":
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.connector.parameters())
        assert {id(p) for p in module.trainable_parameters()} == {
            id(p) for p in [*module.student.parameters(), *module.connector.parameters()]}


def test_kd_loss_zero_when_student_is_teacher():
    torch.manual_seed(0)
    net = ModelSpec("resnet8", num_classes=10)
    module = KD(net, net, ce_weight=0.0, kd_weight=1.0)
    module.student.load_state_dict(module.teacher.state_dict())
    module.eval()
    x = torch.rand(3, 3, 16, 16)
    _, losses = module.training_losses(KDBatch(image=x, target=torch.zeros(3, dtype=torch.long)))
    assert losses["kd"].item() == pytest.approx(0.0, abs=1e-6)


def test_checkpoint_without_teacher_and_resume_equals_uninterrupted(tmp_path):
    def run(epochs, ckpt_path=None, root=tmp_path / "a"):
        L.seed_everything(0)
        module = kd_module()
        trainer = tiny_trainer(root, max_epochs=epochs, limit_train_batches=3, limit_val_batches=1,
                               enable_checkpointing=True)
        trainer.fit(module, datamodule=digits(), ckpt_path=ckpt_path)
        return module, trainer

    full, _ = run(2, root=tmp_path / "full")
    first, trainer = run(1, root=tmp_path / "half")
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]  # plain data: loads with weights_only
    assert not any(k.startswith("teacher.") for k in state)
    assert any(k.startswith("student.") for k in state)
    resumed, _ = run(2, ckpt_path=str(ckpt), root=tmp_path / "resumed")
    for key, value in snapshot(full.student).items():
        assert torch.allclose(value.float(), snapshot(resumed.student)[key].float(), atol=1e-6), key


@pytest.mark.parametrize("limit", [2, None], ids=["limit_train_batches", "whole_epoch"])
def test_step_checkpoint_at_an_epochs_last_batch_resumes_exactly(tmp_path, limit):
    """A step checkpoint written after an epoch's last batch (before its end-of-epoch hooks) resumes
    into the next epoch's own order, from its first batch: Lightning creates that iterator before it
    sets the sampler's epoch, and a loader that kept the saved epoch would replay it."""
    def run(root, callbacks=(), ckpt_path=None):
        L.seed_everything(0)
        module = kd_module()
        trainer = tiny_trainer(root, max_epochs=3, limit_train_batches=limit, limit_val_batches=0,
                               enable_checkpointing=True, callbacks=list(callbacks))
        trainer.fit(module, datamodule=digits(batch_size=256), ckpt_path=ckpt_path)
        return module, trainer

    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    full, trainer = run(tmp_path / "full", [saver])
    per_epoch = trainer.global_step // 3
    for epoch in (0, 1):
        ckpt = tmp_path / "ckpt" / f"epoch={epoch}-step={per_epoch * (epoch + 1)}.ckpt"
        assert ckpt.exists(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
        resumed, trainer = run(tmp_path / f"resumed{epoch}", ckpt_path=str(ckpt))
        assert trainer.global_step == 3 * per_epoch
        for key, value in snapshot(full.student).items():
            assert torch.equal(value, snapshot(resumed.student)[key]), (epoch, key)


def test_store_teacher_option_and_load_from_checkpoint(tmp_path):
    module = kd_module(store_teacher=True)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=digits())
    ckpt = tmp_path / "with_teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("teacher.") for k in state)
    restored = KD.load_from_checkpoint(ckpt)
    assert torch.equal(restored.student.conv1.weight, module.student.conv1.weight)


def test_supervised_checkpoint_becomes_a_teacher(tmp_path):
    L.seed_everything(0)
    supervised = Supervised(ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(supervised, datamodule=digits())
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)
    module = kd_module(teacher=ModelSpec("resnet8", num_classes=10, checkpoint=str(ckpt)))
    for key, value in supervised.student.state_dict().items():
        assert torch.equal(module.teacher.state_dict()[key], value)


def test_near_chance_teacher_warns_loudly_and_accuracy_is_logged(tmp_path):
    module = kd_module()  # random teacher: near chance on digits
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=3)
    with pytest.warns(UserWarning, match="TEACHER NEAR CHANCE"):
        trainer.fit(module, datamodule=digits())
    assert "val/teacher_acc" in trainer.callback_metrics
    assert float(trainer.callback_metrics["val/teacher_acc"]) < 0.25


def test_good_teacher_does_not_warn(tmp_path):
    L.seed_everything(0)
    teacher = Supervised(ModelSpec("resnet8", num_classes=10), optimizer=lambda p: torch.optim.Adam(p, 3e-3))
    tiny_trainer(tmp_path, max_epochs=6, limit_val_batches=0).fit(teacher, datamodule=digits())
    module = KD(ModelSpec("resnet8", num_classes=10), teacher.student)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=digits())
    assert not [w for w in caught if "TEACHER NEAR CHANCE" in str(w.message)]
    assert float(trainer.callback_metrics["val/teacher_acc"]) > 0.5


# ---------------------------------------------------------------------------------- bad input
def test_class_count_mismatch_between_teacher_student_and_data(tmp_path):
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=100))
    with pytest.raises(ValueError, match="Class counts disagree.*teacher=100"):
        tiny_trainer(tmp_path).fit(module, datamodule=digits())
    module = KD(ModelSpec("resnet8", num_classes=100), ModelSpec("resnet8", num_classes=100))
    with pytest.raises(ValueError, match="data=10"):
        tiny_trainer(tmp_path).fit(module, datamodule=digits())


def test_teacher_checkpoint_missing_corrupted_or_other_architecture(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        kd_module(teacher=ModelSpec("resnet8", num_classes=10, checkpoint=str(tmp_path / "nope.pth")))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        kd_module(teacher=ModelSpec("resnet8", num_classes=10, checkpoint=str(broken)))
    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(CheckpointError, match="another architecture"):
        kd_module(teacher=ModelSpec("resnet8", num_classes=10, checkpoint=str(other)))
    hundred = tmp_path / "hundred.pth"
    from lit_kd import create_model

    torch.save(create_model("resnet8", num_classes=100).state_dict(), hundred)
    with pytest.raises(CheckpointError, match="num_classes: 100"):
        kd_module(teacher=ModelSpec("resnet8", num_classes=10, checkpoint=str(hundred)))


def test_images_too_small_for_model(tmp_path):
    module = kd_module(teacher=ModelSpec("vit_tiny_patch16_224", num_classes=10, input_size=None,
                                         model_kwargs={"img_size": 224}))
    module.teacher_input.size = None  # feed the 16 px images as they are
    with pytest.raises(ValueError, match="too small or of the wrong size"):
        tiny_trainer(tmp_path).fit(module, datamodule=digits())


def test_feature_layer_that_does_not_exist():
    from lit_kd.taps import TapError

    with pytest.raises(TapError, match="does not exist"):
        FitNet(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), student_layer=9)
    with pytest.raises(TapError, match="does not exist"):
        FitNet(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10),
               teacher_layer="layer7.conv")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model name"):
        ModelSpec("resnet8", num_classes=10) and kd_module(student=ModelSpec("resnet_does_not_exist"))


def test_teacher_cast_to_run_precision(tmp_path):
    module = kd_module()
    trainer = tiny_trainer(tmp_path, precision="bf16-true", limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=digits())
    assert {p.dtype for p in module.teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.student.parameters()} == {torch.bfloat16}


def test_ddp_two_cpu_processes_keep_teacher_frozen(tmp_path):
    L.seed_everything(0)
    module = kd_module()
    before = snapshot(module.teacher)
    student_before = snapshot(module.student)
    trainer = tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=digits())
    after = snapshot(module.teacher)  # weights come back from rank 0
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(student_before[k], v) for k, v in snapshot(module.student).items())


def test_teacher_gets_its_own_normalization_and_resolution_from_the_same_pixels():
    teacher = ModelSpec("resnet20_a", num_classes=10, input_size=48)  # ImageNet statistics, 48 px
    student = ModelSpec("resnet8", num_classes=10)  # CIFAR-100 statistics, data resolution
    module = KD(student, teacher)
    seen = {}
    module.teacher.conv1.register_forward_hook(lambda m, inputs, out: seen.update(teacher=inputs[0]))
    module.student.conv1.register_forward_hook(lambda m, inputs, out: seen.update(student=inputs[0]))
    pixels = torch.rand(2, 3, 32, 32)
    module.training_losses(KDBatch(image=pixels, target=torch.zeros(2, dtype=torch.long)))
    imagenet = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))
    cifar100 = module.student.pretrained_cfg["mean"], module.student.pretrained_cfg["std"]
    assert seen["teacher"].shape[-1] == 48 and seen["student"].shape[-1] == 32
    expected_student = (pixels - torch.tensor(cifar100[0]).view(1, 3, 1, 1)) / torch.tensor(cifar100[1]).view(1, 3, 1, 1)
    assert torch.allclose(seen["student"], expected_student, atol=1e-6)
    resized = torch.nn.functional.interpolate(pixels, size=(48, 48), mode="bilinear", antialias=True)
    expected_teacher = (resized - imagenet[0].view(1, 3, 1, 1)) / imagenet[1].view(1, 3, 1, 1)
    assert torch.allclose(seen["teacher"], expected_teacher, atol=1e-5)


def test_the_fit_start_log_names_only_what_the_input_adapter_applies():
    spec = ModelSpec("resnet8", num_classes=10)
    normalized = KD(spec, spec, check_teacher=False).student_input.describe()
    assert "mean (" in normalized and "mean/std from the network's pretrained_cfg; no fixed input size" in normalized
    raw = KD(spec, spec, check_teacher=False, normalize_inputs=False).student_input.describe()
    assert raw == "no normalization (normalize_inputs=False), at the data's resolution [no fixed input size]"
