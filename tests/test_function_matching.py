"""Function matching: mixup, the four views, two resolutions from one crop, the recipe's optimizer,
the fixed-teacher cache, logging and bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from torch import nn

from lit_kd import FunctionMatching, ModelSpec
from lit_kd.data import KDDataModule
from lit_kd.data.mixup import cutmix, mixup
from lit_kd.methods.function_matching import check_resolutions
from lit_kd.optim import DecoupledAdamW, WarmupCosine, decay_groups
from lit_kd.methods.function_matching import TeacherCache, TeacherCacheMismatch
from tests.helpers import digits, tiny_trainer

TEACHER, STUDENT = ModelSpec("resnet14", num_classes=10), ModelSpec("resnet8", num_classes=10)


def fm(**kwargs) -> FunctionMatching:
    kwargs.setdefault("teacher", TEACHER)
    kwargs.setdefault("student", STUDENT)
    return FunctionMatching(**kwargs)


class Recorder(nn.Module):
    """A tiny classifier that remembers every input it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.head(x.mean(dim=(2, 3)))


def record_inputs(network: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    network.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def training_batch(augmentation: str, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A digits training batch after KDDataModule's device augmentation."""
    dm = digits(augmentation=augmentation)
    dm.setup("fit")
    raw = dm.splits.train.__getitems__(list(range(n)))
    return dm.transform_batch(raw, train=True, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- mixup


def test_mixup_partner_is_rolled_batch_and_coefficient_at_least_half():
    x = torch.rand(5, 3, 4, 4)
    coefficients = []
    for seed in range(20):
        for alpha in (1.0, 0.2):
            mixed, a = mixup(x, alpha, torch.Generator().manual_seed(seed))
            assert 0.5 <= a <= 1.0
            torch.testing.assert_close(mixed, a * x + (1 - a) * torch.roll(x, 1, 0))
            torch.testing.assert_close(mixed[0], a * x[0] + (1 - a) * x[-1])  # image 0 pairs with the last
            coefficients.append(a)
    assert len(set(coefficients)) > 30  # really random, one draw per batch
    assert mixup(x, 1.0, torch.Generator().manual_seed(3))[1] == mixup(x, 1.0, torch.Generator().manual_seed(3))[1]


def test_cutmix_pastes_one_box_from_the_rolled_batch():
    x = torch.rand(4, 3, 20, 20)
    mixed, a = cutmix(x, 1.0, torch.Generator().manual_seed(1))
    from_partner = (mixed == torch.roll(x, 1, 0)).all(dim=1) & (mixed != x).any(dim=1)
    assert from_partner.any()
    assert torch.equal(from_partner[0], from_partner[1])  # same box in every image
    own = (mixed == x).all(dim=1).float().mean().item()
    assert a == pytest.approx(own, abs=1e-6) and 0.5 <= a <= 1.0


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_mixup_parameter_must_be_positive(alpha):
    with pytest.raises(ValueError, match="Beta"):
        mixup(torch.rand(2, 3, 4, 4), alpha)
    with pytest.raises(ValueError, match="Beta"):
        fm(mixup_alpha=alpha)


def test_bad_method_options_are_refused():
    with pytest.raises(ValueError, match="fixed_teacher"):
        fm(view="fixed_teacher", mixup_alpha=1.0)
    with pytest.raises(ValueError, match="cutmix"):
        fm(view="consistent", cutmix=True)
    with pytest.raises(ValueError, match="view"):
        fm(view="mixup")
    with pytest.raises(ValueError, match="teacher_cache_dir"):
        fm(view="consistent", teacher_cache_dir="somewhere")


# --------------------------------------------------------------------------- views


@pytest.mark.parametrize("view", ["function_matching", "consistent", "independent"])
def test_teacher_and_student_read_the_same_tensor_only_in_consistent_views(view):
    torch.manual_seed(0)
    module = fm(view=view, mixup_alpha=1.0 if view != "consistent" else None)
    module.train()
    student_in, teacher_in = record_inputs(module.student), record_inputs(module.teacher)
    batch = training_batch("independent" if view == "independent" else "consistent")
    _, losses = module.training_losses(batch)
    image, teacher_image = batch["image"], batch["teacher_image"]
    if view == "consistent":
        assert "mixup_a" not in losses
        expected_student = expected_teacher = image
    else:
        a = losses["mixup_a"].item()
        assert 0.5 <= a <= 1.0
        # Both views: the same coefficient and the same partner (the batch rolled by one).
        expected_student = a * image + (1 - a) * torch.roll(image, 1, 0)
        expected_teacher = a * teacher_image + (1 - a) * torch.roll(teacher_image, 1, 0)
    torch.testing.assert_close(student_in[0], module.student_input(expected_student))
    torch.testing.assert_close(teacher_in[0], module.teacher_input(expected_teacher))
    if view == "independent":
        assert not torch.allclose(student_in[0], teacher_in[0])
    else:
        assert torch.equal(student_in[0], teacher_in[0])


def test_consistent_view_refuses_a_different_teacher_tensor():
    module = fm(view="function_matching")
    batch = training_batch("independent")
    with pytest.raises(ValueError, match="same tensor"):
        module.training_losses(batch)
    with pytest.raises(ValueError, match="independent"):
        fm(view="independent").training_losses(training_batch("consistent"))


def coordinate_images(n: int, side: int = 64) -> torch.Tensor:
    """uint8 images whose channel 0 holds 4·x and channel 1 holds 4·y (channel 2 constant)."""
    ramp = torch.arange(side) * 4
    image = torch.stack([ramp.expand(side, side), ramp.view(-1, 1).expand(side, side),
                         torch.full((side, side), 128)]).to(torch.uint8)
    return image.expand(n, -1, -1, -1).contiguous()


def crop_geometry(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: centre (x, y) and width of the source region, in source pixels, and the x direction."""
    coords = pixels[:, :2].double() * 255.0 / 4.0
    centre = coords.mean(dim=(2, 3))
    n = pixels.shape[-1]
    x = coords[:, 0]
    width = (x.amax(dim=(1, 2)) - x.amin(dim=(1, 2))) / (1.0 - 1.0 / n)  # pixel centres span w·(1 - 1/n)
    direction = torch.sign(x[:, :, -1].mean(1) - x[:, :, 0].mean(1))
    return centre, width, direction


@pytest.mark.parametrize("view", ["consistent", "independent"])
def test_two_resolutions_come_from_one_crop(view):
    torch.manual_seed(0)
    student, teacher = Recorder(), Recorder()
    module = FunctionMatching(student, teacher, view=view, normalize_inputs=False, num_classes=10)
    module.student_input.size, module.teacher_input.size = 16, 24  # the student at 16 px, the teacher at 24 px
    dm = KDDataModule("digits", image_size=32, recipe="imagenet",
                      augmentation="independent" if view == "independent" else "consistent")
    raw = {"image": coordinate_images(8), "target": torch.zeros(8, dtype=torch.long)}
    batch = dm.transform_batch(raw, train=True, generator=torch.Generator().manual_seed(4))
    module.training_losses(batch)
    s_in, t_in = student.inputs[0], teacher.inputs[0]
    assert s_in.shape[-1] == 16 and t_in.shape[-1] == 24
    s_centre, s_width, s_dir = crop_geometry(s_in)
    t_centre, t_width, t_dir = crop_geometry(t_in)
    assert (s_width > 5).all() and s_width.std() > 1  # real random crops of different sizes
    if view == "consistent":
        torch.testing.assert_close(s_centre, t_centre, atol=0.5, rtol=0)
        torch.testing.assert_close(s_width, t_width, atol=1.0, rtol=0)
        assert torch.equal(s_dir, t_dir)  # the same flip
    else:  # the negative control: independent crops land elsewhere
        assert (s_centre - t_centre).abs().amax() > 2


def test_unreachable_resolutions_are_refused():
    check_resolutions(384, 224, None, allow_upscale=False)  # teacher at the crop's 384, student resized down
    check_resolutions(32, 224, 384, allow_upscale=True)
    with pytest.raises(ValueError, match="positive"):
        check_resolutions(32, 0, None)
    with pytest.raises(ValueError, match="positive"):
        check_resolutions(-4, None, None)
    with pytest.raises(ValueError, match="at least 384"):
        check_resolutions(224, 224, 384, allow_upscale=False)
    with pytest.raises(ValueError, match="positive"):
        fm(teacher=ModelSpec("resnet14", num_classes=10, input_size=0))
    module = fm(student=ModelSpec("resnet8", num_classes=10, input_size=32), allow_upscale=False)
    with pytest.raises(ValueError, match="student reads 32x32"):
        module.training_losses(training_batch("consistent"))  # digits crops are 16 px


def test_view_must_match_the_data_augmentation(tmp_path):
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(ValueError, match="augmentation: independent"):
        trainer.fit(fm(view="independent", mixup_alpha=None), datamodule=digits(augmentation="consistent"))


# --------------------------------------------------------------------------- loss


def test_loss_is_label_free_zero_for_a_copy_and_only_the_student_gets_gradients():
    torch.manual_seed(0)
    student = timm.create_model("resnet8", num_classes=10)
    module = FunctionMatching(student, copy.deepcopy(student), view="function_matching")
    module.eval()  # BatchNorm in eval mode in both copies: the same function
    batch = training_batch("consistent")
    _, losses = module.training_losses(batch)
    assert losses["loss"].item() == pytest.approx(0.0, abs=1e-6)

    module = fm()
    module.train()
    batch = training_batch("consistent")
    _, losses = module.training_losses(batch)
    module.mix_draws.draws -= 1  # replay the same mixup coefficient
    _, relabelled = module.training_losses(dataclasses.replace(batch, target=(batch.target + 1) % 10))
    assert losses["loss"].item() > 0 and relabelled["loss"].item() == pytest.approx(losses["loss"].item(), rel=1e-6)
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.student.parameters())


def test_mixup_draws_resume_from_a_checkpoint():
    torch.manual_seed(0)
    module = fm()
    first = [module.sample_mix().a for _ in range(3)]
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    later = [module.sample_mix().a for _ in range(3)]
    resumed = fm()
    resumed.on_load_checkpoint(checkpoint)
    assert [resumed.sample_mix().a for _ in range(3)] == later and later != first


def test_logs_mixup_coefficient_agreement_and_kl(tmp_path):
    torch.manual_seed(0)
    module = fm(optimizer=partial(DecoupledAdamW, lr=1e-3, weight_decay=1e-4),
                lr_scheduler=partial(WarmupCosine, warmup_steps=1), scheduler_interval="step")
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=digits())
    metrics = trainer.callback_metrics
    assert 0.5 <= metrics["train/mixup_a"].item() <= 1.0
    for split in ("val", "test"):
        assert 0.0 <= metrics[f"{split}/agreement"].item() <= 1.0 and metrics[f"{split}/kl"].item() >= 0.0
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 2  # filled in from the run's length
    names = [name for group in trainer.optimizers[0].param_groups for name in group["param_names"]]
    assert names and all(name.startswith("student.") for name in names)


# --------------------------------------------------------------------------- optimizer


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def shapes(group: dict) -> list[tuple[int, ...]]:
    return sorted(tuple((p[1] if isinstance(p, tuple) else p).shape) for p in group["params"])


def test_weight_decay_groups_kernels_only():
    net = small_net()
    for params in (net.parameters(), net.named_parameters()):
        decayed, plain = decay_groups(params, 0.5)
        assert shapes(decayed) == sorted([(4, 3, 3, 3), (2, 144)]) and decayed["weight_decay"] == 0.5
        assert shapes(plain) == sorted([(4,), (4,), (4,), (2,)]) and plain["weight_decay"] == 0.0
    decayed, _ = decay_groups([("pos_embed", torch.zeros(1, 4, 8)), ("fc.weight", torch.zeros(2, 2))], 0.1)
    assert [name for name, _ in decayed["params"]] == ["fc.weight"]  # with names, only *weight kernels

    module = fm(optimizer=partial(DecoupledAdamW, lr=0.03, weight_decay=3e-4))
    optimizer = module.configure_optimizers()
    kernels, others = optimizer.param_groups
    assert kernels["weight_decay"] == pytest.approx(0.01)  # big_vision's 3e-4 at lr 0.03
    assert all(name.endswith("weight") for name in kernels["param_names"])
    assert any(".bn" in name or "bias" in name for name in others["param_names"]) and others["weight_decay"] == 0


@pytest.mark.parametrize("lr", [1e-3, 1e-9])
def test_decay_is_scaled_by_the_schedule_not_the_learning_rate(lr):
    torch.manual_seed(0)
    net = small_net()
    optimizer = DecoupledAdamW(net.named_parameters(), lr=lr, weight_decay=0.1)
    schedule = WarmupCosine(optimizer, warmup_steps=0, total_steps=4)
    kernel, bias = net[0].weight, net[0].bias
    k0, b0 = kernel.detach().clone(), bias.detach().clone()
    expected = k0.clone()
    for step in range(3):
        for p in net.parameters():
            p.grad = torch.zeros_like(p)  # Adam's direction is 0: only the decay acts
        optimizer.step()
        expected *= 1 - schedule.factor(step) * 0.1
        schedule.step()
    torch.testing.assert_close(kernel.detach(), expected)
    assert torch.equal(bias.detach(), b0)
    assert schedule.factor(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def _adam_steps(optimizer: torch.optim.Optimizer, net: nn.Module, batches: list[torch.Tensor]) -> None:
    for x in batches:
        optimizer.zero_grad()
        net(x).pow(2).mean().backward()
        optimizer.step()


def test_bfloat16_first_moment_follows_optax():
    """mu is stored in bfloat16; each step's update uses the float32 moment before rounding."""
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    reference, rounded = copy.deepcopy(net), copy.deepcopy(net)
    batches = [torch.randn(8, 6) for _ in range(12)]
    fp32 = DecoupledAdamW(reference.named_parameters(), lr=1e-2, weight_decay=1e-3)
    bf16 = DecoupledAdamW(rounded.named_parameters(), lr=1e-2, weight_decay=1e-3, first_moment_dtype="bfloat16")
    _adam_steps(fp32, reference, batches[:1])
    _adam_steps(bf16, rounded, batches[:1])
    torch.testing.assert_close(rounded.weight, reference.weight, rtol=0, atol=1e-7)  # step 1 uses (1-b1)g exactly
    state = bf16.state[rounded.weight]
    assert state["exp_avg"].dtype == torch.bfloat16 and state["exp_avg_sq"].dtype == torch.float32
    # step 2 by hand: m2 = b1 * bf16(m1) + (1 - b1) g2, update with m2 in float32, store bf16(m2)
    m1 = state["exp_avg"].float()
    v1 = state["exp_avg_sq"].clone()
    before = rounded.weight.detach().clone()
    bf16.zero_grad()
    rounded(batches[1]).pow(2).mean().backward()
    g2 = rounded.weight.grad.clone()
    bf16.step()
    m2 = 0.9 * m1 + 0.1 * g2
    v2 = 0.999 * v1 + 0.001 * g2 * g2
    decay = 1e-3 / 1e-2
    expected = before * (1 - 1e-2 * decay) - 1e-2 / (1 - 0.9**2) * m2 / ((v2 / (1 - 0.999**2)).sqrt() + 1e-8)
    torch.testing.assert_close(rounded.weight.detach(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(state["exp_avg"], m2.to(torch.bfloat16), rtol=0, atol=0)
    _adam_steps(fp32, reference, batches[1:])
    _adam_steps(bf16, rounded, batches[2:])
    assert 0 < (rounded.weight - reference.weight).abs().max() < 5e-3  # close, not identical
    with pytest.raises(ValueError, match="first_moment_dtype"):
        DecoupledAdamW(net.parameters(), first_moment_dtype="float16")


def test_bfloat16_first_moment_survives_a_checkpoint():
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    batches = [torch.randn(8, 6) for _ in range(6)]
    whole = copy.deepcopy(net)
    optimizer = DecoupledAdamW(whole.named_parameters(), lr=1e-2, first_moment_dtype="bfloat16")
    _adam_steps(optimizer, whole, batches)
    first = copy.deepcopy(net)
    optimizer = DecoupledAdamW(first.named_parameters(), lr=1e-2, first_moment_dtype="bfloat16")
    _adam_steps(optimizer, first, batches[:3])
    saved_net, saved_optimizer = copy.deepcopy(first.state_dict()), copy.deepcopy(optimizer.state_dict())
    resumed = copy.deepcopy(net)
    resumed.load_state_dict(saved_net)
    optimizer = DecoupledAdamW(resumed.named_parameters(), lr=1e-2, first_moment_dtype="bfloat16")
    optimizer.load_state_dict(saved_optimizer)  # casts the moment to float32; the next step rounds it back
    _adam_steps(optimizer, resumed, batches[3:])
    assert torch.equal(resumed.weight, whole.weight) and torch.equal(resumed.bias, whole.bias)
    assert optimizer.state[resumed.weight]["exp_avg"].dtype == torch.bfloat16


def test_warmup_cosine_shape():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, warmup_steps=2, total_steps=6)
    factors = [schedule.factor(t) for t in range(8)]
    assert factors[:3] == [0.0, 0.5, 1.0] and factors[4] == pytest.approx(0.5) and factors[6:] == [0.0, 0.0]
    with pytest.raises(ValueError, match="lr must be > 0"):
        DecoupledAdamW(small_net().parameters(), lr=0.0, weight_decay=1e-4)


def test_shampoo_from_the_optional_extra():
    pytest.importorskip("pytorch_optimizer")
    from lit_kd.optim import Shampoo

    torch.manual_seed(0)
    net = small_net()
    optimizer = Shampoo(net.named_parameters(), lr=1e-3, weight_decay=1e-4, start_preconditioning_step=2,
                        preconditioning_compute_steps=2)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [pytest.approx(0.1), 0.0]
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,))
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------- fixed-teacher cache


def test_fixed_teacher_cache_equals_fresh_outputs_and_is_reused(tmp_path):
    torch.manual_seed(0)
    cache_dir = tmp_path / "cache"
    module = fm(view="fixed_teacher", teacher_cache_dir=str(cache_dir))
    calls: list[tuple[int, bool]] = []  # (epoch, a training batch?) of every teacher forward
    module.teacher.register_forward_pre_hook(lambda _m, args: calls.append(
        (module.trainer.current_epoch, module.trainer.training and args[0].shape[0] > 2)))  # not setup's probe
    dm = digits(augmentation="fixed_teacher", batch_size=256)
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=1, check_val_every_n_epoch=2)
    trainer.fit(module, datamodule=dm)
    per_epoch = [sum(1 for epoch, training in calls if training and epoch == e) for e in (0, 1)]
    assert per_epoch[0] == trainer.num_training_batches and per_epoch[1] == 0  # epoch 2 reads the cache only

    cache = module.teacher_cache
    assert len(cache) == len(dm.splits.train) and (cache_dir / "teacher_cache.json").is_file()
    index = dm.splits.train.indices[:50]
    with torch.no_grad():
        fresh = module.teacher(module.teacher_input(dm.eval_view(dm.splits.train.images[index])))
    torch.testing.assert_close(cache.lookup(index), fresh, atol=1e-5, rtol=1e-5)
    reloaded = TeacherCache(cache.identity, cache.num_samples, cache.num_classes, directory=cache_dir)
    assert len(reloaded) == len(cache) and torch.equal(reloaded.lookup(index), cache.lookup(index))

    other = fm(view="fixed_teacher", teacher_cache_dir=str(cache_dir))  # another (random) teacher
    with pytest.raises(TeacherCacheMismatch, match="weights_sha256"):
        tiny_trainer(tmp_path, limit_train_batches=1).fit(other, datamodule=digits(augmentation="fixed_teacher"))


def test_teacher_cache_is_merged_across_ddp_processes(tmp_path):
    """Each of two processes computes half of the entries; the saved cache holds all of them."""
    torch.manual_seed(0)
    cache_dir = tmp_path / "cache"
    module = fm(view="fixed_teacher", teacher_cache_dir=str(cache_dir))
    dm = digits(augmentation="fixed_teacher", batch_size=128)
    trainer = tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    dm.setup("fit")
    meta = json.loads((cache_dir / "teacher_cache.json").read_text())
    cache = TeacherCache(meta["identity"], meta["num_samples"], meta["num_classes"], directory=cache_dir)
    assert len(cache) == len(dm.splits.train)  # without the merge, rank 0 would hold about half
    index = dm.splits.train.indices
    with torch.no_grad():
        fresh = module.teacher(module.teacher_input(dm.eval_view(dm.splits.train.images[index])))
    torch.testing.assert_close(cache.lookup(index), fresh, atol=1e-5, rtol=1e-5)


def test_teacher_cache_synchronize_exchanges_in_chunks():
    """Two 'processes' (threads with a barrier-based all_gather) merge their entries, two per exchange."""
    import threading

    identity = {"teacher": {"weights_sha256": "abc"}}
    caches = [TeacherCache(identity, num_samples=10, num_classes=2) for _ in range(2)]
    caches[0].store(torch.tensor([0, 3, 5]), torch.tensor([[0.0, 1], [3, 1], [5, 1]]))
    caches[1].store(torch.tensor([7]), torch.tensor([[7.0, 2]]))
    barrier, slots, received = threading.Barrier(2), [None, None], [None, None]

    def all_gather(rank: int, tensor: torch.Tensor) -> torch.Tensor:
        slots[rank] = tensor
        barrier.wait()
        out = torch.stack(slots)
        barrier.wait()
        return out

    def run(rank: int) -> None:
        received[rank] = caches[rank].synchronize(lambda t: all_gather(rank, t), chunk_size=2)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert received == [1, 3]
    for cache in caches:
        assert cache.filled.nonzero().flatten().tolist() == [0, 3, 5, 7]
        assert cache.logits[7].tolist() == [7.0, 2.0] and cache.logits[3].tolist() == [3.0, 1.0]
        assert not cache.unshared.any() and cache.dirty


def test_teacher_cache_refuses_other_data_and_serves_only_complete_hits(tmp_path):
    identity = {"teacher": {"weights_sha256": "abc"}, "data": {"dataset": "digits", "num_samples": 10}}
    cache = TeacherCache(identity, num_samples=10, num_classes=3, directory=tmp_path)
    cache.store(torch.tensor([1, 2]), torch.ones(2, 3))
    assert cache.lookup(torch.tensor([1, 3])) is None and cache.lookup(torch.tensor([2])).sum() == 3
    with pytest.raises(IndexError):
        cache.lookup(torch.tensor([10]))
    cache.save()
    other_data = {**identity, "data": {"dataset": "cifar10", "num_samples": 10}}
    with pytest.raises(TeacherCacheMismatch, match="data.dataset"):
        TeacherCache(other_data, num_samples=10, num_classes=3, directory=tmp_path)
    with pytest.raises(TeacherCacheMismatch, match="num_samples"):
        TeacherCache(identity, num_samples=11, num_classes=3, directory=tmp_path)
    with pytest.raises(TeacherCacheMismatch, match="refusing to overwrite"):
        TeacherCache(other_data, num_samples=10, num_classes=3).save(tmp_path)


def test_fixed_teacher_batches_carry_sample_indices():
    dm = digits(augmentation="fixed_teacher")
    dm.setup("fit")
    train = dm.splits.train
    batch = dm.transform_batch(train.__getitems__([0, 5]), train=True, generator=torch.Generator())
    assert torch.equal(batch.index, train.indices[[0, 5]])
    assert torch.equal(batch.teacher_image, dm.eval_view(train.images[batch.index]))
    other = KDDataModule("digits", image_size=32, augmentation="fixed_teacher")
    other.setup("fit")
    mine, theirs = dm.fingerprint(), other.fingerprint()
    assert mine["labels_sha256"] == theirs["labels_sha256"] and mine["samples_sha256"] != theirs["samples_sha256"]


def test_validation_agreement_and_kl_on_clean_images(tmp_path):
    net = ModelSpec("resnet8", num_classes=10)
    same = FunctionMatching(net, net)
    same.student.load_state_dict(same.teacher.state_dict())
    trainer = tiny_trainer(tmp_path, limit_val_batches=2)
    trainer.validate(same, datamodule=digits())
    metrics = trainer.callback_metrics
    assert float(metrics["val/agreement"]) == 1.0 and float(metrics["test/agreement"]) == 1.0
    assert float(metrics["val/kl"]) == pytest.approx(0.0, abs=1e-5)
    different = FunctionMatching(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_val_batches=2)
    trainer.validate(different, datamodule=digits())
    assert float(trainer.callback_metrics["val/kl"]) > 1e-4
    assert 0.0 <= float(trainer.callback_metrics["val/agreement"]) < 1.0


def test_first_validation_of_a_fit_runs_the_teacher_once_per_batch(tmp_path):
    """The teacher check (val/teacher_acc) and agreement/KL share one teacher forward."""
    module = fm()
    calls = []
    module.teacher.register_forward_hook(lambda *_: calls.append(module.trainer.validating))
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=2)
    trainer.fit(module, datamodule=digits())
    assert "val/teacher_acc" in trainer.callback_metrics and "val/agreement" in trainer.callback_metrics
    assert calls.count(True) == 4  # 2 batches x (val, test) loaders, one forward each
    assert calls.count(False) == 2  # the shape probe at setup and the one training batch


class _Killed(RuntimeError):
    pass


class _KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *_args) -> None:
        if trainer.global_step == self.step:
            raise _Killed(f"killed at step {self.step}")


def test_mid_epoch_resume_equals_an_uninterrupted_run(tmp_path):
    """Killed in the middle of an epoch and resumed from that step's checkpoint: the same batches,
    augmentations and mixup draws follow, so the final student is identical."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, callbacks=(), ckpt_path=None):
        L.seed_everything(0)
        module = fm(optimizer=partial(DecoupledAdamW, lr=1e-3, weight_decay=1e-4))
        trainer = tiny_trainer(root, max_epochs=2, limit_val_batches=0, enable_checkpointing=True,
                               callbacks=list(callbacks))
        trainer.fit(module, datamodule=digits(batch_size=256), ckpt_path=ckpt_path)
        return module, trainer

    full, trainer = run(tmp_path / "full")
    assert trainer.num_training_batches == 6 and trainer.global_step == 12
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=8, save_top_k=-1)
    with pytest.raises(_Killed):
        run(tmp_path / "killed", callbacks=[saver, _KillAtStep(9)])
    (mid_epoch,) = (tmp_path / "ckpt").glob("*step=8*.ckpt")  # epoch 1, batch 2 of 6
    resumed, trainer = run(tmp_path / "resumed", ckpt_path=str(mid_epoch))
    assert trainer.global_step == 12
    for key, value in full.student.state_dict().items():
        assert torch.equal(value, resumed.student.state_dict()[key]), key


@pytest.mark.parametrize("view", ["function_matching", "independent"])
def test_views_picture_shows_exactly_the_pixels_the_networks_read(view, tmp_path):
    """The report captures the epoch's first batch as fed (after mixup) and draws it; the pixels it keeps
    are the ones the student and the teacher read, and the picture has one row per distinct view."""
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    student, teacher = Recorder(), Recorder()
    module = FunctionMatching(student, teacher, view=view, mixup_alpha=1.0, normalize_inputs=False, num_classes=10,
                              report_views=3, check_teacher=False)
    seen = []

    class Check(L.Callback):  # runs before the report (a method's own callbacks come last)
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if pl_module.fed_views is not None:
                seen.append(pl_module.fed_views)
                torch.testing.assert_close(pl_module.fed_views.student, student.inputs[-1][:3], rtol=0, atol=0)
                torch.testing.assert_close(pl_module.fed_views.teacher, teacher.inputs[-1][:3], rtol=0, atol=0)

    logger = CSVLogger(tmp_path, name="logs")
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=logger,
                           callbacks=[Check()])
    trainer.fit(module, datamodule=digits(augmentation="consistent" if view != "independent" else view))
    assert [(v.epoch, v.step) for v in seen] == [(0, 0), (1, 2)]  # the first batch of each epoch only
    assert all(0.0 <= v.mixup_a <= 1.0 and v.student.shape[0] == 3 for v in seen)
    assert seen[0].shared == (view == "function_matching")  # one shared tensor, or two views
    picture = Path(logger.log_dir) / "function_matching_views.png"
    assert picture.is_file() and picture.stat().st_size > 2000
    assert module.fed_views is None  # handed to the report and dropped
    with pytest.raises(ValueError, match="report_views"):
        fm(report_views=-1)
