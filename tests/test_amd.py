"""AMD: nested pruned candidates, masked == pruned, sandwich sampling, NPSD selection, TA export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

import lit_kd  # noqa: F401
from lit_kd.methods.amd import AMDSearch, BestAccuracySelector, NPSDSelector, npsd, sandwich
from lit_kd.models import ModelSpec, create_model
from lit_kd.pruning import NestedCandidates, PruningError
from tests.helpers import digits, snapshot, tiny_trainer

pytest.importorskip("torch_pruning")

RESNET = ModelSpec(name="resnet20_a", num_classes=10)
VIT = ModelSpec(name="vit_tiny_patch16_224", num_classes=10, input_size=32,
                model_kwargs={"img_size": 32, "patch_size": 8, "depth": 2})
SCALES = [0.8, 0.6, 0.4, 0.25]


def candidates_of(spec: ModelSpec, scales=SCALES) -> tuple[torch.nn.Module, NestedCandidates]:
    torch.manual_seed(0)
    model = create_model(spec).eval()
    return model, NestedCandidates(model, scales, torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("spec", [RESNET, VIT], ids=["resnet20_a", "vit_tiny"])
def test_candidates_are_nested_and_hit_their_parameter_fraction(spec):
    model, candidates = candidates_of(spec)
    kinds = {g.attention is not None for g in candidates.groups}
    if spec is VIT:  # heads and MLP width are both pruned
        assert kinds == {True, False}
    for larger, smaller in zip(candidates.scales, candidates.scales[1:]):
        big, small = candidates.kept_units(larger), candidates.kept_units(smaller)
        assert all(set(small[root]) <= set(big[root]) for root in big)
        assert sum(map(len, small.values())) < sum(map(len, big.values()))
    for scale in candidates.scales:
        pruned = candidates.extract(scale)
        count = sum(p.numel() for p in pruned.parameters())
        assert count == candidates.params(scale)
        assert abs(count / candidates.total_params - scale) <= 0.02


@pytest.mark.parametrize("spec", [RESNET, VIT], ids=["resnet20_a", "vit_tiny"])
def test_masked_network_computes_what_the_pruned_network_computes(spec):
    model, candidates = candidates_of(spec)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = model(images)
        for scale in candidates.scales:
            with candidates.active(scale):
                masked = model(images)
            pruned = candidates.extract(scale).eval()(images)
            assert pruned.shape == masked.shape
            torch.testing.assert_close(pruned, masked, rtol=1e-4, atol=1e-4 * full.abs().max().item())
            assert not torch.allclose(masked, full)
    if spec is VIT:
        attn = candidates.extract(candidates.scales[-1]).blocks[0].attn
        assert attn.num_heads < 3 and attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim


def test_vit_depth_pruning_is_nested_and_exact(tmp_path):
    spec = ModelSpec(**{**VIT.__dict__, "model_kwargs": {"img_size": 32, "patch_size": 8, "depth": 4}})
    torch.manual_seed(0)
    model = create_model(spec).eval()
    candidates = NestedCandidates(model, [0.8, 0.5, 0.25], torch.zeros(1, 3, 32, 32), depth=True)
    dropped = [set(candidates.dropped_blocks(s)) for s in candidates.scales]
    assert dropped[0] <= dropped[1] <= dropped[2] and dropped[2] and len(dropped[2]) < 4
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for scale in candidates.scales:
            with candidates.active(scale):
                masked = model(images)
            pruned = candidates.extract(scale).eval()
            assert sum(p.numel() for p in pruned.parameters()) == candidates.params(scale)
            assert abs(candidates.params(scale) / candidates.total_params - scale) <= 0.02
            torch.testing.assert_close(pruned(images), masked, rtol=1e-4, atol=1e-5)
    # A record with dropped blocks rebuilds the same network from the base spec.
    from lit_kd.pruning import save_pruned

    path = save_pruned(pruned, candidates.record(candidates.scales[-1]), {"name": spec.name}, tmp_path / "ta.pt")
    rebuilt = create_model(ModelSpec(**{**spec.__dict__, "checkpoint": str(path)})).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), pruned(images))


def test_sandwich_picks_largest_smallest_and_one_random_middle():
    scales = [0.9, 0.7, 0.5, 0.3, 0.2]
    drawn = set()
    for seed in range(30):
        picked = sandwich(scales, 1, torch.Generator().manual_seed(seed))
        assert picked[:2] == [0.9, 0.2] and len(picked) == 3 and picked[2] in (0.7, 0.5, 0.3)
        drawn.add(picked[2])
    assert drawn == {0.7, 0.5, 0.3}
    assert sandwich([0.5, 0.3]) == [0.5, 0.3]


def test_npsd_on_a_hand_made_curve():
    scales = [0.8, 0.6, 0.4, 0.2]
    accuracy = [0.90, 0.89, 0.86, 0.70]
    # (0.90-0.89)/0.2 = 0.05, (0.89-0.86)/0.2 = 0.15, (0.86-0.70)/0.2 = 0.80
    assert npsd(scales, accuracy) == pytest.approx([0.05, 0.15, 0.80])
    assert NPSDSelector()(scales, accuracy) == 2            # just before the cliff: scale 0.4
    assert NPSDSelector(threshold=0.1)(scales, accuracy) == 1  # first interval losing > 1 point per 0.1 scale
    assert NPSDSelector(threshold=1.0)(scales, accuracy) == 3  # never steep: the smallest candidate
    assert BestAccuracySelector()(scales, accuracy) == 0
    with pytest.raises(ValueError, match="sorted"):
        npsd([0.2, 0.4], [0.1, 0.2])


def test_bad_scale_grids_and_students_are_refused():
    model = create_model(RESNET)
    example = torch.zeros(1, 3, 32, 32)
    for grid in ([0.5, 1.0], [0.0, 0.5], [1.5], []):
        with pytest.raises(PruningError, match=r"in \(0, 1\)"):
            NestedCandidates(model, grid, example)
    with pytest.raises(PruningError, match="zero units"):
        NestedCandidates(model, [0.5, 0.001], example)
    with pytest.raises(PruningError, match="not smaller than the candidates"):
        AMDSearch(RESNET, scales=[0.6, 0.3], student=ModelSpec(name="resnet14"))


def test_search_needs_a_held_out_split(tmp_path):
    module = AMDSearch(RESNET, scales=[0.6, 0.3], probe_size=16)
    with pytest.raises(ValueError, match="val_split"):
        tiny_trainer(tmp_path, limit_train_batches=1).fit(module, datamodule=digits(val_split=0.0, image_size=16))


def test_search_trains_chooses_and_exports_a_loadable_assistant(tmp_path):
    torch.manual_seed(0)
    module = AMDSearch(RESNET, scales=[0.7, 0.5, 0.3], output_dir=str(tmp_path / "amd"), check_teacher=False,
                       probe_size=16)
    teacher_before = snapshot(module.teacher)
    logger = CSVLogger(tmp_path, name="logs")
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1, logger=logger)
    trainer.fit(module, datamodule=digits(image_size=16, batch_size=16))
    # The report callback the search attaches wrote the table where the run logs (a W&B run gets a table).
    with (Path(logger.log_dir) / "amd_candidates.csv").open() as handle:
        columns, *data = list(csv.reader(handle))
    assert columns[:5] == ["scale", "params", "macs", "val_acc", "npsd"]
    assert [float(row[0]) for row in data] == [0.7, 0.5, 0.3]
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert module.candidate_accuracy is not None and len(module.candidate_accuracy) == 3
    summary = json.loads((tmp_path / "amd" / "candidates.json").read_text())
    assert summary["chosen_scale"] == module.chosen_scale in (0.7, 0.5, 0.3)
    assert [row["scale"] for row in summary["candidates"]] == [0.7, 0.5, 0.3]
    assert sum(row["chosen"] for row in summary["candidates"]) == 1
    assert (tmp_path / "amd" / "candidates.png").stat().st_size > 0
    # The exported TA loads by its base name (weights_only) and computes what the masked candidate computes.
    assistant = create_model(ModelSpec(name="resnet20_a", num_classes=10,
                                       checkpoint=str(tmp_path / "amd" / "assistant.pt"))).eval()
    module.eval()
    images = torch.rand(4, 3, 16, 16)
    with torch.no_grad(), module.candidate(module.chosen_scale):
        expected = module.student(module.student_input(images))
    torch.testing.assert_close(assistant(module.student_input(images)), expected, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in assistant.parameters()) == module.candidates.params(module.chosen_scale)
    # The search's own checkpoint holds plain data only (the selector is recorded, not pickled).
    trainer.save_checkpoint(tmp_path / "search.ckpt")
    saved = torch.load(tmp_path / "search.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["selector"]["class_path"].endswith("NPSDSelector")


def test_candidates_keep_their_own_batchnorm_statistics(tmp_path):
    module = AMDSearch(RESNET, scales=[0.6, 0.3], check_teacher=False, probe_size=16)
    teacher_stats = snapshot(module.student)
    module.on_fit_end = lambda: None  # the export is tested above
    tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1).fit(
        module, datamodule=digits(image_size=16, batch_size=16))
    mean = {i: module.get_buffer(f"candidate{i}_bn1_mean") for i in range(2)}
    assert not torch.allclose(mean[0], mean[1])
    # Outside a candidate the network's own statistics are the teacher's, untouched by training.
    bn_name = next(k for k in teacher_stats if k.endswith("running_mean"))
    assert torch.equal(module.student.state_dict()[bn_name], teacher_stats[bn_name])


def test_chain_teacher_to_searched_assistant_to_student(tmp_path):
    from lit_kd.callbacks.chain import AssistantChain, ChainStep

    data = {"class_path": "lit_kd.data.KDDataModule",
            "init_args": {"dataset": "digits", "batch_size": 16, "image_size": 16, "val_split": 0.1}}
    trainer = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
               "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False}
    student = ModelSpec("resnet8", num_classes=10)
    chain = AssistantChain(
        teacher=RESNET,
        steps=[ChainStep(student, name="amd", model={"class_path": "lit_kd.methods.AMDSearch",
                                                      "init_args": {"scales": [0.6, 0.3], "probe_size": 16}}),
               ChainStep(student, name="student")],
        model={"class_path": "KD", "init_args": {"check_teacher": False}},
        data=data, trainer=trainer, root_dir=tmp_path, name="amd_chain")
    search, final = chain.run()
    assert search.network is not None and search.network["checkpoint"].endswith("assistant.pt")
    assistant = create_model(ModelSpec(**search.network))
    teacher_params = sum(p.numel() for p in create_model(RESNET).parameters())
    assert sum(p.numel() for p in assistant.parameters()) == search.parameters < teacher_params
    # The student step learned from the pruned assistant, not from the search's full-size network.
    taught = chain.trained_network(0, search)
    assert taught.checkpoint == search.network["checkpoint"]
    assert final.index == 1 and Path(final.checkpoint).is_file()
