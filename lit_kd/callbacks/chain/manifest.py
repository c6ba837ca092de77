"""``chain.json``: what a chain has finished, so that a killed chain resumes and never repeats a step."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_kd.callbacks.chain.config import ChainConfigError

__all__ = ["MANIFEST_FORMAT", "StepRecord", "ChainManifest"]

MANIFEST_FORMAT = 1


@dataclass
class StepRecord:
    """A finished step as written in the manifest."""

    index: int
    name: str
    config_hash: str
    checkpoint: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    parameters: int
    metrics: dict[str, float]
    summary: dict[str, Any] | None
    world_size: int
    finished_at: str
    fit_seconds: float = 0.0  # wall-clock of this step's last fit call (the resumed part after a kill)
    # The spec of the network this step hands on when it is not the step's student (a method that
    # inherits lit_kd.methods.base.HandsOffNetwork: AMD hands on the teacher assistant it chose).
    network: dict[str, Any] | None = None


class ChainManifest:
    """The manifest of one chain: ``{"format", "chain", "steps": [StepRecord...], "running"}``.

    ``running`` names the step whose fit has started but not finished (its ``last.ckpt`` may be
    resumed). Every step carries the hash of its configuration and of everything before it, so a
    manifest written by another configuration is refused instead of silently reused.

    Args:
        path: the ``chain.json`` file.
        chain: the chain's name.
        step_hashes: the configuration hash of every step of this chain, in order.
    """

    def __init__(self, path: Path, chain: str, step_hashes: list[str]) -> None:
        self.path = path
        self.chain = chain
        self.step_hashes = step_hashes

    def read(self) -> dict[str, Any]:
        """The manifest, checked against this chain (empty if there is none yet)."""
        if not self.path.is_file():
            return {"format": MANIFEST_FORMAT, "chain": self.chain, "steps": [], "running": None}
        manifest = json.loads(self.path.read_text())
        where = f"The chain manifest {str(self.path)!r}"
        fix = "Use another root_dir for this chain, or delete the folder to start over."
        if manifest.get("chain") != self.chain:
            raise ChainConfigError(f"{where} belongs to chain {manifest.get('chain')!r}, not {self.chain!r}. {fix}")
        finished = manifest.get("steps", [])
        if len(finished) > len(self.step_hashes):
            raise ChainConfigError(f"{where} records {len(finished)} finished steps but this chain has only "
                                   f"{len(self.step_hashes)}. {fix}")
        for record in finished:
            index = record["index"]
            if record["config_hash"] != self.step_hashes[index]:
                raise ChainConfigError(
                    f"{where} was written by a different configuration: finished step {index} "
                    f"({record['name']!r}) has config hash {record['config_hash'][:12]} but this chain's step "
                    f"{index} has {self.step_hashes[index][:12]} (a change in the teacher, this step or an earlier "
                    f"one: method, arguments, student, trainer, data or seed). {fix}")
        return manifest

    def records(self, manifest: dict[str, Any]) -> list[StepRecord]:
        """The finished steps of a manifest read by :meth:`read`."""
        return [StepRecord(**record) for record in manifest["steps"]]

    def write(self, manifest: dict[str, Any], is_global_zero: bool = True) -> None:
        """Replace the file atomically (a killed chain never leaves half a manifest); rank zero only."""
        if not is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.path)
