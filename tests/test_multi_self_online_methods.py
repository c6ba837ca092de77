"""Multi-teacher, self- and online-distillation methods: their losses are the golden-tested pure losses,
every frozen network stays frozen, trainable parts and peers train, state survives checkpoints, bad input
gets a clear error."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from lit_kd import ModelSpec
from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import (bd_kd_student_loss, bd_kd_teacher_loss, ca_mkd_loss, distill_weighted_loss, dml_loss,
                           meal_v2_loss, multi_teacher_kd_loss, pskd_loss, pskd_targets, standardize_logits,
                           tf_kd_regularization_loss, tf_kd_self_loss)
from lit_kd.methods import (BDKD, DML, PSKD, DistillationModule, DistillWeighted, MealV2, MultiTeacherKD,
                            OnlineDistillation, StudentModule, TfKDSelf, TfKDVirtual)
from lit_kd.methods.distill_weighted import RelevanceScore, SourceAccuracy
from tests.helpers import REPO, SHARED_DATA, digits, snapshot, tiny_trainer


def spec(name: str = "resnet8", num_classes: int = 10) -> ModelSpec:
    return ModelSpec(name, num_classes=num_classes)


def labelled_batch(size: int = 4, classes: int = 10, index: bool = False) -> KDBatch:
    return KDBatch(image=torch.rand(size, 3, 16, 16), target=torch.randint(0, classes, (size,)),
                   index=torch.arange(size) if index else None)


def fit(module: L.LightningModule, root: Path, epochs: int = 1, ckpt_path: str | None = None, data=None,
        **trainer_args) -> L.Trainer:
    trainer_args.setdefault("limit_train_batches", 2)
    trainer_args.setdefault("limit_val_batches", 1)
    trainer = tiny_trainer(root, max_epochs=epochs, **trainer_args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TEACHER NEAR CHANCE.*")
        trainer.fit(module, datamodule=data or digits(image_size=16, batch_size=16), ckpt_path=ckpt_path)
    return trainer


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in snapshot(module).items())


def unchanged(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    after = snapshot(module)
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in after)


def optimized_ids(trainer: L.Trainer) -> set[int]:
    return {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}


# ====================================================================== multi-teacher KD

def multi_teacher(**kwargs) -> MultiTeacherKD:
    kwargs.setdefault("student", spec())
    kwargs.setdefault("teachers", [spec("resnet14"), spec("resnet8")])
    return MultiTeacherKD(**kwargs)


def teacher_logits_of(module, batch: KDBatch) -> list[torch.Tensor]:
    with torch.no_grad():
        return [getattr(module, n)(getattr(module, f"{n}_input")(batch.teacher_image)) for n in module.teacher_names]


@pytest.mark.parametrize("weighting, standardize, official", [
    ("fixed", False, False), ("fixed", True, False), ("learned", False, False), ("confidence", False, False),
    ("confidence", False, True), ("confidence", True, False), ("confidence", True, True)])
def test_multi_teacher_training_loss_is_the_pure_loss(weighting, standardize, official):
    torch.manual_seed(0)
    weights = [1.0, 3.0] if weighting == "fixed" else None
    module = multi_teacher(weighting=weighting, weights=weights, temperature=3.0, ce_weight=0.4, kd_weight=0.7,
                           logit_standardization=standardize, ca_mkd_official=official)
    if weighting == "learned":
        module.teacher_weights.logits.data = torch.tensor([0.5, -0.5])
    module.train()
    batch = labelled_batch()
    teachers = teacher_logits_of(module, batch)
    logits, losses = module.training_losses(batch)
    z = (lambda t: standardize_logits(t)) if standardize else (lambda t: t)
    if weighting == "fixed":
        expected_kd = multi_teacher_kd_loss(z(logits), [z(t) for t in teachers], [0.25, 0.75], 3.0)
    elif weighting == "learned":
        learned = torch.softmax(torch.tensor([0.5, -0.5]), 0)
        expected_kd = multi_teacher_kd_loss(z(logits), [z(t) for t in teachers], learned, 3.0)
    elif not standardize:
        expected_kd = ca_mkd_loss(logits, teachers, batch.target, 3.0, official=official)
    else:  # confidence from the raw logits, the per-teacher KL terms on the z-scores
        from lit_kd.losses import ca_mkd_weights
        weights = ca_mkd_weights(teachers, batch.target)
        log_student = F.log_softmax(z(logits) / 3.0, -1)
        per_teacher = torch.stack([(F.softmax(z(t) / 3.0, -1) * (F.log_softmax(z(t) / 3.0, -1) - log_student)).sum(-1)
                                   for t in teachers], 1)
        expected_kd = 9.0 * (weights * per_teacher).sum(1).mean() / (2 if official else 1)
    torch.testing.assert_close(losses["kd"], expected_kd.detach())
    expected = 0.4 * F.cross_entropy(logits, batch.target) + 0.7 * expected_kd
    torch.testing.assert_close(losses["loss"], expected)


def test_equal_weights_are_the_ensemble_average_and_one_teacher_is_kd():
    from lit_kd.losses import kd_loss

    torch.manual_seed(0)
    module = multi_teacher(ce_weight=0.0)
    batch = labelled_batch()
    teachers = teacher_logits_of(module, batch)
    logits, losses = module.training_losses(batch)
    torch.testing.assert_close(losses["kd"], multi_teacher_kd_loss(logits, teachers, None, 4.0).detach())
    single = multi_teacher(teachers=[spec("resnet14")], ce_weight=0.0)
    teacher = teacher_logits_of(single, batch)[0]
    logits, losses = single.training_losses(batch)
    torch.testing.assert_close(losses["kd"], kd_loss(logits, teacher, 4.0).detach())


def test_each_teacher_runs_once_per_batch_without_autograd():
    module = multi_teacher(teachers=[spec("resnet14"), spec("resnet8"), spec("resnet8")])
    module.train()
    calls: list[tuple[str, bool]] = []
    for name in module.teacher_names:
        getattr(module, name).register_forward_hook(lambda *_, name=name: calls.append((name, torch.is_grad_enabled())))
    module.training_losses(labelled_batch())
    assert calls == [("teacher", False), ("teacher_1", False), ("teacher_2", False)]


def test_gradients_reach_the_student_and_the_learned_weights_only():
    torch.manual_seed(0)
    module = multi_teacher(weighting="learned")
    module.train()
    _, losses = module.training_losses(labelled_batch())
    losses["loss"].backward()
    for name in module.teacher_names:
        assert all(p.grad is None for p in getattr(module, name).parameters()), name
    assert all(p.grad is not None for p in module.student.parameters())
    assert module.teacher_weights.logits.grad.abs().sum() > 0
    assert {id(p) for p in module.trainable_parameters()} == {
        id(p) for p in [*module.student.parameters(), module.teacher_weights.logits]}


def test_teachers_stay_frozen_through_a_fit_and_stay_out_of_checkpoints(tmp_path):
    L.seed_everything(0)
    module = multi_teacher(weighting="learned", teachers=[spec("resnet14"), spec("resnet8"), spec("resnet8")])
    frozen = module.frozen_networks()
    assert list(frozen) == ["teacher", "teacher_1", "teacher_2"]
    before = {name: snapshot(net) for name, net in frozen.items()}
    student, weights = snapshot(module.student), module.teacher_weights.logits.detach().clone()
    trainer = fit(module, tmp_path)
    for name, net in frozen.items():
        assert unchanged(before[name], net), name  # BN statistics included
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert changed(student, module.student) and not torch.equal(weights, module.teacher_weights.logits)
    assert not optimized_ids(trainer) & {id(p) for net in frozen.values() for p in net.parameters()}
    # Every teacher's accuracy was measured once.
    assert {"val/teacher_acc", "val/teacher_1_acc", "val/teacher_2_acc"} <= set(trainer.callback_metrics)
    ckpt = tmp_path / "mt.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert {k.split(".")[0] for k in state["state_dict"]} == {"student", "teacher_weights"}
    assert [t["name"] for t in state["hyper_parameters"]["teachers"]] == ["resnet14", "resnet8", "resnet8"]
    restored = MultiTeacherKD.load_from_checkpoint(ckpt, weights_only=True)
    assert restored.teacher_names == ["teacher", "teacher_1", "teacher_2"] and restored.weighting == "learned"
    assert torch.equal(restored.teacher_weights.logits, module.teacher_weights.logits)
    assert unchanged(snapshot(module.student), restored.student)


def test_a_teacher_near_chance_is_named_in_the_warning(tmp_path):
    module = multi_teacher()
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=2)
    with pytest.warns(UserWarning, match=r"teacher 1 \(resnet8\) has a validation accuracy"):
        trainer.fit(module, datamodule=digits(image_size=16, batch_size=16))


class Linear(nn.Module):
    """A network that declares no class count (no ``num_classes``): only the probe knows it."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, classes)

    def forward(self, x):
        return self.fc(F.interpolate(x, size=(16, 16)).flatten(1))


def test_teachers_whose_class_counts_differ_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"teacher 0 \(resnet14\): 10 classes, teacher 1 \(resnet8\): 100 classes"):
        multi_teacher(teachers=[spec("resnet14"), spec("resnet8", 100)])
    # Modules that declare nothing are probed before training starts.
    module = multi_teacher(teachers=[Linear(10), Linear(7)], check_teacher=False)
    with pytest.raises(ValueError, match=r"Class counts disagree \(.*teacher=10, teacher_1=7"):
        fit(module, tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=[1.0, 2.0, 3.0]), r"Got 3 teacher weights for 2 teachers"),
    (dict(weights=[1.0, -1.0]), r"Teacher weights must be >= 0"),
    (dict(weights=[0.0, 0.0]), r"sum to zero"),
    (dict(weighting="learned", weights=[1.0, 0.0]), r"give every teacher a weight > 0"),
    (dict(temperature=0.0), r"temperature must be a finite number > 0"),
    (dict(temperature=-2.0), r"temperature must be a finite number > 0"),
    (dict(teachers=[]), r"got none: give at least one network in teachers"),
    (dict(weighting="confidence", teachers=[spec("resnet14")]), r"needs at least two teachers"),
    (dict(weighting="confidence", weights=[1.0, 1.0]), r"leave weights unset"),
    (dict(weighting="average"), r"weighting must be"),
])
def test_multi_teacher_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multi_teacher(**kwargs)


def test_confidence_weights_need_labels():
    module = multi_teacher(weighting="confidence", ce_weight=0.0)
    with pytest.raises(DataContractError, match="needs class labels for CA-MKD's confidence weights"):
        module.training_losses(KDBatch(image=torch.rand(2, 3, 16, 16)))


def test_the_four_cifar10_teachers_of_the_ensemble_configs_load():
    paths = [SHARED_DATA / "teachers" / f for f in ("resnet20-12fca82f.th", "resnet32-d509ac18.th",
                                                     "resnet44-014dd654.th", "resnet56-4bfd9763.th")]
    if not all(p.is_file() for p in paths):
        pytest.skip("the shared CIFAR-10 teachers are not available")
    config = yaml.safe_load((REPO / "configs/cifar10/multi_teacher_kd_resnet_a_ensemble_resnet8.yaml").read_text())
    teachers = [ModelSpec(**{**t, "checkpoint": str(REPO / t["checkpoint"])})
                for t in config["model"]["init_args"]["teachers"]]
    assert [Path(t.checkpoint).resolve() for t in teachers] == [p.resolve() for p in paths]
    module = MultiTeacherKD(spec(), teachers)
    assert module.teacher_classes == 10 and module.num_teachers == 4
    raw = torch.load(paths[3], map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(module.teacher_3.linear.weight, raw["module.linear.weight"])


# ====================================================================== MEAL V2

def meal(**kwargs) -> MealV2:
    kwargs.setdefault("student", spec())
    kwargs.setdefault("teachers", [spec("resnet14"), spec("resnet8")])
    kwargs.setdefault("discriminator_reduction", 2)
    return MealV2(**kwargs)


@pytest.mark.parametrize("official", [False, True])
def test_meal_v2_loss_is_similarity_plus_discriminator_without_labels(official):
    torch.manual_seed(0)
    module = meal(official=official, discriminator_weight=0.5)
    module.train()
    batch = KDBatch(image=torch.rand(4, 3, 16, 16))  # unlabelled
    teachers = teacher_logits_of(module, batch)
    logits, losses = module.training_losses(batch)
    similarity = meal_v2_loss(logits, teachers, official=official)
    discriminator = module.discriminator.loss(logits, teachers)
    torch.testing.assert_close(losses["similarity"], similarity.detach())
    torch.testing.assert_close(losses["discriminator"], discriminator.detach())
    torch.testing.assert_close(losses["loss"], similarity + 0.5 * discriminator)
    assert "ce" not in losses
    losses["loss"].backward()
    assert all(p.grad is not None for p in module.discriminator.parameters())
    assert all(p.grad is None for name in module.teacher_names for p in getattr(module, name).parameters())


def test_meal_v2_trains_student_and_discriminator_together_on_unlabelled_data(tmp_path):
    L.seed_everything(0)
    module = meal()
    teachers = {name: snapshot(net) for name, net in module.frozen_networks().items()}
    student, discriminator = snapshot(module.student), snapshot(module.discriminator)
    images = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(32, 3, 16, 16)), batch_size=8)
    trainer = tiny_trainer(tmp_path, limit_train_batches=3)
    trainer.fit(module, train_dataloaders=images)
    assert changed(student, module.student) and changed(discriminator, module.discriminator)
    assert all(unchanged(teachers[name], net) for name, net in module.frozen_networks().items())
    ids = optimized_ids(trainer)  # one optimizer, as officially
    assert {id(p) for p in module.discriminator.parameters()} <= ids and len(trainer.optimizers) == 1
    ckpt = tmp_path / "meal.ckpt"
    trainer.save_checkpoint(ckpt)
    from lit_kd.export import export_student

    exported = torch.load(export_student(ckpt, tmp_path / "student.pth"), weights_only=True)
    assert exported.keys() == module.student.state_dict().keys()  # the student alone, no discriminator
    restored = MealV2.load_from_checkpoint(ckpt, weights_only=True)
    assert unchanged(snapshot(module.discriminator), restored.discriminator)


def test_meal_v2_bad_input():
    with pytest.raises(ValueError, match="MealV2 learns from frozen teachers and got none"):
        meal(teachers=[])
    with pytest.raises(ValueError, match=r"10 -> 1 -> 0\); use a smaller reduction"):
        meal(discriminator_reduction=8)


# ====================================================================== DistillWeighted

class CountingScore(RelevanceScore):
    """Prefers the second source and counts its calls."""

    calls = 0

    def __call__(self, source_logits, target_labels):
        CountingScore.calls += 1
        assert all(logits.shape == (len(target_labels), 10) for logits in source_logits)
        return torch.tensor([1.0, 3.0])


def test_distill_weighted_scores_the_sources_once_on_the_training_split(tmp_path):
    L.seed_everything(0)
    module = DistillWeighted(spec(), [spec("resnet14"), spec("resnet8")], relevance_samples=40, ce_weight=0.5)
    teachers = {name: snapshot(net) for name, net in module.frozen_networks().items()}
    data = digits(image_size=16, batch_size=16)
    fit(module, tmp_path, data=data)
    assert bool(module.scores_ready) and module.scores_known
    assert all(unchanged(teachers[name], net) for name, net in module.frozen_networks().items())
    # The default score is each source's accuracy on (the first 40 samples of) the un-augmented training split.
    info = data.data_info()
    images, labels = [], []
    for raw in info.database_dataloader():
        batch = info.eval_batch(raw)
        images.append(batch.image)
        labels.append(batch.target)
    images, labels = torch.cat(images)[:40], torch.cat(labels)[:40]
    with torch.no_grad():
        expected = [(getattr(module, n)(getattr(module, f"{n}_input")(images)).argmax(-1) == labels).float().mean()
                    for n in module.teacher_names]
    torch.testing.assert_close(module.relevance_scores, torch.stack(expected))
    # The training loss is the pure loss with those scores.
    batch = labelled_batch()
    teachers = teacher_logits_of(module, batch)
    logits, losses = module.training_losses(batch)
    kd = distill_weighted_loss(logits, teachers, module.relevance_scores, 4.0)
    torch.testing.assert_close(losses["loss"], 0.5 * F.cross_entropy(logits, batch.target) + kd)


def test_distill_weighted_relevance_is_pluggable_and_its_scores_are_checkpointed(tmp_path):
    L.seed_everything(0)
    CountingScore.calls = 0
    module = DistillWeighted(spec(), [spec("resnet14"), spec("resnet8")], relevance=CountingScore(),
                             relevance_temperature=0.5, relevance_samples=32)
    trainer = fit(module, tmp_path / "a", limit_val_batches=0)
    assert CountingScore.calls == 1
    torch.testing.assert_close(module.source_weights(), torch.softmax(torch.tensor([2.0, 6.0]), 0))
    assert trainer.callback_metrics["train/weight_teacher_1"] > 0.98
    ckpt = tmp_path / "dw.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = DistillWeighted(spec(), [spec("resnet14"), spec("resnet8")], relevance=CountingScore(),
                              relevance_temperature=0.5)
    fit(resumed, tmp_path / "b", epochs=2, ckpt_path=str(ckpt), limit_val_batches=0)
    assert CountingScore.calls == 1  # not recomputed on resume
    restored = DistillWeighted.load_from_checkpoint(ckpt, weights_only=True)
    assert isinstance(restored.relevance, CountingScore) and torch.equal(restored.relevance_scores,
                                                                         module.relevance_scores)


def test_distill_weighted_per_batch_scores_and_given_scores():
    torch.manual_seed(0)
    module = DistillWeighted(spec(), [spec("resnet14"), spec("resnet8")], relevance_from="batch", ce_weight=0.0)
    batch = labelled_batch(8)
    teachers = teacher_logits_of(module, batch)
    logits, losses = module.training_losses(batch)
    scores = SourceAccuracy()(teachers, batch.target)
    if scores.sum() > 0:
        torch.testing.assert_close(losses["kd"], distill_weighted_loss(logits, teachers, scores, 4.0).detach())
    given = DistillWeighted(spec(), [spec("resnet14"), spec("resnet8")], scores=[0.0, 2.0], ce_weight=0.0)
    logits, losses = given.training_losses(batch)
    from lit_kd.losses import kd_loss
    torch.testing.assert_close(losses["kd"], kd_loss(logits, teacher_logits_of(given, batch)[1], 4.0).detach())


@pytest.mark.parametrize("kwargs, message", [
    (dict(scores=[1.0]), r"Got 1 relevance scores for 2 sources"),
    (dict(scores=[1.0, -1.0]), r"Relevance scores must be >= 0"),
    (dict(relevance_temperature=0.0), r"relevance_temperature must be a finite number > 0"),
    (dict(temperature=0.0), r"temperature must be a finite number > 0"),
    (dict(teachers=[]), r"got none"),
])
def test_distill_weighted_bad_input(kwargs, message):
    kwargs.setdefault("teachers", [spec("resnet14"), spec("resnet8")])
    with pytest.raises(ValueError, match=message):
        DistillWeighted(spec(), **kwargs)


# ====================================================================== Tf-KD

@pytest.mark.parametrize("official", [False, True])
def test_tf_kd_self_loss_is_the_official_function(official):
    torch.manual_seed(0)
    module = TfKDSelf(spec(), spec(), alpha=0.9, temperature=3.0, multiplier=5.0, official=official)
    assert isinstance(module, DistillationModule)
    module.train()
    batch = labelled_batch()
    with torch.no_grad():
        teacher = module.teacher(module.teacher_input(batch.image))
    logits, losses = module.training_losses(batch)
    expected = tf_kd_self_loss(logits, teacher, batch.target, 0.9, 3.0, 5.0, official=official)
    torch.testing.assert_close(losses["loss"], expected)


def test_tf_kd_self_teacher_is_a_normal_frozen_teacher(tmp_path):
    L.seed_everything(0)
    module = TfKDSelf(spec(), spec())
    teacher, student = snapshot(module.teacher), snapshot(module.student)
    trainer = fit(module, tmp_path)
    assert unchanged(teacher, module.teacher) and changed(student, module.student)
    assert not optimized_ids(trainer) & {id(p) for p in module.teacher.parameters()}
    assert "val/teacher_acc" in trainer.callback_metrics


@pytest.mark.parametrize("official", [False, True])
def test_tf_kd_virtual_has_no_teacher_and_its_loss_is_the_official_function(official, tmp_path):
    torch.manual_seed(0)
    module = TfKDVirtual(spec(), alpha=0.2, temperature=10.0, correct_prob=0.9, multiplier=50.0, official=official)
    assert not isinstance(module, DistillationModule)
    assert list(module.trainable_modules()) == ["student"]
    batch = labelled_batch()
    logits, losses = module.training_losses(batch)
    expected = tf_kd_regularization_loss(logits, batch.target, 0.2, 10.0, 0.9, 50.0, official=official)
    torch.testing.assert_close(losses["loss"], expected)
    with pytest.raises(DataContractError, match="TfKDVirtual needs class labels"):
        module.training_losses(KDBatch(image=batch.image))


@pytest.mark.parametrize("make, message", [
    (lambda: TfKDSelf(spec(), spec(), alpha=1.5), r"alpha must be in \[0, 1\]"),
    (lambda: TfKDSelf(spec(), spec(), temperature=0.0), r"temperature must be a finite number > 0"),
    (lambda: TfKDVirtual(spec(), temperature=-1.0), r"temperature must be a finite number > 0"),
    (lambda: TfKDVirtual(spec(), alpha=-0.1), r"alpha must be in \[0, 1\]"),
    (lambda: TfKDVirtual(spec(), correct_prob=2.0), r"correct_prob must be in \[0, 1\]"),
    (lambda: TfKDVirtual(spec(), label_smoothing=0.1), r"leave label_smoothing at 0"),
])
def test_tf_kd_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ====================================================================== PS-KD

def at_epoch(module: L.LightningModule, epoch: int, max_epochs: int = 10) -> L.LightningModule:
    """Attach a trainer whose state says ``epoch`` (what ``current_epoch`` reads)."""
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit_loop.epoch_progress.current.completed = epoch
    module.trainer = trainer
    return module


def test_pskd_alpha_follows_the_official_epoch_indexing():
    module = PSKD(spec(), alpha_final=0.8)
    for epoch in (0, 4, 9):
        assert at_epoch(module, epoch, max_epochs=10).alpha_t() == pytest.approx(0.8 * (epoch + 1) / 10)
    assert PSKD(spec(), total_epochs=4).alpha_t() == pytest.approx(0.2)  # epoch 0 of 4, no trainer needed


def test_pskd_loss_is_the_label_in_the_first_epoch_then_the_snapshot_mix():
    torch.manual_seed(0)
    module = at_epoch(PSKD(spec(), alpha_final=0.8), 0, max_epochs=4)
    module.train()
    batch = labelled_batch()
    logits, losses = module.training_losses(batch)
    torch.testing.assert_close(losses["loss"], F.cross_entropy(logits, batch.target))  # epoch 0: one-hot target
    at_epoch(module, 2, max_epochs=4)
    with torch.no_grad():
        previous = F.softmax(module.teacher(module.teacher_input(batch.image)), -1)
    logits, losses = module.training_losses(batch)
    expected = pskd_loss(logits, pskd_targets(batch.target, previous, 0.8 * 3 / 4, 10))
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())


class SnapshotProbe(L.Callback):
    """Records the student at the end of each epoch and the snapshot during each epoch."""

    def __init__(self) -> None:
        self.student_at_end: dict[int, dict] = {}
        self.snapshot_during: dict[int, list[dict]] = {}
        self.alphas: dict[int, float] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.snapshot_during.setdefault(trainer.current_epoch, []).append(snapshot(module.teacher))
        self.alphas[trainer.current_epoch] = module.alpha_t()
        assert not module.teacher.training

    def on_train_epoch_end(self, trainer, module):
        self.student_at_end[trainer.current_epoch] = snapshot(module.student)


def test_pskd_snapshot_is_refreshed_each_epoch_and_frozen_in_between(tmp_path):
    L.seed_everything(0)
    module = PSKD(spec())
    probe = SnapshotProbe()
    trainer = fit(module, tmp_path, epochs=3, callbacks=[probe])
    assert probe.alphas == pytest.approx({0: 0.8 / 3, 1: 1.6 / 3, 2: 0.8})
    for epoch in (1, 2):
        during = probe.snapshot_during[epoch]
        assert all(snap.keys() == during[0].keys() and all(torch.equal(snap[k], during[0][k]) for k in snap)
                   for snap in during)  # frozen within the epoch
        end = probe.student_at_end[epoch - 1]
        assert all(torch.equal(during[0][k], end[k]) for k in end)  # = the student at the end of the last epoch
    assert not optimized_ids(trainer) & {id(p) for p in module.teacher.parameters()}
    assert not any(p.requires_grad for p in module.teacher.parameters())


def test_pskd_snapshot_refresh_depends_on_its_epoch_not_on_when_the_hook_runs():
    module = PSKD(spec())
    old = snapshot(module.teacher)
    with torch.no_grad():
        module.student.fc.weight.add_(1.0)
    at_epoch(module, 0).on_train_epoch_start()
    assert unchanged(old, module.teacher)  # epoch 0: the snapshot belongs to it already
    module.snapshot_epoch.fill_(3)
    at_epoch(module, 3).on_train_epoch_start()  # e.g. resumed mid-epoch 3: keep the checkpoint's snapshot
    assert unchanged(old, module.teacher)
    at_epoch(module, 4).on_train_epoch_start()
    assert unchanged(snapshot(module.student), module.teacher) and int(module.snapshot_epoch) == 4


@pytest.mark.parametrize("targets", ["snapshot", "memory"])
def test_pskd_resumed_run_equals_uninterrupted(tmp_path, targets):
    data = lambda: digits(image_size=16, batch_size=16, return_index=True)  # noqa: E731

    def run(epochs, root, ckpt_path=None):
        L.seed_everything(0)
        module = PSKD(spec(), targets=targets, total_epochs=3)
        trainer = fit(module, root, epochs=epochs, ckpt_path=ckpt_path, data=data(), limit_val_batches=0)
        return module, trainer

    full, _ = run(2, tmp_path / "full")
    half, trainer = run(1, tmp_path / "half")
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    if targets == "snapshot":
        assert any(k.startswith("teacher.") for k in saved["state_dict"]) and "snapshot_epoch" in saved["state_dict"]
    else:
        assert saved["pskd_memory"]["filled"].sum() == 32 and not any(k.startswith("teacher.")
                                                                      for k in saved["state_dict"])
    resumed, _ = run(2, tmp_path / "resumed", ckpt_path=str(ckpt))
    for key, value in snapshot(full.student).items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value, msg=key)
    if targets == "snapshot":
        assert unchanged(snapshot(full.teacher), resumed.teacher)
    else:
        assert torch.equal(full.prediction_memory, resumed.prediction_memory)


def test_pskd_memory_reads_the_previous_epochs_prediction_of_each_sample():
    torch.manual_seed(0)
    module = at_epoch(PSKD(spec(), targets="memory"), 0, max_epochs=2)
    module.train()
    batch = labelled_batch(index=True)
    batch = KDBatch(image=batch.image, target=batch.target, index=torch.tensor([5, 2, 7, 0]))
    logits, losses = module.training_losses(batch)
    torch.testing.assert_close(losses["loss"], F.cross_entropy(logits, batch.target))
    stored = F.softmax(logits.detach(), -1)
    torch.testing.assert_close(module.prediction_memory[batch.index], stored)
    assert module.memory_filled.tolist() == [True, False, True, False, False, True, False, True]
    at_epoch(module, 1, max_epochs=2)
    partial = KDBatch(image=batch.image[:2], target=batch.target[:2], index=torch.tensor([5, 1]))  # 1: never seen
    logits, losses = module.training_losses(partial)
    previous = torch.stack([stored[0], F.one_hot(partial.target[1], 10).float()])
    torch.testing.assert_close(losses["loss"], pskd_loss(logits, pskd_targets(partial.target, previous, 0.8, 10)))


def test_pskd_bad_input(tmp_path):
    with pytest.raises(DataContractError, match=r"has no index\. Set data\.return_index: true"):
        at_epoch(PSKD(spec(), targets="memory"), 0).training_losses(labelled_batch())
    with pytest.raises(ValueError, match="PSKD sets teacher itself"):
        PSKD(spec(), teacher=spec())
    with pytest.raises(ValueError, match=r"alpha_final must be in \[0, 1\]"):
        PSKD(spec(), alpha_final=1.5)
    with pytest.raises(ValueError, match="trainer has no max_epochs"):
        fit(PSKD(spec()), tmp_path, epochs=-1, max_steps=1)


# ====================================================================== online distillation

def test_online_distillation_has_no_frozen_network():
    assert issubclass(OnlineDistillation, StudentModule) and not issubclass(OnlineDistillation, DistillationModule)
    module = DML([spec(), spec("resnet14")])
    assert list(module.trainable_modules()) == ["student", "peer_1"]
    assert not hasattr(module, "teacher") and module.frozen_networks() == {}
    assert all(p.requires_grad for p in module.parameters())


def test_each_peer_normalizes_its_own_inputs():
    module = DML([spec(), ModelSpec("resnet8", num_classes=10, mean=(0.0, 0.0, 0.0), std=(2.0, 2.0, 2.0))])
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(module.peer_1_input(images), images / 2.0)
    assert not torch.equal(module.student_input(images), images / 2.0)


@pytest.mark.parametrize("official", [False, True])
def test_dml_losses_are_the_pure_loss_for_every_peer(official):
    torch.manual_seed(0)
    module = DML([spec(), spec("resnet14"), spec()], official=official, label_smoothing=0.1)
    module.train()
    batch = labelled_batch()
    logits = module.peer_logits(batch.image)
    peer_losses = module.peer_losses(logits, batch)
    for k, loss in enumerate(peer_losses):
        others = [other for j, other in enumerate(logits) if j != k]
        torch.testing.assert_close(loss, dml_loss(logits[k], others, batch.target, 0.1, official=official))
    torch.manual_seed(1)
    _, losses = module.training_losses(batch)
    assert set(losses) == {"loss", "peer0_loss", "peer1_loss", "peer2_loss"}
    torch.testing.assert_close(losses["loss"], losses["peer0_loss"] + losses["peer1_loss"] + losses["peer2_loss"])


@pytest.mark.parametrize("method", ["dml", "bdkd"])
def test_every_peer_gets_its_own_loss_gradient(method):
    torch.manual_seed(0)
    module = DML([spec(), spec("resnet14")]) if method == "dml" else BDKD([spec(), spec("resnet14")])
    module.train()
    batch = labelled_batch()
    _, losses = module.training_losses(batch)
    losses["loss"].backward()
    for name in ("student", "peer_1"):
        params = list(getattr(module, name).parameters())
        assert all(p.grad is not None for p in params) and sum(p.grad.abs().sum() for p in params) > 0, name
    # The sum's gradient on a peer is that peer's own loss gradient (the other peers are detached).
    own = {n: p.grad.clone() for n, p in module.student.named_parameters()}
    module.zero_grad()
    logits = module.peer_logits(batch.image)
    module.peer_losses(logits, batch)[0].backward()
    for name, param in module.student.named_parameters():
        torch.testing.assert_close(param.grad, own[name], msg=name)


def test_bdkd_losses_are_the_student_and_teacher_losses():
    torch.manual_seed(0)
    module = BDKD([spec(), spec("resnet14")], temperature=2.0, emphasis=3.0, kd_weight=0.5)
    batch = labelled_batch()
    student, teacher = module.peer_logits(batch.image)
    losses = module.peer_losses([student, teacher], batch)
    torch.testing.assert_close(losses[0], bd_kd_student_loss(student, teacher, batch.target, 2.0, 3.0, 0.5))
    torch.testing.assert_close(losses[1], bd_kd_teacher_loss(teacher, student, batch.target, 2.0, 0.5))


def test_dml_fit_trains_every_peer_logs_them_and_resumes(tmp_path):
    def run(epochs, root, ckpt_path=None):
        L.seed_everything(0)
        module = DML([spec(), spec("resnet14")])
        before = {name: snapshot(net) for name, net in module.peers().items()}
        trainer = fit(module, root, epochs=epochs, ckpt_path=ckpt_path)
        return module, trainer, before

    full, trainer, before = run(2, tmp_path / "full")
    assert all(changed(before[name], net) for name, net in full.peers().items())
    ids = optimized_ids(trainer)
    assert all(id(p) in ids for p in full.parameters())
    assert {"val/peer0_acc", "val/peer1_acc", "test/peer1_acc"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["val/peer0_acc"] == trainer.callback_metrics["val/acc"]
    _, half, _ = run(1, tmp_path / "half")
    ckpt = tmp_path / "dml.ckpt"
    half.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert {k.split(".")[0] for k in saved["state_dict"]} == {"student", "peer_1"}
    assert [p["name"] for p in saved["hyper_parameters"]["peers"]] == ["resnet8", "resnet14"]
    resumed, _, _ = run(2, tmp_path / "resumed", ckpt_path=str(ckpt))
    for name, net in full.peers().items():
        for key, value in snapshot(net).items():
            torch.testing.assert_close(getattr(resumed, name).state_dict()[key], value, msg=f"{name}.{key}")
    # `lit-kd export` writes peer 0, the student, with its name.
    from lit_kd.cli import main
    from safetensors import safe_open

    full_ckpt = tmp_path / "full.ckpt"
    trainer.save_checkpoint(full_ckpt)
    out = tmp_path / "student.safetensors"
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", str(full_ckpt), "--out", str(out)])
    with safe_open(str(out), "pt") as exported:
        assert exported.metadata()["name"] == '"resnet8"'
        assert torch.equal(exported.get_tensor("fc.weight"), full.student.fc.weight)
    restored = DML.load_from_checkpoint(full_ckpt, weights_only=True)
    assert restored.peer_names == ["student", "peer_1"] and unchanged(snapshot(full.peer_1), restored.peer_1)


@pytest.mark.parametrize("make, message", [
    (lambda: DML([spec()]), r"needs at least two networks in peers"),
    (lambda: DML([spec(), spec()], student=spec()), r"it has no student or teacher argument"),
    (lambda: BDKD([spec(), spec(), spec()]), r"give exactly two peers"),
    (lambda: BDKD([spec(), spec()], temperature=0.0), r"temperature must be a finite number > 0"),
    (lambda: BDKD([spec(), spec()], emphasis=0.0), r"emphasis must be > 0"),
    (lambda: BDKD([spec(), spec()], label_smoothing=0.1), r"leave label_smoothing at 0"),
    (lambda: DML([spec(), spec("resnet8", 100)]).setup("fit"), r"Class counts disagree \(student=10, peer_1=100\)"),
])
def test_online_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_online_methods_need_labels():
    with pytest.raises(DataContractError, match="DML trains every peer with the cross-entropy on class labels"):
        DML([spec(), spec()]).training_losses(KDBatch(image=torch.rand(2, 3, 16, 16)))
