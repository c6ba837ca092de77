"""W&B without an account: offline, never a prompt (``lit_kd.wandb_mode``)."""

from __future__ import annotations

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

    monkeypatch.chdir(no_wandb_account)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        main(["fit", "--config", str(REPO / "configs" / "quickstart_teacher.yaml"), "--config",
              str(REPO / "configs" / "wandb.yaml"), *TINY, "--model.init_args.student.name", "resnet8",
              "--data.init_args.image_size", "16"])
    finally:
        wandb.finish()
    runs = list((no_wandb_account / "runs" / "wandb" / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb"))
