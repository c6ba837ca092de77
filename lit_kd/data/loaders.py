"""Datasets, samplers and loaders behind :class:`~lit_kd.data.KDDataModule`: in-memory ``uint8`` data
fetched a whole batch at a time, an epoch-seeded shuffle, and a training loader that resumes
mid-epoch exactly where a checkpoint left it."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from lit_kd.seeding import mix_seed

__all__ = ["InMemoryImageDataset", "passthrough_collate", "EpochShuffleSampler", "ResumableDataLoader"]


class InMemoryImageDataset(Dataset):
    """A view (``indices``) of ``uint8`` images held in memory, fetched a whole batch at a time.

    ``__getitems__`` returns the batch dict ``{"image": uint8 B×3×H×W,
    "target": int64 B}`` with one indexing operation, so a DataLoader with
    :func:`passthrough_collate` pays no per-sample Python cost. ``__getitem__``
    still works (one sample), e.g. for Lightning's checks. With ``return_index`` the dict also holds
    ``"index"``: each sample's position in ``images`` (unique across views of the same images).
    """

    def __init__(self, images: Tensor, targets: Tensor, indices: Tensor | None = None,
                 return_index: bool = False) -> None:
        self.images = images
        self.targets = targets
        self.indices = indices
        self.return_index = return_index

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.targets)

    def _map(self, index: Tensor) -> Tensor:
        return self.indices[index] if self.indices is not None else index

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i = self._map(torch.as_tensor(index))
        item = {"image": self.images[i], "target": self.targets[i]}
        if self.return_index:
            item["index"] = i
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = self._map(torch.as_tensor(indices, dtype=torch.int64))
        batch = {"image": self.images[idx], "target": self.targets[idx]}
        if self.return_index:
            batch["index"] = idx
        return batch


def passthrough_collate(batch: Any) -> Any:
    """Collate for :class:`InMemoryImageDataset`: the batch arrives already stacked.

    A list of per-sample items (a sampler or wrapper that bypassed
    ``__getitems__``) falls back to :func:`torch.utils.data.default_collate`.
    """
    if isinstance(batch, list):
        return default_collate(batch)
    return batch


class EpochShuffleSampler(RandomSampler):
    """A :class:`~torch.utils.data.RandomSampler` whose order depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (also after resuming
    from a checkpoint), so a resumed run visits the samples in the same order
    as an uninterrupted one. Without ``set_epoch`` calls the epoch advances by
    itself on every new iteration. Being a ``RandomSampler``, Lightning still
    swaps it for a shuffling ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of epoch ``epoch``."""
        self.epoch = epoch
        self._epoch_set = True

    def __iter__(self):
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableDataLoader(DataLoader):
    """A training DataLoader that resumes mid-epoch exactly where a checkpoint left it.

    Lightning saves the ``state_dict`` of a stateful training loader in every checkpoint and hands
    it back on resume. The state is the sampler's epoch and the number of batches already yielded
    in it. On resume, the next iteration (that same epoch) skips those batches at the index level
    (nothing is loaded or decoded for them), so the run continues with the batch an uninterrupted
    run would have drawn next. Together with the epoch-seeded order and the per-batch augmentation
    seeds, a run resumed from a mid-epoch checkpoint equals an uninterrupted one.
    """

    def __init__(self, *args: Any, epoch_batches: Callable[[int], int] | None = None, **kwargs: Any) -> None:
        """``epoch_batches``: maps the loader's length to the batches the Trainer runs per epoch
        (``limit_train_batches``); default: the whole loader."""
        self._skip = 0  # batches the next iteration skips (set by a mid-epoch resume); read by _index_sampler
        self.epoch_batches = epoch_batches
        super().__init__(*args, **kwargs)
        self._yielded = 0

    def _epoch(self) -> int | None:
        epoch = getattr(self.sampler, "epoch", None)
        return None if epoch is None else int(epoch)

    @property
    def _index_sampler(self):  # type: ignore[override]
        sampler = super()._index_sampler
        return _SkipFirst(sampler, self._skip) if self._skip else sampler

    def __iter__(self):  # type: ignore[override]
        self._yielded = self._skip
        iterator = super().__iter__()  # takes its index iterator from _index_sampler now
        self._skip = 0
        return self._count(iterator)

    def _count(self, iterator):
        for batch in iterator:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch(), "batches": self._yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        epoch, batches = state_dict.get("epoch"), int(state_dict.get("batches", 0))
        if batches <= 0:
            return
        # Lightning creates the resumed run's first iterator (and prefetches from it) before it sets
        # the sampler's epoch, so the order is selected here.
        per_epoch = self.epoch_batches(len(self)) if self.epoch_batches is not None else len(self)
        if batches >= per_epoch:
            # Saved after the epoch's last batch (a step checkpoint): Lightning closes that epoch
            # without iterating, and this first iterator serves the next epoch, from its start.
            if epoch is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch + 1)
            return
        if epoch is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self._skip = batches


class _SkipFirst:
    """An index (batch) sampler without its first ``count`` items; its length is the full length
    (Lightning counts the epoch's batches from the restored progress)."""

    def __init__(self, sampler: Any, count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self):
        iterator = iter(self.sampler)
        for _ in range(self.count):
            next(iterator, None)
        yield from iterator

    def __len__(self) -> int:
        return len(self.sampler)
