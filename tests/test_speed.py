"""Speed switches (issue 17): logging paid only when written, torch.compile, channels-last, teacher precision."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_kd import KD
from tests.helpers import tiny_trainer


class Tiny(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stem(x).mean((2, 3)))


def loader(batches: int, batch: int = 8, classes: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(batches * batch, 3, 8, 8, generator=g),
                         torch.randint(0, classes, (batches * batch,), generator=g))
    return DataLoader(data, batch_size=batch)


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


# --------------------------------------------------------------------------- logging only when written


def test_training_logs_are_handed_to_lightning_only_when_written_and_epoch_means_are_exact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    module = KD(Tiny(), Tiny(), num_classes=10, normalize_inputs=False, check_teacher=False)
    calls: list[int] = []
    original = module.log

    def counting_log(name, *args, **kwargs):
        if name.startswith("train/"):
            calls.append(module.trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(module, "log", counting_log)
    steps = StepLosses()
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=0, log_every_n_steps=3,
                           logger=CSVLogger(tmp_path), callbacks=[steps])
    trainer.fit(module, train_dataloaders=loader(7))
    # Written at stepping batches 3, 6 (epoch 0), 9, 12 (epoch 1: its batches 2, 5), plus each epoch's last batch (7).
    # Per write: loss, ce, kd, acc, acc_top5.
    assert sorted(set(calls)) == [2, 3, 5, 6, 7]
    assert len(calls) == 5 * 6
    metrics = trainer.callback_metrics
    second_epoch = steps.losses[7:]
    assert float(metrics["train/loss_epoch"]) == pytest.approx(sum(second_epoch) / 7, rel=1e-5)
    assert {"train/loss", "train/ce_epoch", "train/kd_step", "train/acc", "train/acc_top5"} <= set(metrics)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    step_rows = [r for r in rows if r.get("train/loss_step")]
    # A written step value is the mean since the previous write: steps 1-3 for the first row.
    assert float(step_rows[0]["train/loss_step"]) == pytest.approx(sum(steps.losses[:3]) / 3, rel=1e-5)


def test_training_accuracy_matches_a_direct_count(tmp_path):
    torch.manual_seed(0)
    module = KD(Tiny(), Tiny(), num_classes=10, normalize_inputs=False, check_teacher=False)
    data = loader(5)
    trainer = tiny_trainer(tmp_path, limit_val_batches=0, log_every_n_steps=2)
    hits = {"top1": 0, "top5": 0, "n": 0}

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            with torch.no_grad():
                logits = pl_module(batch[0])
            hits["top1"] += int((logits.argmax(-1) == batch[1]).sum())
            hits["top5"] += int((logits.topk(5, -1).indices == batch[1][:, None]).any(-1).sum())
            hits["n"] += len(batch[1])

    trainer.callbacks.append(Count())
    trainer.fit(module, train_dataloaders=data)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(hits["top1"] / hits["n"])
    assert float(trainer.callback_metrics["train/acc_top5"]) == pytest.approx(hits["top5"] / hits["n"])
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))


# --------------------------------------------------------------------------- torch.compile


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them eagerly."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_student_and_teacher_give_the_eager_logits_and_tap_features(fresh_dynamo):
    from lit_kd import FitNet, ModelSpec

    torch.manual_seed(0)
    student, teacher = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10)
    eager = FitNet(student, teacher, probe_size=16, check_teacher=False)
    compiled = FitNet(student, teacher, probe_size=16, check_teacher=False, compile="both",
                      compile_backend="aot_eager")
    compiled.load_state_dict(eager.state_dict())
    for module in (eager, compiled):
        module.setup("fit")
        module.eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        # aot_eager runs the traced graph op for op: the tolerance is float32 round-off.
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
        for tap in ("student_tap", "teacher_tap"):
            (c_logits, c_feats), (e_logits, e_feats) = (getattr(m, tap)(m.student_input(x)) for m in (compiled, eager))
            torch.testing.assert_close(c_logits, e_logits, rtol=1e-5, atol=1e-5)
            for c, e in zip(c_feats, e_feats, strict=True):
                torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())


def test_compiled_teacher_is_compiled_once_and_bitwise_unchanged_across_two_epochs(tmp_path, fresh_dynamo):
    from lit_kd import ModelSpec
    from tests.helpers import digits, snapshot

    L.seed_everything(0)
    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), compile="teacher")
    backend = CountingBackend()
    module.compile_options["backend"] = backend  # counts the teacher's graphs
    before = snapshot(module.teacher)
    graphs_per_epoch: list[int] = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            graphs_per_epoch.append(backend.graphs)

    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[Record()])
    trainer.fit(module, datamodule=digits())
    assert graphs_per_epoch[0] >= 1  # the teacher did run compiled (training and the validation check)
    assert backend.graphs == graphs_per_epoch[0]  # nothing recompiled in the second epoch or its validation
    after = snapshot(module.teacher)
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_checkpoints_cross_load_between_compiled_and_eager_runs_and_export_to_timm(tmp_path, fresh_dynamo):
    import timm
    from safetensors.torch import load_file

    from lit_kd import ModelSpec
    from lit_kd.callbacks.checkpoint import Checkpoint
    from lit_kd.export import export_student
    from tests.helpers import digits

    student, teacher = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10)

    def fit(module, name, max_epochs=1, ckpt_path=None):
        checkpoint = Checkpoint(dirpath=tmp_path / name, filename="last", monitor=None, save_last=False)
        trainer = tiny_trainer(tmp_path, max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=1,
                               enable_checkpointing=True, callbacks=[checkpoint])
        trainer.fit(module, datamodule=digits(), ckpt_path=ckpt_path)
        return tmp_path / name / "last.ckpt"

    L.seed_everything(0)
    compiled = KD(student, teacher, compile="both", compile_backend="eager")
    compiled_ckpt = fit(compiled, "compiled")
    eager = KD(student, teacher)
    compiled_state = torch.load(compiled_ckpt, weights_only=True)["state_dict"]
    assert set(compiled_state) == {k for k in eager.state_dict() if not k.startswith("teacher.")}
    eager_ckpt = fit(eager, "eager", max_epochs=2, ckpt_path=compiled_ckpt)  # compiled -> eager resume
    assert set(torch.load(eager_ckpt, weights_only=True)["state_dict"]) == set(compiled_state)
    resumed = KD(student, teacher, compile="both", compile_backend="eager")
    fit(resumed, "resumed", max_epochs=3, ckpt_path=eager_ckpt)  # eager -> compiled resume
    assert resumed.current_epoch == 3 and resumed.global_step == 6
    out = export_student(compiled_ckpt, tmp_path / "student.safetensors")
    assert not any("_orig_mod" in key for key in load_file(str(out)))
    via_timm = timm.create_model("resnet8", num_classes=10, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out), num_classes=10))
    for key, value in via_timm.state_dict().items():
        assert torch.equal(value, compiled_state[f"student.{key}"]), key


def test_methods_that_cannot_be_compiled_say_so():
    from lit_kd import DistPro, ModelSpec, Supervised

    student, teacher = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10)
    with pytest.raises(ValueError, match=r"DistPro cannot be compiled.*functional_call"):
        DistPro(student, teacher, compile="student")
    with pytest.raises(ValueError, match="compile must be"):
        KD(student, teacher, compile="teachers")
    with pytest.raises(ValueError, match="has no frozen teacher"):
        Supervised(student, compile="teacher").setup("fit")


def test_amd_refuses_compile():
    from lit_kd.methods.amd import AMDSearch

    assert "masked passes" in (AMDSearch.compile_unsupported or "")


# --------------------------------------------------------------------------- channels-last, teacher precision


def _feature_methods() -> list[str]:
    from tests.test_feature_methods import METHODS

    return [*METHODS, "FitNet", "KD", "DKD"]


def _build(name: str, **kwargs):
    from lit_kd import DKD, FitNet, ModelSpec
    from tests.test_feature_methods import build

    if name in ("FitNet", "KD", "DKD"):
        cls = {"FitNet": FitNet, "KD": KD, "DKD": DKD}[name]
        extra = {"probe_size": 16} if name == "FitNet" else {}
        return cls(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), check_teacher=False,
                   **extra, **kwargs)
    return build(name, **kwargs)


def _taps(module) -> dict:
    from lit_kd.taps import FeatureTap

    return {name: tap for name, tap in vars(module).items() if isinstance(tap, FeatureTap)}


@pytest.mark.parametrize("name", _feature_methods())
def test_channels_last_gives_every_method_the_features_and_losses_of_contiguous(name):
    from lit_kd.contract import KDBatch

    torch.manual_seed(0)
    plain = _build(name)
    fast = _build(name, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    for module in (plain, fast):
        module.setup("fit")
        module.train()
    g = torch.Generator().manual_seed(1)
    batch = KDBatch(image=torch.rand(6, 3, 16, 16, generator=g), target=torch.randint(0, 10, (6,), generator=g))
    with torch.no_grad():
        for attr, tap in _taps(plain).items():
            adapter = plain.teacher_input if "teacher" in attr else plain.student_input
            fast_adapter = fast.teacher_input if "teacher" in attr else fast.student_input
            _, features = tap(adapter(batch.image))
            _, fast_features = _taps(fast)[attr](fast_adapter(batch.image))
            for f, ff in zip(features, fast_features, strict=True):
                if ff.ndim == 4 and ff.shape[1] > 1 and ff.shape[-1] * ff.shape[-2] > 1:
                    assert ff.is_contiguous(memory_format=torch.channels_last), attr  # the switch is on
                torch.testing.assert_close(ff, f, rtol=1e-4, atol=1e-5)
    torch.manual_seed(2)
    _, losses = plain.training_losses(batch)
    torch.manual_seed(2)
    _, fast_losses = fast.training_losses(batch)
    for key, value in losses.items():  # convolutions sum in another order: PKT's weighted kernel amplifies it
        torch.testing.assert_close(fast_losses[key], value, rtol=1e-3, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_a_bf16_teacher_hands_back_the_runs_precision_and_warns_where_it_is_slower(monkeypatch):
    from lit_kd import FitNet, ModelSpec
    from lit_kd.contract import KDBatch
    from lit_kd.methods import base

    with pytest.raises(ValueError, match="teacher_precision must be"):
        KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), teacher_precision="fp8")
    torch.manual_seed(0)
    module = FitNet(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), probe_size=16,
                    check_teacher=False, teacher_precision="bf16")
    monkeypatch.setattr(base, "_bf16_slower_reason", lambda device: "no native bf16 (test).")
    with pytest.warns(UserWarning, match=r"teacher_precision='bf16' will make the teacher SLOWER here: no native"):
        module.setup("fit")
    batch = KDBatch(image=torch.rand(4, 3, 16, 16), target=torch.randint(0, 10, (4,)))
    with module.no_teacher_grad():
        logits, features = module.teacher_tap(module.teacher_input(batch.image))
        inner = module.teacher.conv1(module.teacher_input(batch.image))
    assert inner.dtype == torch.bfloat16  # the teacher computed in bf16 ...
    assert logits.dtype == features[0].dtype == torch.float32  # ... and handed back float32
    assert module.teacher_logits(batch.image).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in module.teacher.parameters())
    _, losses = module.training_losses(batch)
    assert torch.isfinite(losses["loss"])
    module.teacher_precision = None
    torch.testing.assert_close(module.teacher_logits(batch.image), logits, rtol=0.05, atol=0.05)


def test_gpu_benchmark_skips_cleanly_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run python -m benchmarks.gpu_throughput instead")
    from benchmarks import gpu_throughput

    assert gpu_throughput.main(["--quick"]) == 0
    assert "no CUDA device here; nothing measured" in capsys.readouterr().out


def test_compiled_ddp_run_trains_exactly_like_the_eager_ddp_run(tmp_path, fresh_dynamo):
    """Two processes (ddp_spawn, gloo): student and teacher compiled (dynamo's graphs run op for op, so
    the arithmetic is eager's) train to the same weights as the eager run, DDP keeps syncing gradients
    through the compiled student, the teacher stays bitwise unchanged and checkpoints keep plain keys."""
    from lit_kd import ModelSpec
    from lit_kd.callbacks.checkpoint import Checkpoint
    from tests.helpers import digits, snapshot

    initial, students, checkpoints = {}, {}, {}
    for mode in ("eager", "compiled"):
        L.seed_everything(0)
        options = {"compile": "both", "compile_backend": "eager"} if mode == "compiled" else {}
        module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10), check_teacher=False,
                    **options)
        teacher, initial[mode] = snapshot(module.teacher), snapshot(module.student)
        checkpoint = Checkpoint(dirpath=tmp_path / mode, filename="last", monitor=None, save_last=False)
        trainer = tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2, max_epochs=1, limit_train_batches=3,
                               limit_val_batches=1, enable_checkpointing=True, callbacks=[checkpoint])
        trainer.fit(module, datamodule=digits())
        assert all(torch.equal(value, module.teacher.state_dict()[key]) for key, value in teacher.items())
        students[mode] = snapshot(module.student)  # rank zero's weights, handed back by ddp_spawn
        checkpoints[mode] = torch.load(tmp_path / mode / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(initial["compiled"][k], v) for k, v in initial["eager"].items())  # the same start
    assert any(not torch.equal(students["eager"][k], v) for k, v in initial["eager"].items())  # and it did train
    for key, value in students["eager"].items():
        torch.testing.assert_close(students["compiled"][key], value, rtol=1e-5, atol=1e-6)
    assert set(checkpoints["compiled"]) == set(checkpoints["eager"])
    assert not any("_orig_mod" in key for key in checkpoints["compiled"])


@pytest.mark.parametrize("method", ["InDistill", "DMAE"])
def test_methods_that_run_the_teacher_themselves_hand_back_the_runs_precision_under_a_bf16_teacher(method, monkeypatch):
    """InDistill and DMAE read the teacher without a tap: under teacher_precision='bf16' the teacher still
    computes in bf16, and every target they build comes back float32, as through a tap."""
    from lit_kd import InDistill, ModelSpec
    from lit_kd.contract import KDBatch
    from lit_kd.methods import dmae as dmae_module
    from tests.test_hetero_vit_methods import dmae

    torch.manual_seed(0)
    if method == "InDistill":
        module = InDistill(ModelSpec("cnn32_small", num_classes=10), ModelSpec("cnn32", num_classes=10),
                           check_teacher=False, teacher_precision="bf16")
    else:
        module = dmae(teacher_precision="bf16")
    module.setup("fit")
    image = torch.rand(4, 3, 32, 32)
    inner: list[torch.dtype] = []
    first = next(m for m in module.teacher.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    first.register_forward_hook(lambda _m, _args, output: inner.append(output.dtype))
    if method == "InDistill":
        logits, features, embedding = module.teacher_targets(image)
        targets = [logits, *features, embedding]
    else:  # the teacher features that reach the loss
        targets = []
        original = dmae_module.dmae_feature_loss
        monkeypatch.setattr(dmae_module, "dmae_feature_loss",
                            lambda student, teacher, distance: targets.append(teacher) or original(student, teacher,
                                                                                                   distance))
        module.training_losses(KDBatch(image=image, target=torch.randint(0, 10, (4,))))
    assert inner and inner[0] == torch.bfloat16  # the teacher itself computed in bf16 ...
    assert targets and all(t.dtype == torch.float32 for t in targets)  # ... and its targets come back float32


def test_compile_reaches_readers_held_inside_a_methods_helpers(fresh_dynamo):
    """InDistill reads its networks through LayerReader objects (not FeatureTaps in the module's own
    attributes): compile='both' compiles them with their networks, the counted graphs include theirs, and
    the compiled module's losses equal the eager module's."""
    from lit_kd import InDistill, ModelSpec
    from lit_kd.contract import KDBatch
    from lit_kd.taps import feature_readers

    torch.manual_seed(0)
    backend = CountingBackend()
    modules = {}
    for mode in ("eager", "both"):
        modules[mode] = InDistill(ModelSpec("cnn32_small", num_classes=10), ModelSpec("cnn32", num_classes=10),
                                  check_teacher=False, compile=None if mode == "eager" else mode)
    modules["both"].compile_options["backend"] = backend  # counts the graphs
    modules["both"].load_state_dict(modules["eager"].state_dict())
    for module in modules.values():
        module.setup("fit")
    readers = feature_readers(modules["both"])
    assert {id(r) for r in readers} == {id(modules["both"].student_reader), id(modules["both"].teacher_reader)}
    assert all(r.is_compiled for r in readers) and not any(r.is_compiled for r in feature_readers(modules["eager"]))
    batch = KDBatch(image=torch.rand(4, 3, 32, 32), target=torch.randint(0, 10, (4,)))
    graphs = backend.graphs
    losses = {mode: module.training_losses(batch)[0] for mode, module in modules.items()}
    assert backend.graphs > graphs  # the readers' forward_intermediates went through the compiler
    torch.testing.assert_close(losses["both"], losses["eager"], rtol=1e-5, atol=1e-6)
