"""Small shared builders for the tests (tiny models, tiny trainers)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_trainer(tmp_path: Path, **overrides) -> L.Trainer:
    kwargs = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def digits(**overrides):
    from lit_kd.data import KDDataModule

    kwargs = dict(dataset="digits", batch_size=64, image_size=16, val_split=0.1)
    kwargs.update(overrides)
    return KDDataModule(**kwargs)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run's ``run-*.wandb`` file: a 7-byte header, then LevelDB
    log blocks of 32 KiB whose chunks (crc, length, type: full/first/middle/last) make up the records."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, offset, pending = path.read_bytes(), 32768, 7, b""
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:  # the block's tail is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            offset += room
            continue
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_logged_keys(run_dir: Path) -> dict[str, set[str]]:
    """``{"history": keys logged with wandb.log, "summary": keys of the run summary}`` of an offline run folder
    (a picture or table is stored under nested keys ``[key, "_type"]``, ...: its key is the first)."""
    keys: dict[str, set[str]] = {"history": set(), "summary": set()}
    for path in run_dir.glob("run-*.wandb"):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                keys["history"] |= {item.key or item.nested_key[0] for item in record.history.item}
            elif kind == "summary":
                keys["summary"] |= {item.key or item.nested_key[0] for item in record.summary.update}
    return keys


def offline_wandb(fit) -> None:
    """Run ``fit()`` with W&B offline and silent, then finish every run and stop W&B's service, which
    waits until the run files are complete; the environment is restored afterwards."""
    import os

    import wandb

    saved = {name: os.environ.get(name) for name in ("WANDB_MODE", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    try:
        fit()
    finally:
        wandb.finish()
        wandb.teardown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def panels_without_data(workspace, run_dir: Path) -> list[str]:
    """The panels of a ``lit-kd dashboard`` workspace whose key the offline run in ``run_dir`` never logged."""
    import re

    from lit_kd.dashboard import panel_keys

    logged = wandb_logged_keys(run_dir)
    missing = []
    for key, kind in panel_keys(workspace).items():
        if kind == "regex":
            found = any(re.search(key, logged_key) for logged_key in logged["history"])
        else:
            found = key in logged["summary" if kind == "summary" else "history"]
        if not found:
            missing.append(f"{kind} {key}")
    return missing
