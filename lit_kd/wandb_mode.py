"""W&B without an account never prompts: it logs offline, and ``wandb sync`` uploads later.

``wandb.init`` asks for an API key on a terminal (and waits for it in a notebook) when it is online and
finds none. :func:`offline_unless_logged_in` sets ``WANDB_MODE=offline`` before any run starts unless
the user chose a mode or W&B has credentials. ``lit-kd`` calls it for every command; call it yourself
before a ``WandbLogger`` in your own script or notebook. It imports nothing of wandb.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["offline_unless_logged_in", "has_wandb_credentials"]


def has_wandb_credentials() -> bool:
    """Whether W&B would find an API key: ``WANDB_API_KEY``, or a netrc entry for its host (what
    ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def offline_unless_logged_in() -> str | None:
    """Set ``WANDB_MODE=offline`` when no mode is set and no credentials exist; return the mode W&B will
    use (``None``: W&B decides, i.e. online with the user's credentials)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode  # the user's explicit choice (online, offline, disabled)
    if has_wandb_credentials():
        return None
    os.environ["WANDB_MODE"] = "offline"
    return "offline"
