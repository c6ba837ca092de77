"""Carving a data set into its training, held-out, meta-validation and test splits.

The held-out split (``val_split``) and the meta-validation split (``meta_split``, for bi-level
methods) are drawn from the training set with fixed seeds, so runs are comparable; a data set
with its own validation split (a folder with ``val/`` and ``test/``) trains on all of ``train/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lit_kd.data.loaders import InMemoryImageDataset

__all__ = ["Splits", "split_indices", "split_training", "in_memory_splits"]


@dataclass
class Splits:
    """The datasets of one data module.

    Attributes:
        train: what is trained on (without the held-out and meta-validation parts).
        test: the test split.
        val: the held-out split for model selection, or ``None``.
        meta: the meta-validation part of the training set (``meta_split > 0``), or ``None``.
        train_eval: the training split as un-augmented evaluation views (the retrieval database);
            ``None`` means ``train`` itself serves (in-memory data is augmented on the device).
        streamed: decoded per sample in DataLoader workers (large folders).
    """

    train: Dataset
    test: Dataset
    val: Dataset | None = None
    meta: Dataset | None = None
    train_eval: Dataset | None = None
    streamed: bool = False

    @property
    def database(self) -> Dataset:
        """The training split as evaluation views."""
        return self.train_eval if self.train_eval is not None else self.train


def split_indices(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor | None]:
    """Split ``range(n)`` into ``(train, held_out)`` sorted index tensors with a fixed seed.

    ``held_out`` has ``round(n * fraction)`` elements (at least one if
    ``fraction > 0``) and is ``None`` for ``fraction == 0``.
    """
    if fraction <= 0:
        return torch.arange(n), None
    n_held = min(max(1, int(round(n * fraction))), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_held:].sort().values, perm[:n_held].sort().values


def split_training(n: int, val_split: float, meta_split: float, seed: int,
                   separate_val: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Indices of the training set's training, held-out (``val_split``; none when the data has its own
    validation split) and meta-validation (``meta_split``, carved from what ``val_split`` leaves) parts."""
    if separate_val:  # a separate validation folder: all of train/ is trained on
        train_idx, val_idx = torch.arange(n), None
    else:
        train_idx, val_idx = split_indices(n, val_split, seed)
    if meta_split <= 0:
        return train_idx, val_idx, None
    keep, held = split_indices(len(train_idx), meta_split, seed + 1)
    if held is None or len(held) == 0 or len(keep) == 0:
        raise ValueError(
            f"meta_split={meta_split} leaves no meta-validation data: the training split has only "
            f"{len(train_idx)} sample(s) (after val_split={val_split}). Use more training data, "
            "lower val_split, or set meta_split=0 and replay a saved process instead of searching one."
        )
    return train_idx[keep], val_idx, train_idx[held]


def in_memory_splits(train_images: Tensor, train_targets: Tensor, test_images: Tensor, test_targets: Tensor,
                     val_split: float, meta_split: float, seed: int, return_index: bool,
                     val_images: Tensor | None = None, val_targets: Tensor | None = None) -> Splits:
    """The splits of ``uint8`` images held in memory; held-out and meta parts are views of the training store."""
    train_idx, val_idx, meta_idx = split_training(len(train_targets), val_split, meta_split, seed,
                                                  separate_val=val_images is not None)

    def view(indices: Tensor | None) -> InMemoryImageDataset:
        return InMemoryImageDataset(train_images, train_targets, indices, return_index=return_index)

    if val_images is not None:
        val: Dataset | None = InMemoryImageDataset(val_images, val_targets, return_index=return_index)
    else:
        val = None if val_idx is None else view(val_idx)
    return Splits(train=view(train_idx), test=InMemoryImageDataset(test_images, test_targets, return_index=return_index),
                  val=val, meta=None if meta_idx is None else view(meta_idx))
