"""W&B without an account: offline, never a prompt (``lit_kd.wandb_mode``)."""

from __future__ import annotations

import sys

import pytest

from lit_kd.wandb_mode import has_wandb_credentials, offline_unless_logged_in
from tests.helpers import REPO


@pytest.fixture
def no_wandb_account(tmp_path, monkeypatch):
    """No W&B mode, key or netrc entry: what a fresh CI machine or laptop has."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)  # restored (to absent) after the test, even when lit_kd sets it
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def test_offline_without_credentials_and_the_users_choice_otherwise(no_wandb_account, monkeypatch):
    import os

    netrc = no_wandb_account / "netrc"
    assert not has_wandb_credentials()
    netrc.write_text("machine example.com login u password p\n")
    assert not has_wandb_credentials()  # another host's entry is no W&B key
    netrc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert has_wandb_credentials()
    assert offline_unless_logged_in() is None and "WANDB_MODE" not in os.environ  # logged in: W&B decides
    netrc.unlink()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert offline_unless_logged_in() == "disabled"  # an explicit choice is kept
    monkeypatch.delenv("WANDB_MODE")
    assert offline_unless_logged_in() == "offline" and os.environ["WANDB_MODE"] == "offline"


def test_cli_with_the_wandb_overlay_runs_offline_without_asking(no_wandb_account, monkeypatch):
    """`lit-kd fit ... --config configs/wandb.yaml` with no account: an offline run, ready for `wandb sync`.
    stdin is closed, so a login prompt would fail the test instead of hanging it."""
    wandb = pytest.importorskip("wandb")
    import io

    from lit_kd.cli import main
    from tests.test_cli import TINY

    # W&B's service process resolves the config's relative save_dir against its own working directory;
    # one left running by an earlier test would write this run's files there, so start a fresh one here.
    wandb.teardown()
    monkeypatch.chdir(no_wandb_account)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        main(["fit", "--config", str(REPO / "configs" / "quickstart_teacher.yaml"), "--config",
              str(REPO / "configs" / "wandb.yaml"), *TINY, "--model.init_args.student.name", "resnet8",
              "--data.init_args.image_size", "16"])
    finally:
        wandb.finish()
    runs = list((no_wandb_account / "runs" / "wandb" / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb")), sorted(p.name for p in runs[0].rglob("*")) if runs else runs


@pytest.fixture(scope="module")
def offline_kd_run(tmp_path_factory):
    """A real offline W&B run of KD (one short epoch) with the callbacks of the configs: its run folder."""
    wandb = pytest.importorskip("wandb")
    import os

    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import WandbLogger

    from lit_kd import KD, ModelSpec
    from lit_kd.callbacks import DistillationDiagnostics, ImagesPerSecond, RunSummary
    from tests.helpers import digits, tiny_trainer

    folder = tmp_path_factory.mktemp("wandb_kd")
    saved = {name: os.environ.get(name) for name in ("WANDB_MODE", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    try:
        torch.manual_seed(0)
        module = KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10), check_teacher=False)
        logger = WandbLogger(project="lit_kd_test", save_dir=str(folder), offline=True)
        callbacks = [DistillationDiagnostics(grid_images=4), RunSummary(dirpath=str(folder)), ImagesPerSecond(window=1),
                     LearningRateMonitor()]
        trainer = tiny_trainer(folder, logger=logger, callbacks=callbacks, limit_train_batches=3, limit_val_batches=1,
                               log_every_n_steps=1)
        trainer.fit(module, datamodule=digits())
        logger.experiment.finish()
    finally:
        wandb.finish()
        wandb.teardown()  # waits until the service has written the whole run file
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return next((folder / "wandb").glob("offline-run-*"))


def test_offline_kd_run_history_holds_every_diagnostic(offline_kd_run):
    from lit_kd import metric_names as names
    from tests.helpers import wandb_logged_keys

    history = wandb_logged_keys(offline_kd_run)["history"]
    for name in (names.AGREEMENT, names.KL, names.ACC, names.TEACHER_ACC, names.ACC_GAP, names.ECE,
                 names.TEACHER_ECE, names.CLASS_GAP, names.CLASS_GAP_PLOT, names.RELIABILITY, names.DISAGREEMENTS):
        assert names.key(name, "val") in history, name


def test_dashboard_shows_only_keys_an_offline_kd_run_logged(offline_kd_run):
    pytest.importorskip("wandb_workspaces")
    from lit_kd.dashboard import build_workspace, panel_keys
    from tests.helpers import panels_without_data

    workspace = build_workspace("entity", "project", method="KD")
    assert {"image", "table", "line", "regex", "summary"} <= set(panel_keys(workspace).values())
    missing = panels_without_data(workspace, offline_kd_run)
    assert not missing, f"panels whose key the run never logged: {missing}"


def test_method_and_chain_dashboards(capsys):
    pytest.importorskip("wandb_workspaces")
    from lit_kd.cli import main
    from lit_kd.dashboard import build_workspace, panel_keys

    amd = panel_keys(build_workspace("e", "p", method="AMDSearch"))
    assert amd["amd/candidates_plot"] == "image" and "amd/candidates" in amd
    assert "amd/candidates" not in panel_keys(build_workspace("e", "p", method="KD"))
    assert "val/ece" not in panel_keys(build_workspace("e", "p", method="Supervised", distillation=False))
    chain = build_workspace("e", "p", chain="takd")
    assert chain.sections[0].name.startswith("Chain takd") and "takd" in str(chain.runset_settings.filters)
    with pytest.raises(SystemExit) as exit_code:
        main(["dashboard", "--entity", "e", "--project", "p", "--method", "DistPro", "--dry-run"])
    assert exit_code.value.code == 0 and "distpro/final_weights" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_code:
        main(["dashboard", "--entity", "e", "--project", "p", "--method", "DML", "--dry-run"])
    listed = capsys.readouterr().out
    assert exit_code.value.code == 0 and "val/acc" in listed and "val/ece" not in listed  # no teacher: no diagnostics
    with pytest.raises(SystemExit) as exit_code:
        main(["dashboard", "--entity", "e", "--project", "p", "--method", "FunctionMatchng", "--dry-run"])
    assert exit_code.value.code == 2 and "not a lit_kd method" in capsys.readouterr().err


SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


def agent_command(sweep: dict) -> list[str]:
    """The command line `wandb agent` runs for one trial: ``command`` with ``${program}`` and ``${args}``
    (``--name=value`` per parameter, here each parameter's first value or lower bound) filled in."""
    def sample(spec: dict) -> object:
        return spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))

    args = [f"--{name}={sample(spec)}" for name, spec in sweep["parameters"].items()]
    command = []
    for token in sweep["command"]:
        if token == "${args}":
            command += args
        elif token == "${program}":
            command.append(sweep["program"])
        else:
            command.append(token)
    return command


@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_trial_command_is_accepted_by_lit_kd_fit(sweep_path, no_wandb_account, monkeypatch):
    """What a sweep agent would run parses and trains a few steps (offline), with the trial's values."""
    wandb = pytest.importorskip("wandb")
    import yaml

    from lit_kd.cli import main
    from tests.test_cli import TINY, write_fake_cifar

    sweep = yaml.safe_load(sweep_path.read_text())
    assert sweep["metric"]["name"] == "val/acc"
    command = agent_command(sweep)
    assert command[:2] == ["lit-kd", "fit"]
    # the agent runs from the repository root: its config paths are relative to it
    args = [str(REPO / a) if a.startswith("configs/") else a for a in command[2:]]
    monkeypatch.chdir(no_wandb_account)
    # tiny stand-ins for the data and the networks: the trial's own arguments are what is checked
    import timm
    import torch

    data = write_fake_cifar(no_wandb_account / "data", 100)
    teacher = no_wandb_account / "teacher.pth"
    torch.save(timm.create_model("resnet8", num_classes=100).state_dict(), teacher)
    small = ["--data.init_args.data_dir", str(data), "--data.init_args.batch_size", "16",
             "--model.init_args.teacher.name", "resnet8", "--model.init_args.teacher.checkpoint", str(teacher),
             "--model.init_args.student.name", "resnet8"]
    try:
        main(["fit", *args, *TINY, *small])
    finally:
        wandb.finish()
    assert list(no_wandb_account.rglob("offline-run-*"))
    saved = [yaml.safe_load(p.read_text()) for p in no_wandb_account.rglob("config.yaml")]  # LightningCLI's record
    assert saved, "LightningCLI saved no config.yaml"
    for name, spec in sweep["parameters"].items():  # the trial's values reached the method
        value = spec["values"][0] if "values" in spec else spec["min"]
        assert saved[0]["model"]["init_args"][name.split(".")[-1]] == pytest.approx(value), name


def test_readme_describes_every_registered_name():
    from lit_kd import metric_names as names

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Seeing what happens"):readme.index("## Configs")]
    missing = [m.at("val") for m in names.REGISTRY if not m.regex and f"`{m.at('val')}`" not in section]
    assert not missing, f"not described in the README's 'Seeing what happens': {missing}"
    assert "wandb sync" in section and "offline" in section


def test_dashboard_without_wandb_workspaces_is_one_plain_error(monkeypatch, capsys):
    from lit_kd.cli import main

    for name in ("wandb_workspaces", "wandb_workspaces.reports.v2", "wandb_workspaces.workspaces"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if the extra were not installed
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--entity", "e", "--project", "p", "--dry-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-kd: error:") and "lit-kd[dashboard]" in err and "Traceback" not in err
