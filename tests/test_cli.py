"""Every shipped config runs through the CLI; export round-trips to timm; the README runs."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

import lit_kd  # noqa: F401
from lit_kd.cli import main
from tests.helpers import REPO, SHARED_DATA

# Chain configs (top-level `steps:`) run through `lit-kd chain` in their own tests; presets are overlays;
# sweeps are W&B sweep configs (tests/test_wandb.py).
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.name != "wandb.yaml" and p.parent.name not in ("presets", "sweeps")
                 and "\nsteps:" not in p.read_text())
PRESETS = sorted((REPO / "configs").rglob("presets/*.yaml"))
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.check_val_every_n_epoch", "1"]


def write_fake_cifar(root: Path, classes: int, n_train: int = 120, n_test: int = 40) -> Path:
    """A tiny folder in torchvision's CIFAR python format (random pixels)."""
    rng = np.random.default_rng(0)
    label_key = b"labels" if classes == 10 else b"fine_labels"
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        sizes = [n_train // 5] * 5 + [n_test]
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        names, sizes = ["train", "test"], [n_train, n_test]
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    for name, size in zip(names, sizes):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
                         label_key: list(rng.integers(0, classes, size))}, f)
    return root


def write_fake_folder(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def config_overrides(config: Path, tmp_path: Path) -> list[str]:
    text = config.read_text()
    extra: list[str] = []
    dataset = re.search(r"dataset: (\w+)", text).group(1)
    if dataset in ("cifar10", "cifar100"):
        data = write_fake_cifar(tmp_path / "data", 10 if dataset == "cifar10" else 100)
        extra += ["--data.init_args.data_dir", str(data), "--data.init_args.batch_size", "16"]
    elif dataset == "folder":
        data = write_fake_folder(tmp_path / "data")
        extra += ["--data.init_args.data_dir", str(data), "--data.init_args.image_size", "32",
                  "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
                  "--trainer.precision", "32-true"]
        networks = ["student", "teacher"] if "teacher:" in text else ["student"]
        for network in networks:  # no downloads, 3 classes
            extra += [f"--model.init_args.{network}.num_classes", "3", f"--model.init_args.{network}.pretrained", "false"]
            if "input_size" in text:  # BiT-size networks at their real resolution are too slow for a smoke test
                extra += [f"--model.init_args.{network}.input_size", "32"]
            if re.search(rf"{network}: \{{name: resnetv2_152x2", text):  # 236 M parameters: too slow on a CPU
                extra += [f"--model.init_args.{network}.name", "resnetv2_50x1_bit"]
    checkpoint = re.search(r"teacher: \{[^}]*checkpoint: ([^,}\s]+)", text)
    if checkpoint:  # the teacher comes from another run or from ../shared: give it a real file
        teacher = re.search(r"teacher: \{name: ([\w.]+), num_classes: (\d+)", text)
        name, num_classes = teacher.group(1), 3 if dataset == "folder" else int(teacher.group(2))
        name = "resnetv2_50x1_bit" if name.startswith("resnetv2_152x2") else name  # as substituted above
        path = tmp_path / "teacher.pth"
        torch.save(timm.create_model(name, num_classes=num_classes).state_dict(), path)
        extra += ["--model.init_args.teacher.checkpoint", str(path)]
    if "mode: replay" in text:  # DistPro replay reads a searched process: give it a constant one for the pair
        from lit_kd.methods.distpro import DistillationProcess, enumerate_pathways

        names = [re.search(rf"{role}: \{{name: ([\w.]+)", text).group(1) for role in ("teacher", "student")]
        taps = tuple(len(timm.create_model(name).feature_info) for name in names)
        pathways = enumerate_pathways(*taps)
        path = DistillationProcess(pathways=pathways, alpha=torch.zeros(1, len(pathways)), step_budget=1,
                                   num_taps=taps).save(tmp_path / "process.pt")
        extra += ["--model.init_args.process", str(path)]
    listed = re.findall(r"- \{name: ([\w.]+), num_classes: (\d+), checkpoint: [^,}\s]+\}", text)
    if "teachers:" in text and listed:  # several teachers from files (e.g. ../shared): give each a real one
        records = []
        for index, (name, num_classes) in enumerate(listed):
            path = tmp_path / f"teacher_{index}.pth"
            torch.save(timm.create_model(name, num_classes=int(num_classes)).state_dict(), path)
            records.append(f"{{name: {name}, num_classes: {num_classes}, checkpoint: {path}}}")
        extra += ["--model.init_args.teachers", "[" + ", ".join(records) + "]"]
    student = re.search(r"student: \{name: ([\w.]+), num_classes: (\d+), checkpoint: [^,}\s]+", text)
    if student:  # a multi-step pipeline: the student starts from an earlier step's run
        path = tmp_path / "student.pth"
        torch.save(timm.create_model(student.group(1), num_classes=int(student.group(2))).state_dict(), path)
        extra += ["--model.init_args.student.checkpoint", str(path)]
    return extra


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_runs_a_few_steps(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(config), *TINY, *config_overrides(config, tmp_path)])
    summaries = list(tmp_path.rglob("summary.json"))
    assert summaries, "the run summary was not written"
    record = json.loads(summaries[0].read_text())
    # A config without a held-out split (val_split: 0, e.g. the fast recipes) validates on the test split.
    data = (yaml.safe_load(config.read_text()).get("data") or {}).get("init_args") or {}
    held_out = data.get("val_split") != 0
    assert record["last"]["epoch"] == 0 and record["last"]["val_acc" if held_out else "test_acc"] is not None
    assert list(tmp_path.rglob("last.ckpt")), "the config's checkpoint callback wrote nothing"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_override_their_base_config(preset, capsys):
    """A preset overlay on its base config sets the paper table's epochs, T, lr and wd."""
    import yaml

    base = preset.parent.parent / f"{preset.stem.rsplit('_', 1)[0]}.yaml"
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(base), "--config", str(preset), "--print_config"])
    merged = yaml.safe_load(capsys.readouterr().out)
    wanted = yaml.safe_load(preset.read_text())
    assert merged["trainer"]["max_epochs"] == wanted["trainer"]["max_epochs"]
    model = merged["model"]["init_args"]
    assert model["temperature"] == wanted["model"]["init_args"]["temperature"]
    assert model["optimizer"]["init_args"]["lr"] == wanted["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert (model["optimizer"]["init_args"]["weight_decay"]
            == wanted["model"]["init_args"]["optimizer"]["init_args"]["weight_decay"])
    assert model["view"] == "function_matching" and merged["data"]["init_args"]["image_size"] == 128


def test_print_config_lists_every_method_option(capsys):
    for method, option in [("KD", "temperature"), ("FitNet", "hint_weight"), ("Supervised", "label_smoothing")]:
        networks = ["--model.student", "{name: resnet8}"]
        if method != "Supervised":
            networks += ["--model.teacher", "{name: resnet14}"]
        with pytest.raises(SystemExit):
            main(["fit", "--model", method, *networks, "--data", "KDDataModule", "--print_config"])
        out = capsys.readouterr().out
        assert f"{option}:" in out and "augmentation: consistent" in out


def test_export_round_trips_to_timm(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs" / "quickstart_teacher.yaml"), *TINY,
          "--data.init_args.image_size", "16"])
    ckpt = tmp_path / "runs" / "quickstart" / "teacher" / "checkpoints" / "last.ckpt"
    out = tmp_path / "student.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt", str(ckpt), "--out", str(out)])
    assert exit_info.value.code == 0
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    expected = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    plain = timm.create_model("resnet20_a", num_classes=10)
    plain.load_state_dict(__import__("safetensors.torch").torch.load_file(str(out)))
    via_timm = timm.create_model("resnet20_a", num_classes=10, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out)))
    for key, value in expected.items():
        assert torch.equal(plain.state_dict()[key], value)
        assert torch.equal(via_timm.state_dict()[key], value)
    with pytest.raises(SystemExit) as exit_info:  # a plain error, exit code 2
        main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "t.safetensors"), "--network", "teacher"])
    assert exit_info.value.code == 2 and "without a 'teacher' network" in capsys.readouterr().err


def test_readme_drop_in_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- drop-in -->\n```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    module = namespace["module"]
    assert module.trainer.state.finished and module.trainer.global_step == 4
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\n```bash\n(.*)\n", readme).group(1)
    assert "pytest" in command and "pip install" in command
    assert "test-command" in (REPO / ".ci" / "run").read_text()


def test_shared_teacher_config_path_exists():
    if not SHARED_DATA.exists():
        pytest.skip("no shared data")
    text = (REPO / "configs" / "cifar10" / "kd_resnet56_a_resnet20_a.yaml").read_text()
    path = re.search(r"teacher: \{[^}]*checkpoint: ([^,}\s]+)", text).group(1)
    assert (REPO / path).resolve().is_file()


def test_validate_test_predict_subcommands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "quickstart_teacher.yaml")
    small = ["--data.init_args.image_size", "16"]
    main(["fit", "--config", config, *TINY, *small])
    ckpt = str(tmp_path / "runs" / "quickstart" / "teacher" / "checkpoints" / "last.ckpt")
    for command in ("validate", "test"):
        main([command, "--config", config, "--ckpt_path", ckpt, "--trainer.limit_val_batches", "1",
              "--trainer.limit_test_batches", "1", *small])
    summaries = list((tmp_path / "runs").rglob("summary.json"))
    assert any(json.loads(p.read_text())["final_test"] for p in summaries)
    main(["predict", "--config", config, "--ckpt_path", ckpt, "--trainer.limit_predict_batches", "1", *small])


def test_bad_data_path_fails_before_training_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "cifar10" / "supervised_resnet20_a.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, *TINY, "--data.init_args.data_dir", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "FileNotFoundError: CIFAR-10 not found" in err and "data_dir" in err


def test_distillation_configs_turn_the_diagnostics_on():
    """Every config (chains too) of a method with a frozen teacher lists DistillationDiagnostics."""
    import yaml

    import lit_kd.methods
    from lit_kd.methods.base import DistillationModule

    missing = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        class_path = (config.get("model") or {}).get("class_path", "")
        method = getattr(lit_kd.methods, class_path.rsplit(".", 1)[-1], None)
        if method is None or not issubclass(method, DistillationModule):
            continue
        callbacks = [c.get("class_path") for c in (config.get("trainer") or {}).get("callbacks") or []]
        if "lit_kd.callbacks.DistillationDiagnostics" not in callbacks:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"configs without DistillationDiagnostics: {missing}"
