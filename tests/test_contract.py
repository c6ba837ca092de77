"""The contract between data and methods (KDBatch, DataInfo) and the package's structure rules."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from lit_kd import KD, FitNet, ModelSpec
from lit_kd.contract import DataContractError, DataInfo, KDBatch
from tests.foreign_data import FakeImagesDataModule
from tests.helpers import REPO, digits, snapshot, tiny_trainer

PACKAGE = REPO / "lit_kd"


# --------------------------------------------------------------------------- KDBatch


def test_batches_of_every_usual_form_become_one_kdbatch():
    image, target, index = torch.rand(4, 3, 8, 8), torch.arange(4), torch.arange(10, 14)
    pair = KDBatch.from_any((image, target))
    assert pair.image is image and pair.target is target and pair.index is None
    assert pair.teacher_image is pair.image and not pair.has_teacher_view and pair.size == 4
    triple = KDBatch.from_any([image, target, index])
    assert triple.index is index
    assert KDBatch.from_any(image).target is None  # unlabelled images
    for key_image, key_target in (("image", "target"), ("pixel_values", "label"), ("images", "labels")):
        batch = KDBatch.from_any({key_image: image, key_target: target})
        assert batch.image is image and batch.target is target
    teacher = torch.rand(4, 3, 8, 8)
    both = KDBatch.from_any({"image": image, "teacher_image": teacher, "target": target, "index": index})
    assert both.has_teacher_view and both.teacher_image is teacher and both.index is index
    assert KDBatch.from_any(both) is both  # converting twice is free
    combined = KDBatch.from_any({"train": (image, target), "meta_val": (teacher, target)})
    assert combined.image is image and combined.meta is not None and combined.meta.image is teacher
    assert KDBatch.from_any((torch.rand(2, 3, 4, 4), [3, 5])).target.tolist() == [3, 5]


def test_bad_batches_say_what_a_batch_must_be():
    with pytest.raises(DataContractError, match="image"):
        KDBatch.from_any({"x": torch.rand(2, 3, 4, 4)})
    with pytest.raises(DataContractError, match="length 4"):
        KDBatch.from_any((torch.rand(2, 3, 4, 4),) * 4)
    with pytest.raises(DataContractError, match="one entry per image"):
        KDBatch.from_any((torch.rand(2, 3, 4, 4), torch.arange(3)))
    with pytest.raises(DataContractError, match="Cannot read a batch"):
        KDBatch.from_any("images.png")


def test_kdbatch_is_immutable_reads_like_a_dict_and_moves_as_one():
    image = torch.rand(2, 3, 4, 4)
    batch = KDBatch(image=image, target=torch.tensor([1, 0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.image = torch.zeros(1)
    assert batch["image"] is image and batch.get("index", "none") == "none" and "target" in batch
    assert "index" not in batch and {**batch}.keys() == {"image", "teacher_image", "target"}
    relabelled = dataclasses.replace(batch, target=torch.tensor([0, 1]))
    assert relabelled.target.tolist() == [0, 1] and batch.target.tolist() == [1, 0]
    moved = batch.to("cpu")
    assert moved.teacher_image is moved.image  # a shared view stays shared after a move
    with pytest.raises(KeyError):
        batch["pixels"]


# --------------------------------------------------------------------------- DataInfo


def test_data_info_defaults_for_foreign_data_and_declarations_of_kddatamodule():
    foreign = DataInfo.of(FakeImagesDataModule())
    assert foreign.num_classes is None and foreign.augmentation is None and not foreign.has_meta_split
    assert foreign.source == "FakeImagesDataModule"
    assert [foreign.split_name(i) for i in range(3)] == ["val", "val_1", "val_2"]
    assert DataInfo.of(None).source == "the dataloaders"
    dm = digits(val_split=0.1, meta_split=0.2)
    dm.setup("fit")
    info = DataInfo.of(dm)
    assert (info.num_classes, info.image_size, info.augmentation, info.has_meta_split) == (10, 16, "consistent", True)
    assert info.val_split_names == ("val", "test") and info.split_name(1) == "test"
    assert info.fingerprint()["num_samples"] == len(dm.splits.train.images)
    assert len(info.database_dataloader().dataset) == len(dm.splits.train)
    raw = next(iter(dm.test_dataloader()))
    assert isinstance(info.eval_batch(raw), KDBatch)


def test_a_missing_declaration_names_the_method_the_need_and_the_fix():
    with pytest.raises(DataContractError, match=r"DistPro needs a meta split, and FakeImagesDataModule does not "
                                                r"provide it \(has_meta_split not declared\)\. Declare it\."):
        DataInfo.of(FakeImagesDataModule()).require("has_meta_split", "DistPro", "a meta split", "Declare it.")

    class Declares(FakeImagesDataModule):
        def data_info(self) -> DataInfo:
            return DataInfo(num_classes=10, has_meta_split=True, source="mine")

    assert DataInfo.of(Declares()).require("has_meta_split", "DistPro", "x", "y") is True

    class Wrong(FakeImagesDataModule):
        def data_info(self):
            return {"num_classes": 10}

    with pytest.raises(DataContractError, match="must return a lit_kd DataInfo"):
        DataInfo.of(Wrong())


# --------------------------------------------------------------------------- foreign data modules


def test_foreign_data_module_has_no_lit_kd_import():
    tree = ast.parse((REPO / "tests" / "foreign_data.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.split(".")[0] == "lit_kd" for name in imported), imported


@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_methods_train_unchanged_on_a_users_torchvision_data_module(tmp_path, method):
    torch.manual_seed(0)
    teacher, student = ModelSpec("resnet14", num_classes=10), ModelSpec("resnet8", num_classes=10)
    module = KD(student, teacher) if method == "kd" else FitNet(student, teacher)
    teacher_before, student_before = snapshot(module.teacher), snapshot(module.student)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=FakeImagesDataModule())
    assert all(torch.equal(v, teacher_before[k]) for k, v in module.teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in module.student.state_dict().items())
    for key in ("train/loss", "val/acc", "val/loss"):
        assert key in trainer.callback_metrics, key
    assert "test/acc" not in trainer.callback_metrics  # a user's single validation loader is "val", nothing else


def test_a_method_that_needs_a_meta_split_says_how_to_declare_it(tmp_path):
    from lit_kd import DistPro

    module = DistPro(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet14", num_classes=10))
    with pytest.raises(DataContractError, match=r"meta-validation split.*FakeImagesDataModule.*has_meta_split"):
        tiny_trainer(tmp_path, limit_train_batches=1).fit(module, datamodule=FakeImagesDataModule())


def test_retrieval_evaluation_without_a_database_fails_before_training(tmp_path):
    from lit_kd.callbacks import RetrievalEvaluation

    module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10))
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, callbacks=[RetrievalEvaluation()])
    with pytest.raises(DataContractError, match="RetrievalEvaluation needs a retrieval database"):
        trainer.fit(module, datamodule=FakeImagesDataModule())
    assert module.global_step == 0


# --------------------------------------------------------------------------- package structure


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(imported module, names taken from it)`` for every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, []) if submodule in modules else (base, [alias.name]))
    return found


def test_no_module_imports_a_private_name_from_another_module():
    modules = _modules()
    offences = [f"{name} imports {taken} from {source}"
                for name, path in modules.items()
                for source, names in _imports(path, name, modules) if source in modules and source != name
                for taken in names if taken.startswith("_")]
    assert not offences, offences


def test_lit_kd_has_no_import_cycle():
    modules = _modules()
    graph = {name: sorted({source for source, _ in _imports(path, name, modules) if source in modules and source != name})
             for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (cycle := visit(start)):
            pytest.fail(" -> ".join(cycle))


def test_top_level_holds_only_shared_mechanisms():
    """Each method's helpers live with it: the top level of lit_kd has no module used by a single method."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    # dashboard, metric_names and wandb_mode serve every method (the W&B workspace, the one registry of logged
    # names, offline W&B); none belongs to a single method.
    assert top == ["cli", "contract", "dashboard", "export", "metric_names", "seeding", "taps", "wandb_mode"], top
