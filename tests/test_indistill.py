"""InDistill: pruning, curriculum, PKT, retrieval mAP, bad input, and the frozen teacher."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

import lit_kd  # noqa: F401
from lit_kd.callbacks import RetrievalEvaluation
from lit_kd.losses import pkt_loss
from lit_kd.methods import InDistill
from lit_kd.metrics import retrieval_curve, retrieval_metrics
from lit_kd.models import ModelSpec, create_model
from lit_kd.pruning import l1_kept_filters, prune_output_filters
from lit_kd.taps import TapError
from tests.helpers import REPO, digits, snapshot, tiny_trainer

STUDENT = ModelSpec("cnn32_small", num_classes=10)


def trained_looking_teacher(seed: int = 0) -> nn.Module:
    """A cnn32 with non-trivial biases and BN statistics, as a trained network has."""
    torch.manual_seed(seed)
    teacher = create_model("cnn32", num_classes=10)
    for module in teacher.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.bias, std=0.3)
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.2)
            nn.init.normal_(module.bias, std=0.2)
            module.running_mean.normal_(std=0.5)
            module.running_var.uniform_(0.5, 2.0)
    return teacher.eval()


# ---------------------------------------------------------------------- pruning
def test_pruned_filters_are_exactly_those_with_the_smallest_l1_norm():
    conv = nn.Conv2d(2, 6, kernel_size=1, bias=True)
    with torch.no_grad():
        # L1 norms 3, 1, 5, 1, 0.5, 4 (filters 1 and 3 tie); bias must not count
        conv.weight.copy_(torch.tensor([[3.0, 0], [0.5, -0.5], [-5, 0], [1, 0], [0.25, 0.25], [2, -2]]).view(6, 2, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 100, 0, 0, 100, 0]))
    assert l1_kept_filters(conv, 3).tolist() == [0, 2, 5]
    assert l1_kept_filters(conv, 4).tolist() == [0, 1, 2, 5]  # the tie keeps the lower index
    assert l1_kept_filters(conv, 6).tolist() == list(range(6))

    module = InDistill(STUDENT, trained_looking_teacher(), check_teacher=False)
    for pair, width in enumerate((8, 16, 32)):
        weight = module.teacher.get_submodule(f"block{pair}.conv").weight
        norms = weight.abs().flatten(1).sum(1)
        kept = module.kept_filters(pair)
        pruned = sorted(set(range(len(norms))) - set(kept.tolist()))
        assert len(kept) == width and len(pruned) == len(norms) - width
        assert norms[pruned].max() <= norms[kept].min()


def test_pruned_layer_output_is_the_kept_channels_of_the_teacher_layer():
    teacher = trained_looking_teacher()
    block = teacher.block1
    kept = l1_kept_filters(block.conv, 16)
    pruned = prune_output_filters(block, kept).eval()
    assert pruned.conv.weight.shape == (16, 16, 3, 3) and pruned.bn.num_features == 16  # full input width
    previous = torch.relu(torch.randn(4, 16, 15, 15))  # the unpruned activation of layer l-1
    with torch.no_grad():
        assert torch.allclose(pruned(previous), block(previous)[:, kept], atol=1e-6)

    module = InDistill(STUDENT, teacher, check_teacher=False)
    images = torch.rand(4, 3, 32, 32)
    _, targets, _ = module.teacher_targets(images)
    with torch.no_grad():
        x = module.teacher_input(images)
        activations = []
        for name in ("block0", "block1", "block2"):
            x = teacher.get_submodule(name)(x)
            activations.append(x)
    for pair, (target, activation) in enumerate(zip(targets, activations)):
        layer = prune_output_filters(teacher.get_submodule(f"block{pair}"), module.kept_filters(pair)).eval()
        layer_input = module.teacher_input(images) if pair == 0 else activations[pair - 1]
        with torch.no_grad():
            assert torch.allclose(target, layer(layer_input), atol=1e-5)
        assert torch.equal(target, activation[:, module.kept_filters(pair)])


def test_official_pruning_resets_bias_and_bn_and_reads_the_unpruned_input():
    teacher = trained_looking_teacher()
    module = InDistill(STUDENT, teacher, official_pruning=True, check_teacher=False)
    module.train()
    assert all(layer.training for layer in module.pruned_teacher_layers) and not module.teacher.training
    for pair, layer in enumerate(module.pruned_teacher_layers):
        kept = module.kept_filters(pair)
        original = teacher.get_submodule(f"block{pair}")
        assert torch.equal(layer.conv.weight, original.conv.weight[kept])
        assert not torch.equal(layer.conv.bias, original.conv.bias[kept])  # freshly initialised
        assert torch.equal(layer.bn.weight, original.bn.weight[kept])  # only gamma survives
        assert torch.all(layer.bn.bias == 0) and torch.all(layer.bn.running_mean == 0)
        assert torch.all(layer.bn.running_var == 1)
    images = torch.rand(6, 3, 32, 32)
    _, targets, _ = module.teacher_targets(images)
    with torch.no_grad():
        block0 = teacher.block0(module.teacher_input(images))  # unpruned, 16 channels
        expected = module.pruned_teacher_layers[1](block0)  # batch statistics (train mode)
    assert torch.allclose(targets[1], expected, atol=1e-5)
    assert targets[1].shape == (6, 16, 6, 6)


# ---------------------------------------------------------------------- curriculum
def test_curriculum_schedule_documented_layers():
    module = InDistill(STUDENT, trained_looking_teacher(), base_epochs=2, check_teacher=False)
    stages = [module.curriculum_stage(epoch) for epoch in range(14)]
    assert stages == [("layer", 0)] * 3 + [("layer", 1)] * 4 + [("layer", 2)] * 5 + [("embedding", None)] * 2
    module.handover_epoch = 13
    assert module.curriculum_stage(12) == ("embedding", None) and module.curriculum_stage(13) == ("handover", None)
    # the logged position: layer pairs 1..3, then 4 (embedding), then 5 (hand-over)
    assert [module.curriculum_position(epoch) for epoch in (0, 3, 7, 11, 12, 13)] == [1, 2, 3, 3, 4, 5]


class GradientRecorder(L.Callback):
    """Which student blocks received gradients, and the loss names, per epoch."""

    def __init__(self) -> None:
        self.blocks: dict[int, set[str]] = {}
        self.losses: dict[int, set[str]] = {}
        self.optimizer_state_at_start: dict[int, int] = {}
        self.stages: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.optimizer_state_at_start[trainer.current_epoch] = len(trainer.optimizers[0].state)

    def on_after_backward(self, trainer, pl_module) -> None:
        touched = {name.split(".")[0] for name, p in pl_module.student.named_parameters()
                   if p.grad is not None and p.grad.abs().sum() > 0}
        self.blocks[trainer.current_epoch] = touched

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.stages[trainer.current_epoch] = float(trainer.callback_metrics["indistill/curriculum_stage"])
        self.losses[trainer.current_epoch] = {k.split("/")[1].removesuffix("_epoch") for k in trainer.callback_metrics
                                              if k.startswith("train/") and k.endswith("_epoch")}


def test_training_targets_the_documented_layer_each_epoch_and_leaves_the_teacher(tmp_path):
    L.seed_everything(0)
    teacher = trained_looking_teacher()
    before = snapshot(teacher)
    module = InDistill(STUDENT, teacher, base_epochs=0, handover_epoch=7, reset_optimizer_each_epoch=True,
                       optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    recorder = GradientRecorder()
    trainer = tiny_trainer(tmp_path, max_epochs=8, limit_train_batches=2, limit_val_batches=1, callbacks=[recorder])
    trainer.fit(module, datamodule=digits(image_size=32, batch_size=16))
    # a = 0: layer 0 for 1 epoch, layer 1 for 2, layer 2 for 3, then PKT, then KD from epoch 7
    assert recorder.blocks[0] == {"block0"}
    assert recorder.blocks[1] == recorder.blocks[2] == {"block0", "block1"}
    assert recorder.blocks[3] == recorder.blocks[5] == {"block0", "block1", "block2"}
    assert recorder.blocks[6] == {"block0", "block1", "block2", "fc1"}  # PKT: no classifier
    assert recorder.blocks[7] == {"block0", "block1", "block2", "fc1", "fc"}  # KD with CE
    assert "layer_mse" in recorder.losses[0] and "pkt" in recorder.losses[6] and "kd" in recorder.losses[7]
    assert all(recorder.optimizer_state_at_start[epoch] == 0 for epoch in range(8))  # reset every epoch
    assert [recorder.stages[epoch] for epoch in range(8)] == [1, 2, 2, 3, 3, 3, 4, 5]  # the logged curriculum
    after = snapshot(module.teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_official_pruning_fit_leaves_the_teacher_unchanged(tmp_path):
    teacher = trained_looking_teacher()
    before = snapshot(teacher)
    module = InDistill(STUDENT, teacher, official_pruning=True, base_epochs=0)
    tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(
        module, datamodule=digits(image_size=32, batch_size=16))
    after = snapshot(module.teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in module.pruned_teacher_layers.parameters())


# ---------------------------------------------------------------------- PKT
def test_pkt_equals_the_hand_computed_value():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # collapsed: every conditional probability is 1/2
    # cosine kernel: teacher P = [[2/3, 1/3], [1/3, 2/3]]; mean Jeffreys = ln(2) / 12
    cosine = math.log(2) / 12
    # Student-t kernel: d_11 = sqrt(1e-6), d_12 = sqrt(2 + 1e-6)
    k_self, k_other = 1 / (1 + math.sqrt(1e-6)), 1 / (1 + math.sqrt(2 + 1e-6))
    p_self = k_self / (k_self + k_other)
    student_t = ((p_self - 0.5) * math.log(p_self / 0.5) + (0.5 - p_self) * math.log((1 - p_self) / 0.5)) / 2
    assert pkt_loss(student, teacher).item() == pytest.approx(cosine + student_t, rel=1e-5)
    assert pkt_loss(teacher, student).item() == pytest.approx(cosine + student_t, rel=1e-5)  # symmetric
    wide = torch.randn(5, 7)
    assert pkt_loss(wide, wide).item() == pytest.approx(0.0, abs=1e-7)
    assert pkt_loss(torch.randn(5, 3), wide).item() > 0  # different widths are fine
    with pytest.raises(ValueError, match="same batch"):
        pkt_loss(torch.randn(4, 3), wide)


# ---------------------------------------------------------------------- retrieval
def test_map_and_precision_equal_hand_computed_values_with_ties_and_no_relevant_item():
    # 1-D embeddings; query 0 (label 0) is at 0. Database: 1 (label 0) and 1 (label 1) tie, 2 (label 1), 3 (label 0).
    database = torch.tensor([[1.0], [1.0], [2.0], [3.0]])
    database_labels = torch.tensor([0, 1, 1, 0])
    queries = torch.tensor([[0.0], [0.0]])
    query_labels = torch.tensor([0, 2])  # label 2 has no relevant item
    # query 0: relevant at ranks 1 and 4 (the tie keeps database order) -> precision 1 and 1/2.
    # interpolated precision: 1 at recall 0..0.5 (6 levels), 1/2 at 0.6..1 (5 levels)
    ap0 = (6 * 1.0 + 5 * 0.5) / 11
    for budget in (1, 3, 2**20):  # chunk sizes 1 query, 1 query, all
        scores = retrieval_metrics(queries, query_labels, database, database_labels, "euclidean", top_k=2,
                                   max_elements=budget)
        assert scores["map"] == pytest.approx((ap0 + 0.0) / 2)
        assert scores["precision@2"] == pytest.approx((0.5 + 0.0) / 2)
    curve = retrieval_curve(queries, query_labels, database, database_labels, "euclidean", top_k=2, max_elements=1)
    assert curve["recall"] == pytest.approx([level / 10 for level in range(11)])
    assert curve["precision"] == pytest.approx([(1.0 + 0.0) / 2] * 6 + [(0.5 + 0.0) / 2] * 5)  # mean of both queries
    assert sum(curve["precision"]) / 11 == pytest.approx(curve["map"]) and curve["map"] == pytest.approx(ap0 / 2)
    swapped = retrieval_metrics(queries[:1], query_labels[:1], database[[1, 0, 2, 3]], database_labels[[1, 0, 2, 3]])
    assert swapped["map"] == pytest.approx(0.5)  # the relevant tie now ranks second: precision 1/2 at ranks 2 and 4
    # cosine ranks by angle, not length: the long vector at 0 degrees comes first
    cos = retrieval_metrics(torch.tensor([[1.0, 0.0]]), torch.tensor([0]),
                            torch.tensor([[0.0, 1.0], [10.0, 0.5], [1.0, 1.0]]), torch.tensor([1, 0, 1]),
                            "cosine", top_k=1)
    assert cos["map"] == pytest.approx(1.0) and cos["precision@1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="distance"):
        retrieval_metrics(queries, query_labels, database, database_labels, "manhattan")


def test_retrieval_callback_logs_map_during_fit(tmp_path):
    L.seed_everything(0)
    module = InDistill(STUDENT, trained_looking_teacher(), student_layers=[], teacher_layers=[])
    callback = RetrievalEvaluation(top_k=10)
    data = digits(image_size=32, batch_size=32)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[callback])
    trainer.fit(module, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("retrieval/")}
    assert set(logged) == {"retrieval/map_euclidean", "retrieval/map_cosine", "retrieval/precision@10_euclidean",
                           "retrieval/precision@10_cosine"}
    assert all(0.0 < value <= 1.0 for value in logged.values())
    picture = tmp_path / "retrieval_pr_curve.png"  # no logger: the run's folder is default_root_dir
    assert picture.is_file() and picture.stat().st_size > 2000 and set(callback.curves) == {"euclidean", "cosine"}
    again = callback.evaluate(module, data)
    assert again["map_euclidean"] == pytest.approx(logged["retrieval/map_euclidean"], rel=1e-6)
    database = data.database_dataloader()  # the whole training split, in order, without augmentation
    assert len(database.dataset) == len(data.splits.train) and database.sampler.__class__.__name__ == "SequentialSampler"


# ---------------------------------------------------------------------- bad input
def test_bad_input_errors():
    teacher = trained_looking_teacher()
    with pytest.raises(ValueError, match="at least as wide"):
        InDistill(ModelSpec("cnn32", num_classes=10), create_model("cnn32_small", num_classes=10))
    with pytest.raises(ValueError, match="same length"):
        InDistill(STUDENT, teacher, student_layers=[0, 1, 2], teacher_layers=[0, 1])
    with pytest.raises(TapError, match="does not exist"):
        InDistill(STUDENT, teacher, student_embedding="no_such_layer")
    with pytest.raises(TapError, match="does not exist"):
        InDistill(STUDENT, teacher, teacher_layers=[0, 1, 5])
    with pytest.raises(ValueError, match="official_pruning needs plain stages"):  # residual stages
        InDistill(STUDENT, create_model("resnet20_a", num_classes=10), teacher_layers=[1, 2, 3], official_pruning=True)


# ---------------------------------------------------------------------- auxiliary teacher
def test_auxiliary_teacher_chain_config_runs(tmp_path):
    """teacher -> cnn32 (PKT) -> cnn32_small (InDistill, the auxiliary pruned) from the shipped chain config."""
    import yaml

    from lit_kd.callbacks.chain import run_chain
    from tests.test_cli import write_fake_cifar

    config = yaml.safe_load((REPO / "configs/chains/indistill_cifar10_resnet56_a_cnn32_cnn32_small.yaml").read_text())
    teacher = tmp_path / "teacher.pth"
    torch.save(create_model("resnet56_a", num_classes=10).state_dict(), teacher)
    config["teacher"]["checkpoint"] = str(teacher)
    config["chain"]["root_dir"] = str(tmp_path / "chain")
    config["data"]["init_args"].update(data_dir=str(write_fake_cifar(tmp_path / "data", 10)), batch_size=16)
    config["trainer"].update(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                             enable_progress_bar=False, enable_model_summary=False)
    for step in config["steps"]:
        step["trainer"]["max_epochs"] = 1
    records = run_chain(config)
    assert [r.name for r in records] == ["auxiliary", "student"]
    hparams = torch.load(records[1].checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["teacher"]["name"] == "cnn32" and hparams["teacher"]["checkpoint"] == records[0].checkpoint
    assert hparams["student_layers"] == [0, 1, 2] and hparams["teacher_layers"] == [0, 1, 2]
    assert "retrieval/map_euclidean" in records[1].metrics
