"""DistPro: HCL, pathways and transforms, the meta-gradient, the process artefact, replay, resume, bad input."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lit_kd import DistillationProcess, DistPro, ModelSpec
from lit_kd.data import KDDataModule
from lit_kd.data.splits import in_memory_splits
from lit_kd.losses import hcl_loss
from lit_kd.methods.distpro import ProcessMismatchError, build_transform, enumerate_pathways, pathway_weights
from tests.helpers import digits, snapshot, tiny_trainer


class TinyNet(nn.Module):
    """Two tappable stages (``stem`` at full size, ``stage1`` at half size) and a linear head."""

    def __init__(self, width: int, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width))
        self.stage1 = nn.Sequential(nn.ReLU(), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(2 * width))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage1(self.stem(x)))


def tiny_distpro(**kwargs) -> DistPro:
    kwargs = {"teacher_layers": ["stem", "stage1"], "student_layers": ["stem", "stage1"], "transform": "two_conv",
              "check_teacher": False, "num_classes": 3, "probe_size": 8, **kwargs}
    return DistPro(student=TinyNet(4), teacher=TinyNet(6), **kwargs)


def zoo_distpro(**kwargs) -> DistPro:
    return DistPro(student=ModelSpec("resnet8", num_classes=10), teacher=ModelSpec("resnet14", num_classes=10),
                   check_teacher=False, **kwargs)


# ---------------------------------------------------------------------------------------- HCL
def test_hcl_equals_hand_computed_values():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # 2×2 map: levels 4 and 2 are skipped (>= H), level 1 gets weight ½:
    # MSE = (1 + 4 + 9 + 16) / 4 = 7.5; pooled mean 2.5 -> 6.25; (7.5 + ½·6.25) / 1.5
    assert hcl_loss(student, torch.zeros_like(student)).item() == pytest.approx((7.5 + 0.5 * 6.25) / 1.5)
    # 8×8 map, left half +1, right half -1: full, 4×4 and 2×2 MSEs are 1, the 1×1 mean is 0:
    # (1 + ½ + ¼ + ⅛·0) / (1 + ½ + ¼ + ⅛)
    halves = torch.cat([torch.ones(1, 2, 8, 4), -torch.ones(1, 2, 8, 4)], dim=-1)
    assert hcl_loss(halves, torch.zeros_like(halves)).item() == pytest.approx(1.75 / 1.875)
    with pytest.raises(ValueError, match="equal shapes"):
        hcl_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------------- pathways, transforms
def test_four_taps_give_ten_pathways_and_transforms_reach_teacher_shapes():
    assert enumerate_pathways(4, 4) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 3)]
    module = zoo_distpro()
    assert len(module.pathways) == 10 and len(module.transforms) == 10 and module.alpha.shape == (10,)
    assert module.student_tap.preact and module.teacher_tap.preact  # the zoo offers pre-activation features
    teacher_features = [torch.zeros(2, *shape) for shape in module.teacher_shapes]
    for kind in ("conv1x1", "two_conv", "three_conv", "complex"):
        for i, j in module.pathways:
            transform = build_transform(kind, module.student_shapes[j][0], module.teacher_shapes[i][0])
            out = transform(torch.randn(2, *module.student_shapes[j]), tuple(module.teacher_shapes[i][1:]))
            assert out.shape == teacher_features[i].shape, (kind, i, j)


def test_pathway_weight_normalizations():
    alpha = torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(pathway_weights(alpha, "softmax"), torch.softmax(alpha, 0))
    assert torch.allclose(pathway_weights(alpha, "sigmoid"), torch.sigmoid(alpha))
    extra = torch.exp(alpha) / (torch.exp(alpha).sum() + torch.e)  # constant extra logit 1
    assert torch.allclose(pathway_weights(alpha, "softmax_extra", kd_weight=2.0), extra * 3 * 2.0)


# --------------------------------------------------------------------------------- meta-gradient
def _meta_setup():
    torch.manual_seed(0)
    module = tiny_distpro().double().train()
    module.alpha.data = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    optimizer = torch.optim.SGD(list(module.trainable_parameters()), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for p in module.trainable_parameters():  # one step so that momentum buffers exist
        p.grad = 0.1 * torch.randn_like(p)
    optimizer.step()
    optimizer.zero_grad()
    image, meta_image = torch.rand(8, 3, 8, 8, dtype=torch.float64), torch.rand(8, 3, 8, 8, dtype=torch.float64)
    target, meta_target = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    with torch.no_grad():
        _, teacher_features = module.teacher_tap(module.teacher_input(image))
    return module, optimizer, module.student_input(image), teacher_features, module.student_input(meta_image), target, meta_target


def test_meta_gradient_matches_finite_difference_of_unrolled_objective():
    module, optimizer, image, teacher_features, meta_image, target, meta_target = _meta_setup()
    net = module.student_pathways()
    params = dict(net.named_parameters())

    def unrolled_objective(alpha: torch.Tensor) -> float:
        """CE on the meta batch after one real SGD step (momentum, weight decay) on L_train(w, α)."""
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        logits, losses = functional_call(net, (params, buffers), (image, teacher_features))
        loss = F.cross_entropy(logits, target) + (pathway_weights(alpha, "softmax") * losses).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        unrolled = {}
        for (name, p), g in zip(params.items(), grads):
            buf = optimizer.state[p]["momentum_buffer"]
            g = torch.zeros_like(p) if g is None else g
            unrolled[name[len("student."):]] = p - 0.1 * (0.9 * buf + g + 5e-4 * p)
        student = {n: t for n, t in unrolled.items() if n in dict(net.student.named_parameters())}
        meta_logits = functional_call(net.student, (student, {n: b.clone() for n, b in net.student.named_buffers()}),
                                      (meta_image,))
        return F.cross_entropy(meta_logits, meta_target).item()

    alpha = module.alpha.detach().clone()
    delta = 1e-6
    numeric = torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[k] = delta
        numeric[k] = (unrolled_objective(alpha + step) - unrolled_objective(alpha - step)) / (2 * delta)

    logits, losses = net(image, teacher_features)
    train_loss = F.cross_entropy(logits, target) + (module.pathway_weights() * losses).sum()
    assert numeric.abs().max() > 1e-5  # a real, non-zero signal
    # The official ε = 0.01/‖g‖: the central difference of the Hessian-vector product is close ...
    meta = module.alpha_meta_gradient(net, train_loss, image, teacher_features, meta_image, meta_target, optimizer)
    assert torch.allclose(meta, numeric, rtol=2e-2), (meta.tolist(), numeric.tolist())
    # ... and with a smaller ε it converges to the exact meta-gradient (float64)
    module.fd_epsilon = 1e-4
    meta = module.alpha_meta_gradient(net, train_loss, image, teacher_features, meta_image, meta_target, optimizer)
    assert torch.allclose(meta, numeric, rtol=1e-4), (meta.tolist(), numeric.tolist())


def test_functional_unroll_leaves_parameters_buffers_and_optimizer_untouched():
    module, optimizer, image, teacher_features, meta_image, target, meta_target = _meta_setup()
    net = module.student_pathways()
    logits, losses = net(image, teacher_features)
    train_loss = F.cross_entropy(logits, target) + (module.pathway_weights() * losses).sum()
    before = snapshot(module)
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    meta = module.alpha_meta_gradient(net, train_loss, image, teacher_features, meta_image, meta_target, optimizer)
    assert meta.abs().sum() > 0
    after = snapshot(module)
    for key in before:  # weights, BN running statistics, num_batches_tracked, alpha
        assert torch.equal(before[key], after[key]), key
    state_after = optimizer.state_dict()
    for index, state in optimizer_before["state"].items():
        assert torch.equal(state["momentum_buffer"], state_after["state"][index]["momentum_buffer"])
    assert optimizer_before["param_groups"] == state_after["param_groups"]
    assert all(p.grad is None for p in module.trainable_parameters())
    # ...and the retained graph still gives the student update its gradient
    train_loss.backward()
    assert all(p.grad is not None for p in module.student.parameters())


# --------------------------------------------------------------------------------- the process
def _ramp_process(steps: int = 5, budget: int = 5) -> DistillationProcess:
    ramp = torch.linspace(0.0, 4.0, steps)
    return DistillationProcess(pathways=[(0, 0), (0, 1), (1, 1)], alpha=torch.stack([ramp, -ramp, ramp * 0], 1),
                               step_budget=budget, num_taps=(2, 2))


def test_replay_resampling_to_other_step_budgets():
    process = _ramp_process()
    longer = process.resample(9)
    assert longer.shape == (9, 3)
    assert torch.allclose(longer[:, 0], torch.linspace(0.0, 4.0, 9))  # a linear ramp stays a linear ramp
    assert torch.allclose(longer[:, 1], -torch.linspace(0.0, 4.0, 9))
    assert torch.allclose(process.resample(3)[:, 0], torch.tensor([0.0, 2.0, 4.0]))
    assert torch.allclose(process.resample(1)[:, 0], torch.tensor([0.0]))
    # a search that stopped at step 5 of 9 planned: the second half holds the last alpha
    stopped = _ramp_process(steps=5, budget=9).resample(9)
    assert torch.allclose(stopped[:5, 0], torch.linspace(0.0, 4.0, 5)) and torch.all(stopped[4:, 0] == 4.0)


def test_process_save_load_round_trip(tmp_path):
    process = _ramp_process()
    path = process.save(tmp_path / "p.pt")
    loaded = DistillationProcess.load(path)
    assert loaded.pathways == process.pathways and loaded.num_taps == process.num_taps
    assert torch.equal(loaded.alpha, process.alpha) and loaded.step_budget == 5
    assert loaded.pathway_names == process.pathway_names and loaded.normalization == "softmax"
    assert torch.allclose(loaded.weights(), torch.softmax(process.alpha, -1))


# ------------------------------------------------------------------------------ runs and resume
def _fit_online(root, epochs, ckpt_path=None, **kwargs):
    L.seed_everything(0)
    module = zoo_distpro(transform="conv1x1", **kwargs)  # the lightest transform keeps the test fast
    trainer = tiny_trainer(root, max_epochs=epochs, limit_train_batches=3, limit_val_batches=1,
                           enable_checkpointing=True)
    trainer.fit(module, datamodule=digits(meta_split=0.2), ckpt_path=ckpt_path)
    return module, trainer


def test_online_search_writes_process_and_replay_uses_it(tmp_path):
    searched, trainer = _fit_online(tmp_path / "search", 1, save_process=str(tmp_path / "process.pt"))
    process = DistillationProcess.load(tmp_path / "process.pt")
    assert process.steps == 3 and process.step_budget == 3 and len(process.pathways) == 10
    assert torch.allclose(process.alpha[-1], searched.alpha.detach().float())
    assert not torch.equal(process.alpha[0], process.alpha[-1])  # alpha moved
    assert (tmp_path / "search" / "distpro_process.png").is_file()
    assert (tmp_path / "search" / "distpro_alpha_heatmap.png").stat().st_size > 1000  # α per pathway over steps
    assert trainer.global_step == 3  # the alpha optimizer does not count as a training step
    ckpt = tmp_path / "search.ckpt"
    trainer.save_checkpoint(ckpt)
    assert DistillationProcess.load(ckpt).steps == 3  # the process lives in the checkpoint too

    L.seed_everything(0)
    replay = zoo_distpro(mode="replay", process=str(ckpt), transform="conv1x1")
    replay_trainer = tiny_trainer(tmp_path / "replay", max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    teacher_before = snapshot(replay.teacher)
    replay_trainer.fit(replay, datamodule=digits())  # no meta split needed
    assert torch.allclose(replay.process().alpha, process.resample(6))  # 3 searched steps stretched to 6
    assert replay.alpha.requires_grad is False and len(replay_trainer.optimizers) == 1
    assert all(torch.equal(v, snapshot(replay.teacher)[k]) for k, v in teacher_before.items())


def test_resume_of_an_online_run_equals_uninterrupted(tmp_path):
    full, _ = _fit_online(tmp_path / "full", 2)
    _, trainer = _fit_online(tmp_path / "half", 1)
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["distpro_process"]["alpha"].shape == (3, 10) and "alpha" in state["state_dict"]
    resumed, _ = _fit_online(tmp_path / "resumed", 2, ckpt_path=str(ckpt))
    assert len(resumed.alpha_trajectory) == 6
    assert torch.allclose(torch.stack(full.alpha_trajectory), torch.stack(resumed.alpha_trajectory), atol=1e-6)
    for key, value in snapshot(full).items():
        if not key.startswith("teacher."):
            assert torch.allclose(value.float(), snapshot(resumed)[key].float(), atol=1e-5), key


def test_meta_split_batches_are_disjoint_from_training_batches():
    data = digits(meta_split=0.2, return_index=True)
    data.setup("fit")
    loaders = data.train_dataloader()
    assert set(loaders) == {"train", "meta_val"}
    train_index, meta_index = set(data.splits.train.indices.tolist()), set(data.splits.meta.indices.tolist())
    assert not train_index & meta_index and len(meta_index) == round(0.2 * (len(train_index) + len(meta_index)))
    plain = digits()
    plain.setup("fit")
    assert not isinstance(plain.train_dataloader(), dict)  # other methods see unchanged loaders


# ------------------------------------------------------------------------------------ bad input
def test_process_with_other_pathways_is_refused(tmp_path):
    path = _ramp_process().save(tmp_path / "two_taps.pt")  # 2 + 2 taps, 3 pathways
    with pytest.raises(ProcessMismatchError, match="3 pathways over 2 teacher and 2 student taps.*10 pathways"):
        zoo_distpro(mode="replay", process=str(path))
    with pytest.raises(ValueError, match="needs process="):
        zoo_distpro(mode="replay")
    with pytest.raises(FileNotFoundError, match="Run a search first"):
        zoo_distpro(mode="replay", process=str(tmp_path / "missing.pt"))


def test_empty_pathway_set_is_refused():
    with pytest.raises(ValueError, match="pathway set is empty"):
        zoo_distpro(pathways=[])
    with pytest.raises(ValueError, match="names a tap that does not exist"):
        zoo_distpro(pathways=[(0, 7)])


def test_split_without_meta_validation_data_is_refused(tmp_path):
    images, targets = torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="leaves no meta-validation data"):  # one training sample left
        in_memory_splits(images, targets, images, targets, val_split=0.5, meta_split=0.2, seed=0, return_index=False)
    with pytest.raises(ValueError, match=r"meta_split must be in \[0, 1\)"):
        KDDataModule(meta_split=1.0)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(ValueError, match="meta-validation split.*Set data.meta_split=0.2"):
        trainer.fit(zoo_distpro(), datamodule=digits())
