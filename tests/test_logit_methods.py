"""The logit methods (DKD, DIST, CTKD, MLKD, NKD, WSLD, TAID), logit standardization on every logit
method, and the strong view MLKD reads from the data."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from lit_kd import CTKD, DGKD, DIST, DKD, KD, MLKD, NKD, TAID, WSLD, ModelSpec
from lit_kd.contract import DataContractError, KDBatch
from lit_kd.data import KDDataModule
from lit_kd.data import randaugment as RA
from lit_kd.losses import (ctkd_lambda, dense_guidance_loss, dist_terms, dkd_terms, kd_loss,
                           learned_temperature_kd_loss, mlkd_terms, nkd_loss, standardize_logits,
                           standardized_kd_loss, taid_loss, taid_update, wsld_loss)
from tests.helpers import digits, snapshot, tiny_trainer

METHODS = {"KD": KD, "DGKD": DGKD, "DKD": DKD, "DIST": DIST, "CTKD": CTKD, "MLKD": MLKD, "NKD": NKD, "WSLD": WSLD,
           "TAID": TAID}
NEW_METHODS = ["DKD", "DIST", "CTKD", "MLKD", "NKD", "WSLD", "TAID"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks gain nothing from intra-op threads, and on a shared CPU OpenMP's waiting threads make
    them up to 50 times slower: run this file's tests on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Non-default settings, so that a weight or temperature that is not passed through shows.
SETTINGS = {
    "KD": dict(temperature=3.0, ce_weight=0.2, kd_weight=0.7),
    "DGKD": dict(temperature=3.0, ce_weight=0.2, kd_weight=0.7),
    "DKD": dict(alpha=0.7, beta=3.0, temperature=2.5, warmup_epochs=4, ce_weight=0.6),
    "DIST": dict(beta=0.8, gamma=1.3, kd_weight=1.5, temperature=3.0, ce_weight=0.4),
    "CTKD": dict(ce_weight=0.3, kd_weight=0.8, min_temperature=2.0, temperature_range=5.0, initial_value=0.3),
    "MLKD": dict(temperature=3.0, ce_weight=0.2, kd_weight=0.6),
    "NKD": dict(temperature=2.0, gamma=2.5, kd_weight=0.9, ce_weight=0.7),
    "WSLD": dict(temperature=3.0, alpha=1.7, ce_weight=0.5),
    "TAID": dict(t_start=0.3, temperature=2.0, kd_weight=1.2, ce_weight=0.25),
}


def build(name: str, **kwargs):
    options = {**SETTINGS[name], **kwargs}
    options.setdefault("student", ModelSpec("resnet8", num_classes=10))
    options.setdefault("teacher", ModelSpec("resnet14", num_classes=10))
    options.setdefault("check_teacher", False)
    return METHODS[name](**options)


def make_batch(n: int = 8, strong: bool = False, seed: int = 0) -> KDBatch:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, 16, 16, generator=g)
    views = {"strong": torch.rand(n, 3, 16, 16, generator=g)} if strong else {}
    return KDBatch(image=image, target=torch.randint(0, 10, (n,), generator=g), views=views)


def attach_trainer(module, tmp_path, epoch: int = 0) -> L.Trainer:
    """A trainer whose current epoch is ``epoch`` (counted from 0, as Lightning does)."""
    trainer = tiny_trainer(tmp_path)
    module.trainer = trainer
    trainer.fit_loop.epoch_progress.current.completed = epoch
    assert module.current_epoch == epoch
    return trainer


def expected_loss(name: str, module, student: torch.Tensor, teacher: torch.Tensor, batch: KDBatch,
                  student_strong: torch.Tensor | None = None,
                  teacher_strong: torch.Tensor | None = None) -> torch.Tensor:
    """The method's total loss from the pure losses, on the networks' raw logits."""
    s = SETTINGS[name]
    target = batch.target
    ce = F.cross_entropy(student, target)
    if name == "MLKD":
        terms = mlkd_terms(student, teacher, student_strong, teacher_strong, s["temperature"], s["kd_weight"],
                           standardize=module.logit_standardization)
        return s["ce_weight"] * (ce + F.cross_entropy(student_strong, target)) + sum(terms.values())
    if module.logit_standardization:
        student, teacher = standardize_logits(student), standardize_logits(teacher)
    if name == "KD":
        return s["ce_weight"] * ce + s["kd_weight"] * kd_loss(student, teacher, s["temperature"])
    if name == "DGKD":  # without assistants: KD through the dense-guidance sum
        return s["ce_weight"] * ce + s["kd_weight"] * dense_guidance_loss(student, [teacher], s["temperature"])
    if name == "DKD":
        tckd, nckd = dkd_terms(student, teacher, target, s["temperature"])
        factor = min((module.current_epoch + 1) / s["warmup_epochs"], 1.0)
        return s["ce_weight"] * ce + factor * (s["alpha"] * tckd + s["beta"] * nckd)
    if name == "DIST":
        inter, intra = dist_terms(student, teacher, s["temperature"])
        return s["ce_weight"] * ce + s["kd_weight"] * (s["beta"] * inter + s["gamma"] * intra)
    if name == "NKD":
        return s["ce_weight"] * ce + s["kd_weight"] * nkd_loss(student, teacher, target, s["temperature"], s["gamma"])
    if name == "WSLD":
        return s["ce_weight"] * ce + s["alpha"] * wsld_loss(student, teacher, target, s["temperature"])
    if name == "TAID":
        temperature = s["temperature"]
        taid = taid_loss(student / temperature, teacher / temperature, s["t_start"]) * temperature**2
        return s["ce_weight"] * ce + s["kd_weight"] * taid
    if name == "CTKD":
        tau = s["min_temperature"] + s["temperature_range"] * torch.sigmoid(torch.tensor(s["initial_value"]))
        return s["ce_weight"] * ce + s["kd_weight"] * learned_temperature_kd_loss(student, teacher, tau)
    raise AssertionError(name)


def module_logits(module, batch: KDBatch):
    """The logits the module's training step sees (train-mode student: the same output on a second call)."""
    with torch.no_grad():
        out = [module(batch.image), module.teacher_logits(batch.teacher_image)]
        if "strong" in batch.views:
            out += [module(batch.views["strong"]), module.teacher_logits(batch.views["strong"])]
    return out


# --------------------------------------------------------------------------- the losses of the modules

@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "logit_standardization"])
@pytest.mark.parametrize("name", list(METHODS))
def test_training_loss_equals_the_pure_losses(name, standardize, tmp_path):
    torch.manual_seed(0)
    module = build(name, logit_standardization=standardize)
    module.train()
    attach_trainer(module, tmp_path, epoch=1)
    batch = make_batch(strong=name == "MLKD")
    _, losses = module.training_losses(batch)
    expected = expected_loss(name, module, *module_logits(module, batch)[:2], batch,
                             *module_logits(module, batch)[2:])
    assert torch.allclose(losses["loss"], expected, rtol=1e-5, atol=1e-6), (losses["loss"], expected)
    assert set(losses) >= {"loss", *({"ce"} if module.ce_weight else set())}
    # The switch changes the loss: the same module without it gives another value.
    other = build(name, logit_standardization=not standardize)
    other.load_state_dict(module.state_dict())
    other.train()
    attach_trainer(other, tmp_path, epoch=1)
    _, other_losses = other.training_losses(batch)
    assert not torch.allclose(other_losses["loss"], losses["loss"], rtol=1e-3)


def test_logit_standardization_changes_kd_exactly_as_standardized_kd_loss():
    torch.manual_seed(1)
    module = build("KD", logit_standardization=True, temperature=2.0, ce_weight=0.0, kd_weight=1.0)
    module.train()
    batch = make_batch()
    _, losses = module.training_losses(batch)
    student, teacher = module_logits(module, batch)
    assert torch.allclose(losses["kd"], standardized_kd_loss(student, teacher, 2.0), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(losses["kd"], kd_loss(student, teacher, 2.0), rtol=1e-3)
    assert torch.allclose(losses["loss"], losses["kd"])  # ce_weight 0: no CE term at all


@pytest.mark.parametrize("name", NEW_METHODS)
def test_terms_are_logged_separately(name, tmp_path):
    module = build(name)
    module.train()
    attach_trainer(module, tmp_path)
    _, losses = module.training_losses(make_batch(strong=name == "MLKD"))
    wanted = {"DKD": {"tckd", "nckd"}, "DIST": {"inter", "intra"}, "CTKD": {"kd", "temperature", "ctkd_lambda"},
              "MLKD": {"ce", "ce_strong", "mlkd_instance", "mlkd_class", "mlkd_batch"}, "NKD": {"nkd"},
              "WSLD": {"wsld"}, "TAID": {"taid", "taid_t"}}[name]
    assert wanted <= set(losses) and all(not v.requires_grad for k, v in losses.items() if k != "loss")


# --------------------------------------------------------------------------- gradients and the teacher

@pytest.mark.parametrize("name", NEW_METHODS)
def test_gradients_reach_only_the_student_and_the_methods_own_parts(name, tmp_path):
    torch.manual_seed(0)
    module = build(name)
    module.train()
    attach_trainer(module, tmp_path)
    _, losses = module.training_losses(make_batch(strong=name == "MLKD"))
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters())
    own = [p for key, part in module.trainable_modules().items() if key != "student" for p in part.parameters()]
    assert bool(own) == (name == "CTKD")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    assert {id(p) for p in module.trainable_parameters()} == {id(p) for p in [*module.student.parameters(), *own]}


@pytest.mark.parametrize("name", NEW_METHODS)
def test_teacher_bitwise_unchanged_after_a_tiny_fit(name, tmp_path):
    L.seed_everything(0)
    module = build(name)
    teacher_before, student_before = snapshot(module.teacher), snapshot(module.student)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    data = digits(image_size=16, batch_size=16, strong_view="randaugment" if name == "MLKD" else None)
    trainer.fit(module, datamodule=data)
    after = snapshot(module.teacher)
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)  # BN statistics included
    assert not module.teacher.training
    assert any(not torch.equal(student_before[k], v) for k, v in snapshot(module.student).items())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.trainable_parameters()}
    assert not optimized & {id(p) for p in module.teacher.parameters()}
    logged = trainer.callback_metrics
    assert math.isfinite(float(logged["train/loss_epoch"]))
    if name == "CTKD":
        assert "train/temperature_epoch" in logged
    if name == "TAID":
        assert "train/taid_t_epoch" in logged


# --------------------------------------------------------------------------- schedules

def test_dkd_warmup_counts_epochs_from_one(tmp_path):
    torch.manual_seed(0)
    module = build("DKD", warmup_epochs=20, alpha=1.0, beta=8.0)
    module.train()
    batch = make_batch()
    student, teacher = module_logits(module, batch)
    tckd, nckd = dkd_terms(student, teacher, batch.target, SETTINGS["DKD"]["temperature"])
    ce = F.cross_entropy(student, batch.target)
    for epoch, factor in [(0, 0.05), (9, 0.5), (19, 1.0), (25, 1.0)]:
        attach_trainer(module, tmp_path, epoch)
        assert module.warmup_factor() == pytest.approx(factor)
        _, losses = module.training_losses(batch)
        expected = SETTINGS["DKD"]["ce_weight"] * ce + factor * (1.0 * tckd + 8.0 * nckd)
        assert torch.allclose(losses["loss"], expected, rtol=1e-5), epoch


def test_ctkd_lambda_follows_the_cosine_curriculum(tmp_path):
    module = build("CTKD", curriculum_epochs=10)
    module.train()
    batch = make_batch()
    for epoch in [0, 4, 9, 30]:
        attach_trainer(module, tmp_path, epoch)
        by_hand = 0.5 * (1.0 - math.cos(math.pi * min(epoch + 1, 10) / 10))  # official epochs count from 1
        assert module.current_lambda() == pytest.approx(by_hand, abs=1e-12)
        assert module.current_lambda() == pytest.approx(ctkd_lambda(epoch + 1, 10))
        _, losses = module.training_losses(batch)
        assert float(losses["ctkd_lambda"]) == pytest.approx(by_hand, abs=1e-6)
    assert build("CTKD", lambda_max=0.5, curriculum_epochs=5).current_lambda() == pytest.approx(
        0.25 * (1 - math.cos(math.pi / 5)))


def test_ctkd_temperature_gets_the_reversed_gradient(tmp_path):
    torch.manual_seed(0)
    module = build("CTKD", ce_weight=0.0)
    module.train()
    attach_trainer(module, tmp_path, epoch=4)  # lambda = 0.5
    batch = make_batch()
    _, losses = module.training_losses(batch)
    losses["loss"].backward()
    student, teacher = module_logits(module, batch)
    theta = torch.tensor(SETTINGS["CTKD"]["initial_value"], requires_grad=True)
    tau = 2.0 + 5.0 * torch.sigmoid(theta)
    (0.8 * learned_temperature_kd_loss(student, teacher, tau)).backward()
    assert float(losses["temperature"]) == pytest.approx(float(tau.detach()), rel=1e-6)
    assert theta.grad.abs() > 1e-6
    assert torch.allclose(module.temperature_module.theta.grad, -0.5 * theta.grad, rtol=1e-4)


def test_ctkd_instance_temperature_gets_the_reversed_gradient(tmp_path):
    torch.manual_seed(0)
    module = build("CTKD", temperature_module="instance", ce_weight=0.0, hidden_dim=16)
    module.train()
    attach_trainer(module, tmp_path, epoch=1)
    lam = ctkd_lambda(2, 10)
    batch = make_batch()
    _, losses = module.training_losses(batch)
    losses["loss"].backward()
    reversed_grads = [p.grad.clone() for p in module.temperature_module.parameters()]
    module.temperature_module.zero_grad()
    student, teacher = module_logits(module, batch)
    raw = module.temperature_module.mlp(torch.cat([teacher, student], dim=1)).squeeze(1)
    tau = 2.0 + 5.0 * torch.sigmoid(raw)
    assert losses["temperature"] == pytest.approx(float(tau.mean()), rel=1e-5)
    (0.8 * learned_temperature_kd_loss(student, teacher, tau)).backward()
    for reversed_grad, p in zip(reversed_grads, module.temperature_module.parameters()):
        assert torch.allclose(reversed_grad, -lam * p.grad, rtol=1e-4, atol=1e-9)
    assert any(g.abs().sum() > 0 for g in reversed_grads)


class RecordingTAID(TAID):
    """TAID that records (t used, loss, step) of every training batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record: list[tuple[float, float, int]] = []

    def distillation_terms(self, student_logits, teacher_logits, batch):
        terms = super().distillation_terms(student_logits, teacher_logits, batch)
        self.record.append((self.t, float(terms["taid"][1]), self.global_step))
        return terms


def test_taid_t_follows_taid_update_step_by_step(tmp_path):
    L.seed_everything(0)
    options = {**SETTINGS["TAID"], "alpha": 0.05}
    module = RecordingTAID(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10),
                           check_teacher=False, **options)
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(module, datamodule=digits(image_size=16, batch_size=16))
    total = trainer.estimated_stepping_batches
    assert total == 6 and len(module.record) == 6
    t, momentum, previous = options["t_start"], 0.0, math.inf
    for step, (t_used, loss, global_step) in enumerate(module.record):
        assert global_step == step and t_used == t
        t, momentum, previous = taid_update(t, momentum, previous, loss, global_step, total, t_start=0.3,
                                            alpha=0.05)
        assert t >= 0.3 + 0.7 * global_step / total - 1e-12  # never behind the linear schedule
    assert module.t == t and float(module.taid_momentum) == momentum and float(module.taid_previous_loss) == previous
    assert module.t > options["t_start"]
    assert [r[0] for r in module.record] == sorted(r[0] for r in module.record)  # t never decreases


def test_taid_resumed_run_continues_t_exactly(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, ckpt_path=None):
        L.seed_everything(0)
        module = build("TAID", alpha=0.05)
        saver = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
        trainer = tiny_trainer(root, max_epochs=2, limit_train_batches=3, limit_val_batches=1,
                               enable_checkpointing=True, callbacks=[saver])
        trainer.fit(module, datamodule=digits(image_size=16, batch_size=16), ckpt_path=ckpt_path)
        return module

    full = run(tmp_path / "full")
    ckpt = tmp_path / "full" / "epoch=0.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    t_half = float(state["taid_t"])
    assert 0.3 < t_half < full.t and math.isfinite(float(state["taid_previous_loss"]))
    resumed = run(tmp_path / "resumed", ckpt_path=str(ckpt))
    for name in ("taid_t", "taid_momentum", "taid_previous_loss"):
        assert torch.allclose(getattr(resumed, name), getattr(full, name), rtol=1e-9, atol=0), name
    assert TAID.load_from_checkpoint(ckpt, weights_only=True).t == t_half


def test_ctkd_temperature_module_is_checkpointed_but_not_exported(tmp_path):
    from lit_kd.export import export_student

    L.seed_everything(0)
    module = build("CTKD")
    theta_before = float(module.temperature_module.theta)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=digits(image_size=16, batch_size=16))
    assert float(module.temperature_module.theta) != theta_before  # it was trained
    ckpt = tmp_path / "ctkd.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert "temperature_module.theta" in state and not any(k.startswith("teacher.") for k in state)
    restored = CTKD.load_from_checkpoint(ckpt, weights_only=True)
    assert torch.equal(restored.temperature_module.theta, module.temperature_module.theta)
    exported = torch.load(export_student(ckpt, tmp_path / "student.pth"), weights_only=True)
    assert set(exported) == set(module.student.state_dict())


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name", ["KD", "DKD", "DIST", "MLKD", "NKD", "WSLD", "TAID"])
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
def test_temperature_must_be_positive(name, temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        build(name, temperature=temperature)


def test_ctkd_and_dkd_and_taid_reject_bad_settings():
    with pytest.raises(ValueError, match="min_temperature must be a finite number > 0"):
        build("CTKD", min_temperature=0.0)
    with pytest.raises(ValueError, match="temperature_module must be 'global' or 'instance'"):
        build("CTKD", temperature_module="local")
    with pytest.raises(ValueError, match="curriculum_epochs|num_loops"):
        build("CTKD", curriculum_epochs=0)
    with pytest.raises(ValueError, match="warmup_epochs must be > 0"):
        build("DKD", warmup_epochs=0)
    with pytest.raises(ValueError, match="t_start"):
        build("TAID", t_start=1.0)
    with pytest.raises(ValueError, match="set num_classes"):
        CTKD(torch.nn.Linear(3, 10), torch.nn.Linear(3, 10), temperature_module="instance", check_teacher=False)


@pytest.mark.parametrize("name", ["DKD", "NKD", "WSLD"])
def test_methods_that_read_labels_say_so_on_unlabelled_data(name):
    module = build(name, ce_weight=0.0)
    module.train()
    with pytest.raises(DataContractError, match=rf"{name} needs class labels .*unlabelled data"):
        module.training_losses(KDBatch(image=torch.rand(4, 3, 16, 16)))


def test_soft_labels_dkd_refuses_and_nkd_uses_the_argmax():
    torch.manual_seed(0)
    soft = torch.softmax(torch.randn(4, 10), dim=1)
    batch = KDBatch(image=torch.rand(4, 3, 16, 16), target=soft)
    dkd = build("DKD", ce_weight=0.0)
    dkd.train()
    with pytest.raises(DataContractError, match=r"one class index per sample.*argmax"):
        dkd.training_losses(batch)
    nkd = build("NKD", ce_weight=0.0)
    nkd.train()
    _, losses = nkd.training_losses(batch)
    student, teacher = module_logits(nkd, batch)
    expected = SETTINGS["NKD"]["kd_weight"] * nkd_loss(student, teacher, soft.argmax(1), 2.0, 2.5)
    assert torch.allclose(losses["loss"], expected, rtol=1e-5)


def test_mlkd_without_the_strong_view_names_the_fix(tmp_path):
    module = build("MLKD")
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    message = r"MLKD needs a strongly augmented view.*data\.strong_view: randaugment"
    with pytest.raises(DataContractError, match=message):
        trainer.fit(module, datamodule=digits(image_size=16, batch_size=16))
    module.train()
    with pytest.raises(DataContractError, match=r"batch\.views\['strong'\].*data\.strong_view: randaugment"):
        module.training_losses(make_batch())


# --------------------------------------------------------------------------- the strong view of the data

def raw_batch(n: int = 16, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "target": torch.randint(0, 10, (n,), generator=g)}


@pytest.mark.parametrize("augmentation", ["consistent", "independent"])
def test_strong_view_is_randaugment_of_the_students_crop(augmentation):
    dm = KDDataModule("digits", image_size=16, augmentation=augmentation, strong_view="randaugment")
    plain = KDDataModule("digits", image_size=16, augmentation=augmentation)
    b = raw_batch()
    out = dm.transform_batch(b, train=True, generator=torch.Generator().manual_seed(3))
    without = plain.transform_batch(b, train=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.image, without.image) and torch.equal(out.teacher_image, without.teacher_image)
    g = torch.Generator().manual_seed(3)  # replay: the weak view's draws, then RandAugment's
    weak = dm.augment(b["image"], g)
    if augmentation == "independent":
        dm.augment(b["image"], g)
    expected = RA.apply_randaugment(weak, RA.sample_randaugment(16, 2, g))
    strong = out.views["strong"]
    assert torch.equal(strong, expected) and torch.equal(weak, out.image)
    assert strong.dtype == torch.float32 and strong.shape == out.image.shape and 0 <= strong.min() <= strong.max() <= 1
    assert not torch.equal(strong, out.image)
    again = dm.transform_batch(b, train=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.views["strong"], strong)  # deterministic given the generator
    other = dm.transform_batch(b, train=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other.views["strong"], strong)


def test_strong_view_only_on_training_batches_and_declared():
    dm = KDDataModule("digits", image_size=16, strong_view="randaugment")
    assert dm.data_info().views == ("strong",)
    assert KDDataModule("digits").data_info().views == ()
    b = raw_batch()
    assert dict(dm.transform_batch(b, train=False).views) == {}
    assert dict(dm.on_after_batch_transfer(b, 0).views) == {}  # no trainer: evaluation
    dm.trainer = SimpleNamespace(training=True, global_rank=0)
    assert set(dm.on_after_batch_transfer(b, 0).views) == {"strong"}
    dm.trainer = SimpleNamespace(training=False, global_rank=0)
    assert dict(dm.on_after_batch_transfer(b, 0).views) == {}
    meta = KDDataModule("digits", image_size=16, strong_view="randaugment", meta_split=0.2)
    meta.trainer = SimpleNamespace(training=True, global_rank=0)
    paired = meta.on_after_batch_transfer({"train": raw_batch(), "meta_val": raw_batch(seed=1)}, 0)
    assert set(paired.views) == {"strong"} and paired.meta is not None
    with pytest.raises(ValueError, match="strong_view must be 'randaugment' or None"):
        KDDataModule("digits", strong_view="autoaugment")


def test_strong_view_resumes_from_state_dict():
    dm = KDDataModule("digits", image_size=16, strong_view="randaugment")
    b = raw_batch()
    dm.training_generator("cpu")
    state = dm.state_dict()
    expected = dm.transform_batch(b, train=True, generator=dm.training_generator("cpu"))
    resumed = KDDataModule("digits", image_size=16, strong_view="randaugment")
    resumed.load_state_dict(state)
    again = resumed.transform_batch(b, train=True, generator=resumed.training_generator("cpu"))
    assert torch.equal(expected.views["strong"], again.views["strong"])
    following = dm.transform_batch(b, train=True, generator=dm.training_generator("cpu"))
    assert not torch.equal(following.views["strong"], expected.views["strong"])


def test_strong_view_of_streamed_folders(tmp_path):
    from tests.test_cli import write_fake_folder

    dm = KDDataModule("folder", data_dir=str(write_fake_folder(tmp_path / "data")), image_size=16, batch_size=4,
                      in_memory=False, num_workers=0, strong_view="randaugment")
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True, global_rank=0)
    out = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert out.views["strong"].shape == out.image.shape == (4, 3, 16, 16)


def _pil_op(name: str, image: Image.Image, v: float) -> Image.Image:
    """The PIL call each RandAugment operation of MLKD's code makes."""
    w, h = image.size
    calls = {
        "auto_contrast": lambda: ImageOps.autocontrast(image), "equalize": lambda: ImageOps.equalize(image),
        "identity": lambda: image, "brightness": lambda: ImageEnhance.Brightness(image).enhance(v),
        "color": lambda: ImageEnhance.Color(image).enhance(v),
        "contrast": lambda: ImageEnhance.Contrast(image).enhance(v),
        "sharpness": lambda: ImageEnhance.Sharpness(image).enhance(v),
        "posterize": lambda: ImageOps.posterize(image, max(1, int(v))), "rotate": lambda: image.rotate(v),
        "solarize": lambda: ImageOps.solarize(image, v),
        "shear_x": lambda: image.transform(image.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
        "shear_y": lambda: image.transform(image.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
        "translate_x": lambda: image.transform(image.size, Image.AFFINE, (1, 0, v * w, 0, 1, 0)),
        "translate_y": lambda: image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, v * h)),
    }
    return calls[name]()


@pytest.mark.parametrize("size", [13, 32])
def test_randaugment_operations_equal_pil(size):
    """Each batched operation gives PIL's pixels (the official code runs PIL on uint8 images)."""
    rng = np.random.default_rng(size)
    noise = rng.integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    smooth = np.clip(np.cumsum(rng.integers(-9, 10, (6, size, size, 3)), axis=2) + 128, 0, 255).astype(np.uint8)
    pictures = np.concatenate([noise, smooth])
    n = len(pictures)
    for index, (name, bounds) in enumerate(RA.RANDAUGMENT_OPS.items()):
        levels = torch.rand(n, generator=torch.Generator().manual_seed(index), dtype=torch.float64)
        magnitudes = levels if bounds is None else bounds[0] + (bounds[1] - bounds[0]) * levels
        params = RA.RandAugmentParams(ops=torch.full((n, 1), index), levels=levels.float().view(n, 1),
                                      cutout=torch.zeros(n, 3))
        ours = RA.apply_randaugment(torch.from_numpy(pictures).permute(0, 3, 1, 2), params)
        ours = (ours * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        # the magnitude as the module computes it from the float32 level
        used = magnitudes if bounds is None else bounds[0] + (bounds[1] - bounds[0]) * levels.float().double()
        for picture, magnitude, mine in zip(pictures, used.tolist(), ours):
            reference = np.asarray(_pil_op(name, Image.fromarray(picture), magnitude))
            assert np.array_equal(mine, reference), name


def test_randaugment_cutout_equals_pil_rectangle():
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    draws = torch.rand(20, 3, generator=torch.Generator().manual_seed(0))
    draws[0, 0] = 0.0  # no cutout
    params = RA.RandAugmentParams(ops=torch.zeros(20, 0, dtype=torch.long), levels=torch.zeros(20, 0), cutout=draws)
    ours = (RA.apply_randaugment(torch.from_numpy(pictures).permute(0, 3, 1, 2), params) * 255).round()
    for picture, (size, column, row), mine in zip(pictures, draws.double().tolist(), ours.to(torch.uint8)):
        image = Image.fromarray(picture)
        side = size * 0.5 * 32
        if side > 0:  # the official CutoutAbs, its centre drawn between 1 and the side
            x0, y0 = int(max(0, 1 + 31 * column - side / 2)), int(max(0, 1 + 31 * row - side / 2))
            ImageDraw.Draw(image).rectangle((x0, y0, min(32, x0 + side), min(32, y0 + side)), (125, 123, 114))
        assert np.array_equal(mine.permute(1, 2, 0).numpy(), np.asarray(image))
    assert torch.equal(ours[0], torch.from_numpy(pictures[0]).permute(2, 0, 1).double())


def test_randaugment_draws_two_operations_uniformly():
    params = RA.sample_randaugment(20000, 2, torch.Generator().manual_seed(0))
    counts = torch.bincount(params.ops.flatten(), minlength=14).double()
    assert params.ops.shape == (20000, 2) and counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    with pytest.raises(ValueError, match="B×3×H×W"):
        RA.randaugment(torch.zeros(2, 1, 8, 8))
