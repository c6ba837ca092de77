"""``chain.json``: what a chain has finished, so that a killed chain resumes and never repeats a step."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_kd.callbacks.chain.config import ChainConfigError

__all__ = ["MANIFEST_FORMAT", "StepRecord", "ChainManifest", "ChainLock", "overview_rows", "overview_markdown"]

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


def overview_rows(records: list[StepRecord], networks: list[str]) -> list[dict[str, Any]]:
    """The chain overview, one row per finished step: step, the network it trained (``networks[i]``,
    or the network it handed on when that is another one, as AMD's chosen assistant), parameters,
    validation accuracy at the best-val epoch, test accuracy at that epoch, and fit time."""
    rows = []
    for record in records:
        best = (record.summary or {}).get("best_val") or {}
        network = record.network.get("name") if record.network else networks[record.index]
        rows.append({"step": record.index, "name": record.name, "network": network,
                     "parameters": record.parameters, "best_val_acc": best.get("val_acc"),
                     "test_acc_at_best_val": best.get("test_acc"), "fit_seconds": record.fit_seconds})
    return rows


def overview_markdown(rows: list[dict[str, Any]]) -> str:
    """The overview rows as a Markdown table (accuracies in %, parameters with thousands separators)."""
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = ["| step | name | network | parameters | best val acc (%) | test acc at best val (%) | fit time (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['name']} | {r['network']} | {r['parameters']:,} | {percent(r['best_val_acc'])} | "
              f"{percent(r['test_acc_at_best_val'])} | {r['fit_seconds']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


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
        where = f"The chain manifest {str(self.path)!r}"
        fix = "Use another root_dir for this chain, or delete the folder to start over."
        try:
            manifest = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            raise ChainConfigError(f"{where} is not valid JSON ({err}): it was truncated or edited by hand. Restore it "
                                   f"from a backup, or delete it and the step folders to start over.") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("steps", []), list):
            raise ChainConfigError(f"{where} is not a chain manifest (a JSON object with a 'steps' list). {fix}")
        if manifest.get("chain") != self.chain:
            raise ChainConfigError(f"{where} belongs to chain {manifest.get('chain')!r}, not {self.chain!r}. {fix}")
        finished = manifest.get("steps", [])
        if len(finished) > len(self.step_hashes):
            raise ChainConfigError(f"{where} records {len(finished)} finished steps but this chain has only "
                                   f"{len(self.step_hashes)}. {fix}")
        required = {f.name for f in dataclasses.fields(StepRecord) if f.default is dataclasses.MISSING}
        for position, record in enumerate(finished):
            missing = sorted(required - set(record)) if isinstance(record, dict) else ["(not an object)"]
            if missing or record.get("index") != position:
                raise ChainConfigError(f"{where}: finished step entry {position} is damaged (missing {missing}, index "
                                       f"{record.get('index') if isinstance(record, dict) else None}). {fix}")
            index = record["index"]
            if record["config_hash"] != self.step_hashes[index]:
                raise ChainConfigError(
                    f"{where} was written by a different configuration: finished step {index} "
                    f"({record['name']!r}) has config hash {record['config_hash'][:12]} but this chain's step "
                    f"{index} has {self.step_hashes[index][:12]} (a change in the teacher, this step or an earlier "
                    f"one: method, arguments, student, trainer, data or seed). {fix}")
        manifest.setdefault("running", None)
        return manifest

    def records(self, manifest: dict[str, Any]) -> list[StepRecord]:
        """The finished steps of a manifest read by :meth:`read`, with their paths resolved against the chain
        folder (the manifest stores them relative to it, so a chain folder can move)."""
        return [self.resolve(StepRecord(**record)) for record in manifest["steps"]]

    def entry(self, record: StepRecord) -> dict[str, Any]:
        """``record`` as the manifest stores it: paths inside the chain folder relative to it."""
        data = dataclasses.asdict(record)
        for key in ("checkpoint", "best_checkpoint", "last_checkpoint"):
            data[key] = self._relative(data[key])
        if data.get("network") and data["network"].get("checkpoint"):
            data["network"] = {**data["network"], "checkpoint": self._relative(data["network"]["checkpoint"])}
        return data

    def resolve(self, record: StepRecord) -> StepRecord:
        """``record`` with its relative paths made absolute (absolute ones, from older manifests, stay)."""
        record = dataclasses.replace(record)
        for key in ("checkpoint", "best_checkpoint", "last_checkpoint"):
            setattr(record, key, self._absolute(getattr(record, key)))
        if record.network and record.network.get("checkpoint"):
            record.network = {**record.network, "checkpoint": self._absolute(record.network["checkpoint"])}
        return record

    def _relative(self, path: str | None) -> str | None:
        if path is None:
            return None
        root = self.path.parent.resolve()
        try:
            return Path(path).resolve().relative_to(root).as_posix()
        except ValueError:  # outside the chain folder: kept as given
            return str(path)

    def _absolute(self, path: str | None) -> str | None:
        if path is None or Path(path).is_absolute():
            return path
        return str(self.path.parent.resolve() / path)

    def write(self, manifest: dict[str, Any], is_global_zero: bool = True) -> None:
        """Replace the file atomically (a killed chain never leaves half a manifest); rank zero only."""
        if not is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.path)


class ChainLock:
    """``chain.lock`` in the chain folder: one run of a chain at a time.

    Holds the holder's process id, host and start time. A lock left by a killed run on this host
    (its process is gone) is taken over with a warning; a live holder, or one on another host whose
    liveness cannot be checked, is refused with a message naming it. Only the launching process of a
    DDP run (local rank 0 of node 0) takes the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    raise ChainConfigError(
                        f"The chain in {str(self.path.parent)!r} is being run by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('started')}): two runs of one chain would train every "
                        f"step twice. Wait for it to finish; if that run is dead, delete {str(self.path)!r}.") from None
                warnings.warn(f"Taking over the stale chain lock {str(self.path)!r} of a run that is gone ({holder}).",
                              UserWarning, stacklevel=2)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return
        raise ChainConfigError(f"Could not take the chain lock {str(self.path)!r}.")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # half-written by a run killed while taking it: stale

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell: refuse rather than run twice
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False
