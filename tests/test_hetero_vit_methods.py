"""CRD, OFA, DeiT, ViTKD and DMAE as methods: their training losses are the golden/pure losses,
gradients reach the student and the method's own parts only, the teacher never changes, the
per-batch randomness and CRD's memory bank survive a resume, and bad input gets a clear error.
(CRD's bank under DDP: tests/test_crd_ddp.py.)"""

from __future__ import annotations

import math

import lightning as L
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from lit_kd import ModelSpec
from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import (deit_distillation_loss, deit_inference_logits, dmae_feature_loss,
                           mae_reconstruction_loss, ofa_loss, vitkd_loss)
from lit_kd.methods import CRD, DMAE, OFA, DeiT, ViTKD
from lit_kd.methods.crd import MEMORY_BUFFERS, ContrastMemory
from lit_kd.methods.dmae import encode_visible, random_visible_indices, sincos_position_embedding
from lit_kd.methods.vitkd import random_token_mask
from tests.golden import load_golden
from tests.helpers import digits, snapshot, tiny_trainer


def vit(name: str = "vit_tiny_patch16_224", depth: int = 2, dim: int = 64, classes: int = 10) -> ModelSpec:
    """A tiny timm ViT at 32 px: 8x8 patches (a 4x4 grid), ``depth`` blocks of width ``dim``."""
    return ModelSpec(name, num_classes=classes, input_size=32,
                     model_kwargs=dict(img_size=32, patch_size=8, depth=depth, embed_dim=dim, num_heads=2))


CNN, BIG_CNN = ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10)


def batch_of(size: int = 4, side: int = 16, index: bool = False) -> KDBatch:
    generator = torch.Generator().manual_seed(size)
    return KDBatch(image=torch.rand(size, 3, side, side, generator=generator),
                   target=torch.randint(0, 10, (size,), generator=generator),
                   index=torch.arange(size) * 3 if index else None)


class Embedder(nn.Module):
    """A network whose classifier reads a ``width``-wide embedding (for CRD's golden inputs)."""

    def __init__(self, width: int, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, width))
        self.fc = nn.Linear(width, classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(images))


def assert_close64(actual: torch.Tensor, expected: torch.Tensor) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.detach().double().reshape(expected.shape), expected, rtol=1e-10,
                               atol=1e-10 * float(expected.abs().max()) + 1e-15)


# =============================================================================== data: sample indices

def test_kd_datamodule_declares_its_training_samples(tmp_path):
    dm = digits(return_index=True)
    dm.setup("fit")
    index, target = dm.data_info().training_samples()
    train = dm.splits.train
    assert torch.equal(index, train.indices) and torch.equal(target, train.targets[train.indices])
    batch = dm.transform_batch(train.__getitems__([0, 5, 9]), train=False)
    assert torch.equal(batch.index, index[[0, 5, 9]]) and torch.equal(batch.target, target[[0, 5, 9]])
    assert digits().data_info().training_samples is None  # no index in the batches, nothing declared

    from tests.test_cli import write_fake_folder

    folder = digits(dataset="folder", data_dir=str(write_fake_folder(tmp_path / "folder")), in_memory=False,
                    num_workers=0, image_size=16, return_index=True, batch_size=4)
    folder.setup("fit")
    index, target = folder.data_info().training_samples()
    assert folder.streamed and torch.equal(index, torch.arange(len(folder.splits.train)))
    item = folder.splits.train[7]
    assert item["index"] == 7 and item["target"] == target[7]


# =============================================================================== CRD

def crd(**kwargs) -> CRD:
    kwargs.setdefault("student", CNN)
    kwargs.setdefault("teacher", BIG_CNN)
    kwargs.setdefault("num_negatives", 16)
    kwargs.setdefault("check_teacher", False)
    return CRD(**kwargs)


@pytest.mark.parametrize("case", load_golden("crd")["cases"], ids=lambda c: c["name"])
def test_crd_term_reproduces_repdistillers_two_steps(case):
    """The module's CRD term, fed the fixture's features, memory and contrast indices, gives the
    official losses, gradients and memory updates (and estimates Z on the first step only)."""
    params, inputs, outputs, grads = case["params"], case["inputs"], case["outputs"], case["grads"]
    module = CRD(Embedder(inputs["embed_s.linear.weight"].shape[1]), Embedder(inputs["embed_t.linear.weight"].shape[1]),
                 embed_dim=params["feat_dim"], num_negatives=params["nce_k"], nce_temperature=params["nce_t"],
                 nce_momentum=params["nce_m"], num_samples=params["num_data"], check_teacher=False).double()
    module.memory = ContrastMemory(params["feat_dim"], params["num_data"], params["nce_t"], params["nce_m"]).double()
    for side, head in (("s", module.embed_student), ("t", module.embed_teacher)):
        head.linear.weight.data.copy_(inputs[f"embed_{side}.linear.weight"])
        head.linear.bias.data.copy_(inputs[f"embed_{side}.linear.bias"])
    module.memory.student_memory.copy_(inputs["memory_v1"])
    module.memory.teacher_memory.copy_(inputs["memory_v2"])
    for step in (1, 2):
        contrast = inputs[f"step{step}_contrast_index"]
        module.draw_contrast_rows = lambda rows, negatives=contrast[:, 1:]: negatives  # the fixture's draw
        module.zero_grad()
        student = inputs[f"step{step}_student"].clone().requires_grad_(True)
        batch = KDBatch(image=torch.zeros(len(student), 3, 4, 4), index=inputs[f"step{step}_index"])
        weight, loss = module.feature_terms([student], [inputs[f"step{step}_teacher"]], batch, None, None)["crd"]
        assert weight == 0.8
        loss.backward()
        assert_close64(loss, outputs[f"step{step}_loss"])
        assert_close64(student.grad, grads[f"step{step}_student"])
        for side, head in (("s", module.embed_student), ("t", module.embed_teacher)):
            for name in ("weight", "bias"):
                assert_close64(getattr(head.linear, name).grad, grads[f"step{step}_embed_{side}.linear.{name}"])
        assert_close64(module.memory.student_memory, outputs[f"step{step}_memory_v1"])
        assert_close64(module.memory.teacher_memory, outputs[f"step{step}_memory_v2"])
    assert_close64(module.memory.student_normalization, outputs["normalization_student"])


def test_crd_bank_holds_the_training_samples_and_draws_negatives_among_them(tmp_path):
    torch.manual_seed(0)
    module = crd(negatives="other_classes", num_negatives=40)
    dm = digits(return_index=True)
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    index, target = dm.training_samples()
    assert module.memory.num_data == len(index) == 1294  # one row per training sample, none for held-out ones
    assert set(MEMORY_BUFFERS) <= set(module._ddp_params_and_buffers_to_ignore)
    rows = module.memory_rows(index[[0, 10, -1]].to(module.device))
    assert rows.tolist() == [0, 10, len(index) - 1]
    held_out = dm.splits.val.indices[:2]
    with pytest.raises(DataContractError, match="not among the 1294 training samples"):
        module.memory_rows(held_out)
    anchors = torch.arange(0, 1294, 97)
    negatives = module.draw_contrast_rows(anchors)
    assert negatives.shape == (len(anchors), 40)
    assert (target[negatives] != target[anchors].unsqueeze(1)).all()  # other classes only
    assert all(len(set(row.tolist())) == 40 for row in negatives)  # without replacement
    module.negatives = "uniform"
    assert int(module.draw_contrast_rows(anchors).max()) < 1294


def test_crd_training_loss_gradients_and_frozen_teacher(tmp_path):
    L.seed_everything(0)
    module = crd(kd_weight=0.5)
    teacher_before = snapshot(module.teacher)
    dm = digits(return_index=True)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert all(torch.equal(teacher_before[k], v) for k, v in snapshot(module.teacher).items())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in [*module.student.parameters(), *module.embed_student.parameters(),
                                         *module.embed_teacher.parameters()]}
    # One more step by hand: CE + T²KL + 0.8·(NCE of both sides), and who gets gradients.
    module.train()
    batch = next(iter(dm.train_dataloader()))
    batch = dm.transform_batch(batch, train=False)
    draws = module.negative_draws.draws
    logits, losses = module.training_losses(batch)
    expected = (F.cross_entropy(logits, batch.target) + 0.5 * losses["kd"] + 0.8 * losses["crd"])
    torch.testing.assert_close(losses["loss"], expected)
    assert module.negative_draws.draws == draws + 1
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    for part in (module.student, module.embed_student, module.embed_teacher):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


class _Killed(RuntimeError):
    pass


class _KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *_args) -> None:
        if trainer.global_step == self.step:
            raise _Killed(f"killed at step {self.step}")


def test_crd_resumed_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    """The bank, Z and the negatives' counter are in the checkpoint: killed mid-epoch and resumed, the
    run ends with the very bank, embeddings and student of an uninterrupted one."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, callbacks=(), ckpt_path=None):
        L.seed_everything(0)
        module = crd(negatives="other_classes")
        trainer = tiny_trainer(root, max_epochs=2, limit_train_batches=3, limit_val_batches=0,
                               enable_checkpointing=True, callbacks=list(callbacks))
        trainer.fit(module, datamodule=digits(batch_size=128, return_index=True), ckpt_path=ckpt_path)
        return module, trainer

    full, trainer = run(tmp_path / "full")
    assert trainer.num_training_batches == 3 and trainer.global_step == 6
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    with pytest.raises(_Killed):
        run(tmp_path / "killed", callbacks=[saver, _KillAtStep(5)])
    (mid_epoch,) = (tmp_path / "ckpt").glob("*step=4*.ckpt")  # epoch 1, after its first batch
    resumed, trainer = run(tmp_path / "resumed", ckpt_path=str(mid_epoch))
    assert trainer.global_step == 6 and resumed.negative_draws.draws == full.negative_draws.draws == 6
    for name in ("memory", "embed_student", "embed_teacher", "student"):
        expected = getattr(full, name).state_dict()
        for key, value in getattr(resumed, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key}"
    # Loaded outside a fit, the module gets the checkpoint's bank.
    loaded = CRD.load_from_checkpoint(mid_epoch, weights_only=True)
    state = torch.load(mid_epoch, weights_only=True)
    assert torch.equal(loaded.memory.teacher_memory, state["state_dict"]["memory.teacher_memory"])
    assert loaded.negative_draws.draws == 4


class _PlainData(L.LightningDataModule):
    """(image, target) or (image, target, index) tuples, and no lit_kd declarations."""

    def __init__(self, with_index: bool) -> None:
        super().__init__()
        self.with_index = with_index

    def train_dataloader(self):
        images, targets = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
        tensors = (images, targets, torch.arange(8)) if self.with_index else (images, targets)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=4)


def test_crd_bad_input_names_the_fix(tmp_path):
    with pytest.raises(DataContractError, match="return_index: true"):
        tiny_trainer(tmp_path, max_steps=1).fit(crd(), datamodule=digits())
    with pytest.raises(DataContractError, match="num_samples"):
        tiny_trainer(tmp_path, max_steps=1).fit(crd(), datamodule=_PlainData(with_index=True))
    with pytest.raises(DataContractError, match="negatives: uniform"):
        tiny_trainer(tmp_path, max_steps=1).fit(crd(num_samples=8, negatives="other_classes"),
                                                datamodule=_PlainData(with_index=True))
    with pytest.raises(DataContractError, match=r"yield \(image, target, index\)"):
        tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(crd(num_samples=8),
                                                                     datamodule=_PlainData(with_index=False))
    module = crd(num_samples=7)  # the data has 8 samples: its indices do not fit
    with pytest.raises(DataContractError, match="not among the 7 training samples"):
        tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(module, datamodule=_PlainData(with_index=True))
    with pytest.raises(ValueError, match="num_samples=5.*1294 training samples"):
        tiny_trainer(tmp_path, max_steps=1).fit(crd(num_samples=5), datamodule=digits(return_index=True))
    with pytest.raises(ValueError, match="negatives must be"):
        crd(negatives="random")
    with pytest.raises(RuntimeError, match="built when a fit starts"):
        crd().training_losses(batch_of(index=True))


# =============================================================================== OFA

def test_ofa_loss_is_the_official_sum_over_logits_and_every_branch():
    torch.manual_seed(0)
    module = OFA(vit(depth=6), CNN, epsilon=[1.0, 1.2, 1.4, 1.6, 1.5], check_teacher=False, label_smoothing=0.1)
    module.train()
    branches = module.branches
    assert branches.stages == [1, 2, 3, 4] and branches.layers == [0, 1, 4, 5]  # 1/6, 1/3, 5/6, 1 of the depth
    assert branches.tap_layers == ["blocks.0", "blocks.1", "blocks.4", "blocks.5"]  # whole token sequences
    assert all(b.num_prefix_tokens == 1 for b in branches.branches)  # each branch reads the class token
    assert [len(b.blocks) for b in branches.branches] == [3, 2, 1, 1]  # max(4 - stage, 1) blocks
    batch = batch_of()
    logits, losses = module.training_losses(batch)
    with torch.no_grad():
        teacher_logits = module.teacher(module.teacher_input(batch.image))
    student = module.student
    tokens = student.forward_intermediates(module.student_input(batch.image), indices=[0, 1, 4, 5],
                                           output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
    features = [torch.cat([prefix, patches], dim=1) for patches, prefix in tokens]  # class token first
    branch_logits = [branch(feature) for branch, feature in zip(branches.branches, features)]
    ofa = sum(ofa_loss(b, teacher_logits, batch.target, e) for b, e in zip(branch_logits, [1.0, 1.2, 1.4, 1.6]))
    kd = ofa_loss(logits, teacher_logits, batch.target, 1.5)
    ce = F.cross_entropy(logits, batch.target, label_smoothing=0.1)
    torch.testing.assert_close(losses["ofa"], ofa.detach())
    torch.testing.assert_close(losses["loss"], (ce + kd + ofa).detach())
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.branches.parameters())
    assert {id(p) for p in module.trainable_parameters()} == {
        id(p) for p in [*module.student.parameters(), *module.branches.parameters()]}


@pytest.mark.parametrize("student, teacher", [(CNN, vit()), (ModelSpec("resnet18", num_classes=10), vit()),
                                              (vit(depth=3), vit(depth=2, dim=32))],
                         ids=["cifar_cnn_from_vit", "timm_cnn_from_vit", "vit_from_vit"])
def test_ofa_builds_branches_for_any_pair(student, teacher):
    module = OFA(student, teacher, check_teacher=False)
    expected = 3 if student.name == "resnet8" else 4
    assert len(module.branches.branches) == expected
    _, losses = module.training_losses(batch_of(side=32))
    assert torch.isfinite(losses["loss"]) and losses["ofa"] > 0


def test_ofa_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="has none. Use a timm model"):
        OFA(Embedder(8, classes=10), CNN, check_teacher=False)
    with pytest.raises(ValueError, match=r"one per stage \(3: \[1, 2, 3\]\) plus one"):
        OFA(CNN, BIG_CNN, epsilon=[1.0, 1.5], check_teacher=False)
    module = OFA(CNN, BIG_CNN, ce_weight=0.0, check_teacher=False)
    with pytest.raises(DataContractError, match="needs labels"):
        module.training_losses(KDBatch(image=torch.rand(2, 3, 16, 16)))


def test_ofa_branches_are_checkpointed_and_reloaded(tmp_path):
    L.seed_everything(0)
    module = OFA(CNN, BIG_CNN, epsilon=1.5, check_teacher=False)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=digits())
    trainer.save_checkpoint(tmp_path / "ofa.ckpt")
    loaded = OFA.load_from_checkpoint(tmp_path / "ofa.ckpt", weights_only=True)
    assert loaded.epsilons == [1.5] * 4
    for key, value in module.branches.state_dict().items():
        assert torch.equal(value, loaded.branches.state_dict()[key]), key


# =============================================================================== DeiT

@pytest.mark.parametrize("mode, reduction", [("hard", "batchmean"), ("soft", "batchmean"), ("soft", "numel")])
def test_deit_training_loss_is_the_official_loss_on_both_heads(mode, reduction):
    torch.manual_seed(0)
    module = DeiT(vit("deit_tiny_distilled_patch16_224"), CNN, mode=mode, alpha=0.3, temperature=2.0,
                  soft_reduction=reduction, label_smoothing=0.1, check_teacher=False)
    module.train()
    batch = batch_of()
    logits, losses = module.training_losses(batch)
    student = module.student
    tokens = student.forward_features(module.student_input(batch.image))
    class_logits, distill_logits = student.head(tokens[:, 0]), student.head_dist(tokens[:, 1])
    with torch.no_grad():
        teacher_logits = module.teacher(module.teacher_input(batch.image))
    expected = deit_distillation_loss(class_logits, distill_logits, teacher_logits, batch.target, mode=mode, alpha=0.3,
                                      temperature=2.0, label_smoothing=0.1, soft_reduction=reduction)
    torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(logits, deit_inference_logits(class_logits, distill_logits))
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert student.head.weight.grad.abs().sum() > 0 and student.head_dist.weight.grad.abs().sum() > 0


def test_deit_evaluation_predicts_with_the_mean_of_both_heads(tmp_path):
    torch.manual_seed(0)
    module = DeiT(vit("deit_tiny_distilled_patch16_224"), CNN, check_teacher=False)
    module.eval()
    images = torch.rand(3, 3, 16, 16)
    tokens = module.student.forward_features(module.student_input(images))
    mean = (module.student.head(tokens[:, 0]) + module.student.head_dist(tokens[:, 1])) / 2
    torch.testing.assert_close(module(images), mean)
    prediction = module.predict_step(KDBatch(image=images), 0)
    torch.testing.assert_close(prediction["probs"], mean.softmax(-1))
    # The exported student is a plain timm model: in eval mode it predicts with the same mean.
    exported = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=10,
                                 **vit("deit_tiny_distilled_patch16_224").model_kwargs)
    exported.load_state_dict(module.student.state_dict())
    torch.testing.assert_close(exported.eval()(module.student_input(images)), mean)


def test_deit_needs_a_student_with_a_distillation_head():
    with pytest.raises(ValueError, match="deit_tiny_distilled_patch16_224"):
        DeiT(vit(), CNN, check_teacher=False)
    with pytest.raises(ValueError, match="alpha"):
        DeiT(vit("deit_tiny_distilled_patch16_224"), CNN, alpha=1.5, check_teacher=False)
    module = DeiT(vit("deit_tiny_distilled_patch16_224"), CNN, check_teacher=False)
    with pytest.raises(DataContractError, match="labels"):
        module.training_losses(KDBatch(image=torch.rand(2, 3, 16, 16)))


# =============================================================================== ViTKD

def vitkd(**kwargs) -> ViTKD:
    return ViTKD(vit("deit_tiny_distilled_patch16_224", depth=3), vit(depth=3, dim=96), check_teacher=False, **kwargs)


def test_vitkd_loss_on_patch_tokens_of_the_first_blocks_and_the_normed_last_layer():
    """The tokens come by hooks; here they are read independently (forward_intermediates, forward_features),
    without the prefix tokens (2 for the distilled student, 1 for the teacher), and the loss recomputed."""
    torch.manual_seed(0)
    module = vitkd(alpha=0.3, beta=0.2, kd_weight=0.5, temperature=2.0)
    module.train()
    assert (module.student_prefix, module.teacher_prefix) == (2, 1)
    mask = random_token_mask(4, 16, 0.5, torch.Generator().manual_seed(3))
    module.next_mask = lambda batch, tokens, device: mask
    batch = batch_of()
    logits, losses = module.training_losses(batch)

    def tokens(network, adapter):
        pixels = adapter(batch.image)
        shallow = network.forward_intermediates(pixels, indices=[0, 1], output_fmt="NLC", intermediates_only=True)
        deep = network.forward_features(pixels)[:, network.num_prefix_tokens:]
        return torch.stack(shallow, dim=1), deep

    student_shallow, student_deep = tokens(module.student, module.student_input)
    with torch.no_grad():
        teacher_shallow, teacher_deep = tokens(module.teacher, module.teacher_input)
        teacher_logits = module.teacher(module.teacher_input(batch.image))
    feature = vitkd_loss(module.mimic(student_shallow), teacher_shallow, module.generation(student_deep, mask),
                         teacher_deep, mask, alpha=0.3, beta=0.2, mask_ratio=0.5)
    kd = F.kl_div(F.log_softmax(logits / 2, -1), F.log_softmax(teacher_logits / 2, -1), reduction="batchmean",
                  log_target=True) * 4
    torch.testing.assert_close(losses["loss"], (F.cross_entropy(logits, batch.target) + 0.5 * kd + feature).detach())
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for part in (module.mimic, module.generation) for p in part.parameters())


def test_vitkd_masks_follow_the_seed_and_survive_a_checkpoint():
    module = vitkd()
    first = [module.next_mask(2, 16, torch.device("cpu")) for _ in range(3)]
    assert all(int(m.sum(1).min()) == 8 for m in first) and not torch.equal(first[0], first[1])
    checkpoint = {"state_dict": {}, "lit_kd": {}}
    module.on_save_checkpoint(checkpoint)
    later = [module.next_mask(2, 16, torch.device("cpu")) for _ in range(2)]
    resumed = vitkd()
    resumed.on_load_checkpoint(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(later, [resumed.next_mask(2, 16, torch.device("cpu"))
                                                          for _ in range(2)]))


def test_vitkd_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="token sequences"):
        ViTKD(CNN, BIG_CNN, shallow_layers=["layer1", "layer2"], deep_layer="layer3", check_teacher=False)
    other_grid = ModelSpec("vit_tiny_patch16_224", num_classes=10, input_size=32,
                           model_kwargs=dict(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2))
    with pytest.raises(ValueError, match="same patch grid"):
        ViTKD(vit(), other_grid, check_teacher=False)
    with pytest.raises(ValueError, match="mask_ratio"):
        ViTKD(vit(), vit(), mask_ratio=1.0, check_teacher=False)


# =============================================================================== DMAE

def dmae(**kwargs) -> DMAE:
    kwargs.setdefault("decoder_dim", 32)
    kwargs.setdefault("decoder_depth", 1)
    kwargs.setdefault("decoder_heads", 2)
    return DMAE(vit(depth=4), vit(depth=6, dim=96), check_teacher=False, **kwargs)


def test_visible_encoding_with_every_patch_visible_is_the_full_forward():
    """All patches visible, in a shuffled order: the blocks see a permutation of the whole sequence,
    so their outputs are the permuted tokens of the model's own forward (position embeddings, class
    token and norm handled as the model does)."""
    torch.manual_seed(0)
    network = timm.create_model("vit_tiny_patch16_224", **vit(depth=3).model_kwargs).eval()
    pixels = torch.randn(2, 3, 32, 32)
    order, mask = random_visible_indices(2, 16, 0.0, torch.Generator().manual_seed(1))
    assert mask.sum() == 0 and not torch.equal(order[0], torch.arange(16))
    (block1,), final = encode_visible(network, pixels, order, [1])
    patches, prefix = network.forward_intermediates(pixels, indices=[1], output_fmt="NLC", return_prefix_tokens=True,
                                                    intermediates_only=True)[0]
    permuted = torch.gather(patches, 1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    torch.testing.assert_close(block1, torch.cat([prefix, permuted], dim=1), atol=1e-5, rtol=1e-5)
    full = network.forward_features(pixels)
    torch.testing.assert_close(final[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)


def test_dmae_loss_is_alignment_plus_reconstruction_on_the_same_visible_patches():
    torch.manual_seed(0)
    module = dmae(feature_weight=0.7, reconstruction_weight=0.4, normalize_target=True)
    module.train()
    assert (module.student_blocks, module.teacher_blocks) == ([2], [3])  # 3/4 of the depth
    visible, mask = random_visible_indices(4, 16, 0.75, torch.Generator().manual_seed(2))
    module.next_visible = lambda batch, device: (visible, mask)
    runs = []
    for index, block in enumerate(module.teacher.blocks):
        block.register_forward_hook(lambda m, i, o, index=index: runs.append((index, o.shape[1])))
    batch = KDBatch(image=torch.rand(4, 3, 16, 16))  # no labels: DMAE pre-trains without them
    logits, losses = module.training_losses(batch)
    # The teacher ran on the class token and the 4 visible patches, and not past its aligned block.
    assert runs == [(0, 5), (1, 5), (2, 5), (3, 5)]
    pixels = module.student_input(batch.image)
    (student_block,), latent = encode_visible(module.student, pixels, visible, [2])
    with torch.no_grad():
        (teacher_block,), _ = encode_visible(module.teacher, module.teacher_input(batch.image), visible, [3], False)
    align = dmae_feature_loss(module.projectors[0](student_block), teacher_block, "l1")
    reconstruction = mae_reconstruction_loss(module.decoder(latent, visible), pixels, mask, 8, normalize_target=True)
    torch.testing.assert_close(losses["align"], align.detach())
    torch.testing.assert_close(losses["loss"], (0.7 * align + 0.4 * reconstruction).detach())
    torch.testing.assert_close(logits, module.student.forward_head(latent))
    losses["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    for part in (module.projectors, module.decoder):
        assert all(p.grad is not None for p in part.parameters())
    assert module.student.patch_embed.proj.weight.grad.abs().sum() > 0
    assert module.student.head.weight.grad is None  # the classifier is not trained in pre-training


def test_dmae_decoder_position_embedding_and_patch_placement():
    table = sincos_position_embedding(8, (2, 3), prefix_tokens=1)
    assert table.shape == (7, 8) and torch.equal(table[0], torch.zeros(8))
    omega = [1.0, 1.0 / 100]  # 10000^(-k / 2), k = 0, 1
    row, col = 1, 2  # patch 5 of a 2x3 grid
    expected = [math.sin(col * omega[0]), math.sin(col * omega[1]), math.cos(col * omega[0]), math.cos(col * omega[1]),
                math.sin(row * omega[0]), math.sin(row * omega[1]), math.cos(row * omega[0]), math.cos(row * omega[1])]
    torch.testing.assert_close(table[1 + 5], torch.tensor(expected))
    module = dmae(ce_weight=0.5)
    _, losses = module.training_losses(batch_of())
    assert set(losses) == {"loss", "align", "reconstruction", "ce"}
    assert module.trainable_modules().keys() == {"student", "projectors", "decoder"}


def test_dmae_masks_survive_a_checkpoint():
    module = dmae()
    module.next_visible(2, torch.device("cpu"))
    checkpoint = {"state_dict": {}, "lit_kd": {}}
    module.on_save_checkpoint(checkpoint)
    later = module.next_visible(2, torch.device("cpu"))[0]
    resumed = dmae()
    resumed.on_load_checkpoint(checkpoint)
    assert torch.equal(resumed.next_visible(2, torch.device("cpu"))[0], later)


def test_dmae_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="timm VisionTransformer as student"):
        DMAE(CNN, vit(), check_teacher=False)
    other_grid = ModelSpec("vit_tiny_patch16_224", num_classes=10, input_size=32,
                           model_kwargs=dict(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2))
    with pytest.raises(ValueError, match="same grid"):
        DMAE(vit(), other_grid, check_teacher=False)
    with pytest.raises(ValueError, match="one teacher block"):
        dmae(student_blocks=[1, 2], teacher_blocks=[3])
    with pytest.raises(DataContractError, match="no labels"):
        dmae(ce_weight=1.0).training_losses(KDBatch(image=torch.rand(2, 3, 16, 16)))


# =============================================================================== all five

@pytest.mark.parametrize("method", ["OFA", "DeiT", "ViTKD", "DMAE"])  # CRD: test_crd_training_loss_gradients_...
def test_teacher_bitwise_unchanged_after_a_fit(method, tmp_path):
    L.seed_everything(0)
    build = {"OFA": lambda: OFA(vit(), CNN, check_teacher=False),
             "DeiT": lambda: DeiT(vit("deit_tiny_distilled_patch16_224"), CNN, check_teacher=False),
             "ViTKD": lambda: vitkd(), "DMAE": lambda: dmae()}
    module = build[method]()
    before, student_before = snapshot(module.teacher), snapshot(module.student)
    tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1).fit(module, datamodule=digits())
    assert all(torch.equal(before[k], v) for k, v in snapshot(module.teacher).items())
    assert any(not torch.equal(student_before[k], v) for k, v in snapshot(module.student).items())
    assert not module.teacher.training
