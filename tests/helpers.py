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
