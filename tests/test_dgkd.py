"""DGKD: the dense-guidance loss, dropping exactly drop_num guides, and every guide frozen."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_kd import ModelSpec
from lit_kd.contract import KDBatch
from lit_kd.losses import dense_guidance_loss, drop_guides, kd_loss
from lit_kd.methods import DGKD
from tests.helpers import digits, snapshot, tiny_trainer


def dgkd(**kwargs) -> DGKD:
    kwargs.setdefault("student", ModelSpec("resnet8", num_classes=10))
    kwargs.setdefault("teacher", ModelSpec("resnet14", num_classes=10))
    kwargs.setdefault("assistants", [ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10)])
    kwargs.setdefault("check_teacher", False)
    return DGKD(**kwargs)


def test_dense_guidance_loss_is_the_sum_of_kd_terms():
    torch.manual_seed(0)
    student, guides = torch.randn(5, 10), [torch.randn(5, 10) for _ in range(3)]
    expected = sum(kd_loss(student, g, 3.0) for g in guides)
    assert torch.allclose(dense_guidance_loss(student, guides, 3.0), expected)
    # Hand-computed for one sample: T² Σ_c p_t log(p_t / p_s).
    p_s, p_t = (student[:1] / 3.0).softmax(-1), (guides[0][:1] / 3.0).softmax(-1)
    by_hand = 9.0 * (p_t * (p_t.log() - p_s.log())).sum()
    assert torch.allclose(dense_guidance_loss(student[:1], [guides[0][:1]], 3.0), by_hand, atol=1e-6)
    assert dense_guidance_loss(guides[0], [guides[0], guides[0]]).abs() < 1e-6
    with pytest.raises(ValueError, match="at least one guide"):
        dense_guidance_loss(student, [])


def test_drop_guides_removes_exactly_drop_num_at_random():
    generator = torch.Generator().manual_seed(0)
    draws = [tuple(drop_guides(4, 1, generator)) for _ in range(200)]
    assert all(len(set(kept)) == 3 and all(0 <= i < 4 for i in kept) for kept in draws)
    dropped = [({0, 1, 2, 3} - set(kept)).pop() for kept in draws]
    assert set(dropped) == {0, 1, 2, 3}  # every guide gets dropped sometimes (uniform choice)
    assert drop_guides(3, 0) == [0, 1, 2]
    for bad in (3, 4, -1):
        with pytest.raises(ValueError, match="at least one guide must stay"):
            drop_guides(3, bad)


def test_module_refuses_drop_num_that_leaves_no_guide():
    with pytest.raises(ValueError, match=r"drop_num=3 must be in \[0, 2\] for 3 guides"):
        dgkd(drop_num=3)


def test_each_step_runs_and_sums_exactly_the_kept_guides():
    torch.manual_seed(0)
    module = dgkd(drop_num=1, ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    module.train()
    forwards: list[str] = []
    for name in module.guide_names():
        getattr(module, name).register_forward_hook(lambda *_, name=name: forwards.append(name))
    batch = KDBatch(image=torch.rand(4, 3, 16, 16), target=torch.randint(0, 10, (4,)))
    seen = set()
    for _ in range(12):
        forwards.clear()
        logits, losses = module.training_losses(batch)
        assert len(module.last_kept) == 2 and forwards == module.last_kept  # dropped guides never run
        seen.add(tuple(module.last_kept))
        with torch.no_grad():
            guide_logits = [getattr(module, n)(module.teacher_input(batch["image"])) for n in module.last_kept]
        kd = sum(kd_loss(logits, g, 2.0) for g in guide_logits)
        expected = 0.3 * torch.nn.functional.cross_entropy(logits, batch["target"]) + 0.7 * kd
        assert torch.allclose(losses["loss"], expected, atol=1e-5)
    assert len(seen) > 1


def test_teacher_and_assistants_stay_frozen_and_out_of_checkpoints(tmp_path):
    L.seed_everything(0)
    module = dgkd(drop_num=1)
    frozen = module.frozen_networks()
    assert list(frozen) == ["teacher", "assistant_0", "assistant_1"]
    before = {name: snapshot(net) for name, net in frozen.items()}
    student_before = snapshot(module.student)
    trainer = tiny_trainer(tmp_path, limit_train_batches=3, limit_val_batches=1, enable_checkpointing=True,
                           default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=digits(image_size=8, batch_size=16))
    for name, net in frozen.items():
        assert not net.training and all(not p.requires_grad for p in net.parameters()), name
        after = snapshot(net)
        assert all(torch.equal(before[name][k], after[k]) for k in after), name  # BN statistics included
    assert any(not torch.equal(student_before[k], v) for k, v in snapshot(module.student).items())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for net in frozen.values() for p in net.parameters()}
    ckpt = next(tmp_path.rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    assert not [k for k in state["state_dict"] if not k.startswith("student.")]
    assert state["hyper_parameters"]["assistants"][1]["name"] == "resnet8"
    # A reload rebuilds the frozen networks from the recorded specs and the student from the checkpoint.
    restored = DGKD.load_from_checkpoint(ckpt, weights_only=True)
    assert restored.assistant_names == ["assistant_0", "assistant_1"]
    trained = snapshot(module.student)
    assert all(torch.equal(v, trained[k]) for k, v in snapshot(restored.student).items())
