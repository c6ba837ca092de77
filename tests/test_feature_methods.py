"""Feature and relation methods (AT, SP, RKD, PKT, NST, VID, CC, FSP, FT, AB, ReviewKD, OFD): the
training loss is the golden-tested pure loss on the same features, gradients reach only the student
and the method's parts, the teacher never changes, the two-stage schedules of FT/AB/FSP, export
without the parts, and bad input."""

from __future__ import annotations

from functools import partial
from unittest.mock import PropertyMock, patch

import lightning as L
import pytest
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_kd import ModelSpec
from lit_kd.cli import main
from lit_kd.contract import KDBatch
from lit_kd.export import export_student
from lit_kd.losses import (ab_loss, ab_stage_weights, at_loss, cc_loss, cc_loss_repdistiller, fsp_loss, ft_loss,
                           nst_loss, ofd_loss, ofd_margin, pkt_cosine_loss, review_kd_loss, rkd_loss, sp_loss, vid_loss)
from lit_kd.methods import AB, AT, CC, FSP, FT, NST, OFD, PKT, RKD, SP, VID, ReviewKD
from lit_kd.taps import FeatureTap, TapError
from tests.helpers import digits, snapshot, tiny_trainer

STUDENT, TEACHER = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread is as fast, and much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
METHODS = {"AT": AT, "SP": SP, "RKD": RKD, "PKT": PKT, "NST": NST, "VID": VID, "CC": CC, "FSP": FSP, "FT": FT,
           "AB": AB, "ReviewKD": ReviewKD, "OFD": OFD}
STAGED = {"FT": FT, "AB": AB, "FSP": FSP}
# The parts each method owns (attribute names): trained, checkpointed, never exported.
PARTS = {"VID": ["regressors"], "CC": ["student_embed", "teacher_embed"], "FT": ["translator", "paraphraser"],
         "AB": ["connectors"], "ReviewKD": ["review"], "OFD": ["distillation"]}
STAGE_ONE_PARTS = {("FT", "paraphraser"), ("AB", "connectors")}  # trained in the initialization stage only


# AB's connectors are the identity between networks of one width: give it a wider teacher.
TEACHERS = {"AB": ModelSpec("resnet8x4", num_classes=10)}


def build(name: str, **kwargs):
    kwargs.setdefault("check_teacher", False)
    kwargs.setdefault("probe_size", 16)
    return METHODS[name](STUDENT, TEACHERS.get(name, TEACHER), **kwargs)


def batch(size: int = 6) -> KDBatch:
    generator = torch.Generator().manual_seed(1)
    return KDBatch(image=torch.rand(size, 3, 16, 16, generator=generator),
                   target=torch.randint(0, 10, (size,), generator=generator))


def features(module, data: KDBatch, preact: bool = False, teacher_preact: bool | None = None):
    """Student and teacher features of the module's layers, from separate taps (same weights, same modes)."""
    student = FeatureTap(module.student, module.student_tap.layers, preact=preact)
    teacher = FeatureTap(module.teacher, module.teacher_tap.layers,
                         preact=preact if teacher_preact is None else teacher_preact)
    logits, student_features = student(module.student_input(data.image))
    with torch.no_grad():
        _, teacher_features = teacher(module.teacher_input(data.image))
    return logits, student_features, teacher_features


def pure_objective(name: str, module, data: KDBatch) -> torch.Tensor:
    """The expected training objective, from the pure losses on independently tapped features."""
    preact = name in ("OFD",)
    logits, s, t = features(module, data, preact=preact, teacher_preact=True if name == "ReviewKD" else None)
    ce = F.cross_entropy(logits, data.target)
    if name == "AT":
        return ce + 1000.0 * sum(at_loss(a, b) for a, b in zip(s, t))
    if name == "SP":
        return ce + 3000.0 * sp_loss(s[0], t[0])
    if name == "RKD":
        return ce + rkd_loss(s[0], t[0], 25.0, 50.0)
    if name == "PKT":
        return ce + 30000.0 * pkt_cosine_loss(s[0], t[0])
    if name == "NST":
        return ce + 50.0 * sum(nst_loss(a, b) for a, b in zip(s, t))
    if name == "VID":
        total = 0.0
        for regressor, a, b in zip(module.regressors, s, t):  # equal sizes here: no pooling
            total = total + vid_loss(regressor.regressor(a), b, F.softplus(regressor.alpha) + regressor.eps)
        return ce + total
    if name == "CC":
        student_embedding, teacher_embedding = module.student_embed(s[0]), module.teacher_embed(t[0])
        if module.form == "repdistiller":
            return ce + 0.02 * cc_loss_repdistiller(student_embedding, teacher_embedding)
        return ce + 0.02 * cc_loss(F.normalize(student_embedding, dim=1), F.normalize(teacher_embedding, dim=1))
    if name == "FT":
        with torch.no_grad():
            teacher_factor = module.paraphraser.encoder(t[0])
        return ce + module.ft_weight * ft_loss(module.translator.encoder(s[0]), teacher_factor, module.mode)
    if name in ("AB", "FSP"):
        return ce  # main stage: the task alone (RepDistiller -a 0)
    if name == "ReviewKD":
        maps = [f[:, :, None, None] if f.dim() == 2 else f for f in s]
        teacher_maps = [f[:, :, None, None] if f.dim() == 2 else f for f in t]
        outputs = module.review(maps, [tuple(f.shape[-2:]) for f in teacher_maps])
        return ce + review_kd_loss(outputs, teacher_maps)
    if name == "OFD":
        teacher = module.teacher
        margins = [ofd_margin(stage[-1].bn2.weight, stage[-1].bn2.bias)
                   for stage in (teacher.layer1, teacher.layer2, teacher.layer3)]
        mapped = [connector(f) for connector, f in zip(module.distillation.connectors, s)]
        return ce + 1e-3 * ofd_loss(mapped, t, margins)
    raise AssertionError(name)


@pytest.mark.parametrize("name, options", [(n, {}) for n in METHODS] + [("CC", {"form": "repdistiller"}),
                                                                       ("FT", {"mode": "repdistiller"})],
                         ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={w}" for k, w in v.items()))
def test_training_loss_is_the_pure_loss_and_only_student_and_parts_get_gradients(name, options):
    torch.manual_seed(0)
    if name == "ReviewKD":
        options = {**options, "warmup_epochs": 0}
    module = build(name, **options)
    module.train()
    data = batch()
    with patch.object(type(module), "current_epoch", new_callable=PropertyMock, return_value=40):
        _, losses = module.training_losses(data)
    expected = pure_objective(name, module, data)
    assert torch.allclose(losses["loss"], expected, rtol=1e-5, atol=1e-6), (losses, expected)

    module.zero_grad(set_to_none=True)
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters())
    main_parts = [part for part in PARTS.get(name, []) if (name, part) not in STAGE_ONE_PARTS]
    for part in main_parts:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(module, part).parameters()), part
    for part in PARTS.get(name, []):
        if (name, part) in STAGE_ONE_PARTS:  # frozen (FT's paraphraser) or unused (AB's connectors) now
            assert all(p.grad is None for p in getattr(module, part).parameters()), part
    expected_params = {id(p) for p in module.student.parameters()}
    for part in main_parts:
        expected_params |= {id(p) for p in getattr(module, part).parameters()}
    assert {id(p) for p in module.trainable_parameters()} == expected_params


@pytest.mark.parametrize("name", list(STAGED))
def test_initialization_gradients_reach_only_its_parameters(name):
    torch.manual_seed(0)
    module = build(name)
    module.train()
    with patch.object(type(module), "current_epoch", new_callable=PropertyMock, return_value=0):
        assert module.pretraining and module.stage == "pretrain"
        _, losses = module.pretrain_losses(batch())
    losses["loss"].backward()
    trained = {id(p) for p in module.pretrain_parameters()}
    for parameter_name, parameter in module.named_parameters():
        if id(parameter) not in trained:
            assert parameter.grad is None, parameter_name
    assert all(p.grad is not None for p in module.pretrain_parameters())
    assert not any(id(p) in trained for p in module.teacher.parameters())
    classifier = {id(p) for p in module.student.get_classifier().parameters()}
    assert not trained & classifier  # the classifier waits for the task
    for part in PARTS.get(name, []):
        if (name, part) in STAGE_ONE_PARTS:
            assert {id(p) for p in getattr(module, part).parameters()} <= trained, part


def test_staged_initialization_objectives_are_the_pure_losses():
    torch.manual_seed(0)
    data = batch()
    fsp = build("FSP")
    fsp.train()
    _, losses = fsp.pretrain_losses(data)
    _, s, t = features(fsp, data)
    assert len(s) == 4 and torch.allclose(losses["loss"], fsp_loss(s, t), rtol=1e-6)

    ab = build("AB")
    ab.train()
    _, losses = ab.pretrain_losses(data)
    _, s, t = features(ab, data, preact=True)
    weights = ab_stage_weights(3)
    expected = sum(w * ab_loss(c(a), b) for w, c, a, b in zip(weights, ab.connectors, s, t))
    assert torch.allclose(losses["loss"], expected, rtol=1e-6)
    assert weights == pytest.approx([3e-3 / 4, 3e-3 / 2, 3e-3])

    ft = build("FT")
    ft.train()
    logits, losses = ft.pretrain_losses(data)
    _, _, t = features(ft, data)
    assert torch.allclose(losses["loss"], F.mse_loss(ft.paraphraser.decoder(ft.paraphraser.encoder(t[0])), t[0]),
                          rtol=1e-6)
    assert not logits.requires_grad  # the student is not trained while the paraphraser learns


def test_official_stage_choices_are_the_defaults():
    modules = {name: build(name) for name in METHODS}
    layers = {name: (module.student_tap.layers, module.teacher_tap.layers) for name, module in modules.items()}
    every_stage_after_stem = ([1, 2, 3], [1, 2, 3])
    for name in ("AT", "NST", "VID", "AB", "OFD"):
        assert layers[name] == every_stage_after_stem, name
    assert layers["SP"] == ([-1], [-1]) and layers["FT"] == ([-1], [-1])
    for name in ("RKD", "PKT", "CC"):
        assert layers[name] == (["pre_logits"], ["pre_logits"]), name
    assert layers["FSP"] == ([0, 1, 2, 3], [0, 1, 2, 3])
    assert layers["ReviewKD"] == ([1, 2, 3, "pre_logits"], [1, 2, 3, "pre_logits"])
    review = modules["ReviewKD"]
    assert review.teacher_tap.preact and not review.student_tap.preact
    assert modules["OFD"].teacher_norms == ["layer1.1.bn2", "layer2.1.bn2", "layer3.1.bn2"]
    assert modules["AB"].student_tap.preact and modules["AB"].teacher_tap.preact and modules["OFD"].student_tap.preact


@pytest.mark.parametrize("name", list(METHODS))
def test_tiny_fit_keeps_the_teacher_and_exports_the_student_without_parts(name, tmp_path):
    L.seed_everything(0)
    options = {"pretrain_epochs": 1} if name in STAGED else {}
    module = build(name, **options)
    teacher_before = snapshot(module.teacher)
    trainer = tiny_trainer(tmp_path, max_epochs=2 if name in STAGED else 1, limit_train_batches=2,
                           limit_val_batches=1)
    trainer.fit(module, datamodule=digits(batch_size=16))
    for key, value in snapshot(module.teacher).items():  # weights and BN statistics
        assert torch.equal(teacher_before[key], value), key
    assert not module.teacher.training
    teacher_params = {id(p) for p in module.teacher.parameters()}
    optimized = {id(p) for optimizer in trainer.optimizers for g in optimizer.param_groups for p in g["params"]}
    assert optimized and not optimized & teacher_params
    for part in PARTS.get(name, []):
        assert {id(p) for p in getattr(module, part).parameters()} <= optimized, part

    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)
    for part in PARTS.get(name, []):
        assert any(k.startswith(f"{part}.") for k in state), part
    out = export_student(ckpt, tmp_path / "student.safetensors")
    from safetensors.torch import load_file

    exported = load_file(str(out))
    assert set(exported) == set(module.student.state_dict())
    plain = timm.create_model("resnet8", num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out), num_classes=10))
    for key, value in module.student.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key
    restored = type(module).load_from_checkpoint(ckpt)
    for part in PARTS.get(name, []):
        for key, value in getattr(module, part).state_dict().items():
            assert torch.equal(getattr(restored, part).state_dict()[key], value), (part, key)


class _Record(Callback):
    """Per training batch: the epoch, the stage, and the learning rate of each optimizer."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, list[float]]] = []

    def on_train_batch_start(self, trainer, pl_module, *_args) -> None:
        self.rows.append((trainer.current_epoch, pl_module.stage,
                          [o.param_groups[0]["lr"] for o in trainer.optimizers]))


@pytest.mark.parametrize("name", list(STAGED))
def test_initialization_stage_trains_only_its_parameters(name, tmp_path):
    L.seed_everything(0)
    module = build(name, pretrain_epochs=1, pretrain_lr=0.01,
                   lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1], gamma=0.1))
    before = snapshot(module)
    record = _Record()
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[record])
    trainer.fit(module, datamodule=digits(batch_size=32))
    after = snapshot(module)
    trained = {n for n, p in module.named_parameters() if id(p) in {id(q) for q in module.pretrain_parameters()}}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert trained and trained <= moved | {k for k in trained if "bias" in k}  # every weight moved
    assert all(not k.endswith(("weight", "bias")) or k in trained for k in moved), moved - trained
    if name == "FT":
        assert not any(k.startswith("student.") for k in moved)  # not even BN statistics: eval mode
        assert all(k.startswith("paraphraser.") for k in moved)
    else:
        assert not any(k.startswith("student.fc.") for k in moved)  # the classifier waits for the task
    assert [row[1] for row in record.rows] == ["pretrain", "pretrain"]
    assert record.rows[0][2] == [0.05, 0.01]  # main optimizer untouched at its lr; initialization at pretrain_lr


def test_stage_switch_and_main_schedule_follow_the_epoch(tmp_path):
    L.seed_everything(0)
    module = build("FT", pretrain_epochs=2, pretrain_lr=0.01,
                   lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1], gamma=0.1))
    record = _Record()
    trainer = tiny_trainer(tmp_path, max_epochs=4, limit_train_batches=1, limit_val_batches=0, callbacks=[record])
    paraphraser = {}

    class Snap(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            paraphraser[trainer.current_epoch] = snapshot(pl_module.paraphraser)

    trainer.callbacks.append(Snap())
    trainer.fit(module, datamodule=digits(batch_size=32))
    assert [(e, s) for e, s, _ in record.rows] == [(0, "pretrain"), (1, "pretrain"), (2, "main"), (3, "main")]
    # The milestone counts epochs of the main stage: decay after the first main epoch.
    assert [lrs[0] for _, _, lrs in record.rows] == pytest.approx([0.05, 0.05, 0.05, 0.005])
    final = snapshot(module.paraphraser)
    assert any(not torch.equal(paraphraser[0][k], paraphraser[2][k]) for k in final)  # trained in stage 1
    assert all(torch.equal(paraphraser[2][k], final[k]) for k in final)  # frozen in stage 2


class _Killed(RuntimeError):
    pass


class _KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *_args) -> None:
        if trainer.global_step == self.step:
            raise _Killed(f"killed at step {self.step}")


def test_resume_across_the_stage_boundary_equals_an_uninterrupted_run(tmp_path):
    """Checkpoints in the middle of the paraphraser stage, at its end and after the boundary, resumed:
    the same student, translator, paraphraser and learning rates as one uninterrupted fit."""

    def run(root, callbacks=(), ckpt_path=None):
        L.seed_everything(0)
        module = build("FT", pretrain_epochs=1,
                       lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1], gamma=0.1))
        trainer = tiny_trainer(root, max_epochs=3, limit_train_batches=2, limit_val_batches=0,
                               enable_checkpointing=True, callbacks=list(callbacks))
        trainer.fit(module, datamodule=digits(batch_size=16), ckpt_path=ckpt_path)
        return module, trainer

    full, trainer = run(tmp_path / "full")
    assert trainer.global_step == 6
    full_lr = [o.param_groups[0]["lr"] for o in trainer.optimizers]
    assert full_lr == pytest.approx([0.005, 0.05])  # the main schedule decayed once, in its second epoch
    # Step checkpoints inside epochs; the end of the paraphraser stage as an end-of-epoch checkpoint.
    steps = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    epochs = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="end-{epoch}", save_top_k=-1,
                             save_on_train_epoch_end=True)
    with pytest.raises(_Killed):
        run(tmp_path / "killed", callbacks=[steps, epochs, _KillAtStep(4)])
    checkpoints = [*(tmp_path / "ckpt").glob("epoch=0-step=1.ckpt"), tmp_path / "ckpt" / "end-epoch=0.ckpt",
                   *(tmp_path / "ckpt").glob("epoch=1-step=3.ckpt")]
    assert len(checkpoints) == 3
    for ckpt in checkpoints:
        resumed, trainer = run(tmp_path / f"resumed-{ckpt.stem}", ckpt_path=str(ckpt))
        assert trainer.global_step == 6
        assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == full_lr
        for key, value in full.state_dict().items():
            if not key.startswith("teacher."):
                assert torch.equal(value, resumed.state_dict()[key]), (ckpt.name, key)


def test_review_warmup_follows_the_epoch():
    module = build("ReviewKD", warmup_epochs=20)
    assert [module.warmup_factor(e) for e in (0, 1, 10, 20, 30)] == [0.0, 0.05, 0.5, 1.0, 1.0]
    mdistiller = build("ReviewKD", warmup_epochs=20, warmup_start="mdistiller")
    assert [mdistiller.warmup_factor(e) for e in (0, 1, 19, 20)] == [0.05, 0.1, 1.0, 1.0]
    assert build("ReviewKD", warmup_epochs=0).warmup_factor(0) == 1.0
    module.train()
    data = batch()
    totals = {}
    for epoch in (0, 10, 25):
        torch.manual_seed(0)
        with patch.object(type(module), "current_epoch", new_callable=PropertyMock, return_value=epoch):
            _, losses = module.training_losses(data)
        totals[epoch] = (losses["loss"] - losses["ce"]).item()
        assert totals[epoch] == pytest.approx(module.warmup_factor(epoch) * losses["review"].item(), rel=1e-5)
    assert totals[0] == 0.0 and 0 < totals[10] < totals[25]


def test_timm_teacher_by_batch_norm_names():
    student = ModelSpec("resnet18", num_classes=10)
    names = ["layer3.1.bn2", "layer4.1.bn2"]
    untrained = OFD(student, ModelSpec("resnet18", num_classes=10), preact=False, student_layers=names,
                    teacher_layers=names, check_teacher=False)
    # timm initializes these BNs' scale to zero: the response is the constant bias, the margin min(bias, 0).
    assert all(torch.equal(m, torch.zeros_like(m)) for m in untrained.distillation.margins)
    teacher = timm.create_model("resnet18", num_classes=10, zero_init_last=False)
    with pytest.raises(ValueError, match="preact: true .* or name the BN"):
        OFD(student, teacher, preact=False, student_layers=[3, 4], teacher_layers=[3, 4], check_teacher=False)
    module = OFD(student, teacher, preact=False, student_layers=names, teacher_layers=names, check_teacher=False,
                 probe_size=32)
    assert module.teacher_norms == names
    bn = module.teacher.get_submodule("layer4.1.bn2")
    assert torch.equal(module.distillation.margins[1], ofd_margin(bn.weight, bn.bias))
    at = AT(student, teacher, check_teacher=False, probe_size=32)
    assert at.student_tap.layers == [1, 2, 3, 4]  # layer1..layer4, as the authors' ImageNet code


def test_bad_input_names_the_fix():
    with pytest.raises(TapError, match="does not exist"):
        build("AT", student_layers=[1, 9], teacher_layers=[1, 2])
    with pytest.raises(TapError, match="does not exist"):
        build("VID", teacher_layers=["layer7.conv", 1, 2])
    with pytest.raises(ValueError, match="as many student_layers as teacher_layers"):
        build("NST", student_layers=[1, 2], teacher_layers=[2])
    with pytest.raises(ValueError, match="feature maps .* not 'pre_logits'"):
        build("AT", student_layers=["pre_logits"], teacher_layers=["pre_logits"])
    with pytest.raises(ValueError, match="ABConnector cannot map .* Tap a student stage"):
        build("AB", student_layers=[3], teacher_layers=[1])  # 4x4 student map, 16x16 teacher map
    with pytest.raises(ValueError, match="pool_pairs: true"):
        build("FSP", pool_pairs=False)  # 16x16 -> 8x8 between consecutive stages
    paper = ["layer1.0", "layer1", "layer2.0", "layer2"]  # first and last block of two stages
    with pytest.raises(ValueError, match="pool_pairs: true"):
        build("FSP", pool_pairs=False, student_layers=paper, teacher_layers=paper)  # consecutive: layer1 -> layer2.0
    fsp = build("FSP", pool_pairs=False, pairing="disjoint", student_layers=paper, teacher_layers=paper)
    fsp.train()
    _, losses = fsp.pretrain_losses(batch())  # the paper's pairing: one matrix per stage
    _, s, t = features(fsp, batch())
    assert torch.allclose(losses["loss"], fsp_loss(s[:2], t[:2]) + fsp_loss(s[2:], t[2:]), rtol=1e-6)
    with pytest.raises(ValueError, match="even number"):
        build("FSP", pairing="disjoint", student_layers=[0, 1, 2], teacher_layers=[0, 1, 2])
    with pytest.raises(ValueError, match="same channels at every listed layer"):
        FSP(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8x4", num_classes=10), check_teacher=False)
    with pytest.raises(ValueError, match="pool_teacher: true"):
        build("OFD", student_layers=[2], teacher_layers=[1])
    with pytest.raises(ValueError, match="teacher_norms"):
        build("OFD", student_layers=[0], teacher_layers=[0])  # the stem's ReLU module has no BN inside
    with pytest.raises(ValueError, match="form must be"):
        build("CC", form="torchdistill")
    with pytest.raises(ValueError, match="mode must be"):
        build("FT", mode="attention")
    with pytest.raises(ValueError, match="pretrain_epochs"):
        build("AB", pretrain_epochs=-1)
    ab = build("AB", probe_size=32)
    ab.train()
    with pytest.raises(ValueError, match="probe_size"):
        ab.pretrain_losses(batch())  # parts sized for 32x32, batch of 16x16


@pytest.mark.parametrize("name, option", [("AT", "at_weight"), ("SP", "sp_weight"), ("RKD", "angle_weight"),
                                          ("PKT", "pkt_weight"), ("NST", "nst_weight"), ("VID", "vid_weight"),
                                          ("CC", "form"), ("FSP", "pool_pairs"), ("FT", "pretrain_epochs"),
                                          ("AB", "margin"), ("ReviewKD", "warmup_epochs"), ("OFD", "pool_teacher")])
def test_cli_knows_every_method(name, option, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model", name, "--model.student", "{name: resnet8}", "--model.teacher", "{name: resnet14}",
              "--data", "KDDataModule", "--print_config"])
    assert f"{option}:" in capsys.readouterr().out
