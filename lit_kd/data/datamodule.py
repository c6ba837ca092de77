"""``KDDataModule``: data for distillation, with teacher/student-consistent augmentation.

Loaders yield raw ``uint8`` batches (cheap to move to the device); all
augmentation happens batched on the training device in
:meth:`KDDataModule.on_after_batch_transfer` through
:meth:`KDDataModule.transform_batch`, which produces::

    {"image": float32 B×3×S×S in [0, 1],   # not normalized
     "teacher_image": float32 B×3×S×S,     # `is` "image" unless augmentation differs per network
     "target": int64 B,
     "index": int64 B}                     # only with return_index (see KDDataModule)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from lit_kd.data import sources
from lit_kd.data.augment import (
    center_crop_resize,
    random_crop_flip,
    random_resized_crop_flip,
    resize_square,
    to_float,
)

log = logging.getLogger(__name__)

__all__ = ["KDDataModule", "InMemoryImageDataset", "EpochShuffleSampler", "passthrough_collate", "split_indices"]

DatasetName = Literal["digits", "cifar10", "cifar100", "folder"]
Augmentation = Literal["consistent", "independent", "fixed_teacher"]
Recipe = Literal["auto", "cifar", "imagenet", "none"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_STATIC_NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


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
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._skip = 0  # batches the next iteration skips (set by a mid-epoch resume); read by _index_sampler
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
        if not 0 < batches < len(self):
            return  # saved at an epoch boundary: the next epoch starts from its first batch
        # Lightning may create the resumed epoch's iterator before it sets the sampler's epoch:
        # select the saved epoch's order here.
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


def _mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit seed (a SplitMix64-style hash)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state >> 1


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


class KDDataModule(L.LightningDataModule):
    """Image classification data for knowledge distillation.

    Loaders produce ``uint8`` batches; :meth:`on_after_batch_transfer` turns
    them on the device into ``{"image", "teacher_image", "target"}`` dicts with
    float images in ``[0, 1]`` (not normalized). Training batches are augmented
    (batched, no per-sample Python loop) according to ``recipe``; how the
    teacher's view relates to the student's is set by ``augmentation``.

    Args:
        dataset: ``"digits"`` (scikit-learn's 8×8 digits, offline), ``"cifar10"``,
            ``"cifar100"`` (torchvision's python pickles), or ``"folder"``
            (``train/<class>/*`` plus ``val/<class>/*`` or ``test/<class>/*``,
            in a directory or a ``.zip``).
        data_dir: where the data lives. CIFAR: the pickle folder or its parent
            (default ``~/.cache/lit_kd/<dataset>``). Folder: the directory or
            zip (required).
        download: download CIFAR with torchvision if it is missing (needs network).
        batch_size: training batch size.
        eval_batch_size: validation/test/predict batch size (default: ``batch_size``).
        val_split: fraction of the training set held out for validation (model
            selection), drawn with ``split_seed``; ``0`` means no held-out split
            and validation runs on the test split.
        split_seed: seed of the held-out split (fixed so runs are comparable).
        augmentation: ``"consistent"``: one augmented view shared by student and
            teacher (``batch["teacher_image"] is batch["image"]``);
            ``"independent"``: the teacher gets a second, independent
            augmentation of the same images; ``"fixed_teacher"``: the teacher gets
            the un-augmented evaluation view.
        recipe: training augmentation. ``"cifar"``: random crop with 4 px zero
            padding + horizontal flip; ``"imagenet"``: RandomResizedCrop
            (scale 0.08–1, ratio 3/4–4/3) + flip, evaluated with resize to
            ``round(S / eval_crop_fraction)`` + centre crop; ``"none"``: no augmentation;
            ``"auto"``: cifar for CIFAR and digits, imagenet for folders.
        image_size: output side length ``S`` for training and evaluation
            (default 32 for CIFAR and digits, 224 for folders).
        eval_crop_fraction: ImageNet-style evaluation keeps the centre
            ``eval_crop_fraction`` of the image: resize the shorter side to
            ``round(S / eval_crop_fraction)``, centre-crop ``S``. ``0.875`` is the
            torchvision/timm ImageNet default (224 from 256); big_vision's
            Flowers/Pets distillation evaluates 128 from 160, i.e. ``0.8``.
        in_memory: decode the whole data set into memory once (``None``: always
            for CIFAR/digits; for folders when ``N·3·s·s`` bytes at the stored
            side ``s`` is below ``in_memory_limit_gb``). Otherwise folders are
            streamed: decoded and augmented per sample in DataLoader workers.
        in_memory_limit_gb: memory budget (GiB) for the automatic ``in_memory`` choice.
        num_workers: DataLoader worker processes for streamed folders (in-memory
            data needs none).
        monitor_test: ``val_dataloader()`` returns ``[val, test]`` so test accuracy
            is logged every epoch too (dataloader_idx 1); with ``val_split=0`` it
            returns the test loader alone either way.
        return_index: in-memory batches also carry ``"index"``, each sample's
            position in the stored images of its split (held-out samples share the
            training store and have their own positions); it passes through
            :meth:`transform_batch`. ``None``: only with
            ``augmentation="fixed_teacher"``, where teacher-output caches need it.
        meta_split: fraction of the training split (what ``val_split`` leaves) set aside as
            *meta-validation* data for bi-level methods (DistPro: ``0.2``, the 80/20 split of its
            official code), drawn with ``split_seed``. With ``meta_split > 0`` the training loader
            yields ``{"train": batch, "meta_val": batch}``, the meta-validation loader cycling
            (both augmented with the training recipe); ``0`` keeps plain training batches.
    """

    def __init__(
        self,
        dataset: DatasetName = "digits",
        data_dir: str | None = None,
        download: bool = False,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_split: float = 0.1,
        split_seed: int = 0,
        augmentation: Augmentation = "consistent",
        recipe: Recipe = "auto",
        image_size: int | None = None,
        eval_crop_fraction: float = sources.CROP_FRACTION,
        in_memory: bool | None = None,
        in_memory_limit_gb: float = 4.0,
        num_workers: int = 4,
        monitor_test: bool = True,
        return_index: bool | None = None,
        meta_split: float = 0.0,
    ) -> None:
        super().__init__()
        if dataset not in ("digits", "cifar10", "cifar100", "folder"):
            raise ValueError(f"dataset must be digits, cifar10, cifar100 or folder, got {dataset!r}")
        if augmentation not in ("consistent", "independent", "fixed_teacher"):
            raise ValueError(f"augmentation must be consistent, independent or fixed_teacher, got {augmentation!r}")
        if recipe not in ("auto", "cifar", "imagenet", "none"):
            raise ValueError(f"recipe must be auto, cifar, imagenet or none, got {recipe!r}")
        if dataset == "folder" and not data_dir:
            raise ValueError("dataset='folder' needs data_dir: the image folder or .zip (data.data_dir=...)")
        if not 0.0 <= val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1), got {val_split}")
        if not 0.0 <= meta_split < 1.0:
            raise ValueError(f"meta_split must be in [0, 1), got {meta_split} (DistPro uses 0.2)")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError("batch sizes must be positive")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0.0 < eval_crop_fraction <= 1.0:
            raise ValueError(f"eval_crop_fraction must be in (0, 1], got {eval_crop_fraction} "
                             "(0.875: resize 256 + centre crop 224; 1.0: no crop)")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = (Path(data_dir).expanduser() if data_dir
                         else Path.home() / ".cache" / "lit_kd" / dataset)
        self.download = download
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_split = val_split
        self.split_seed = split_seed
        self.augmentation = augmentation
        self.recipe: Literal["cifar", "imagenet", "none"] = (
            ("imagenet" if dataset == "folder" else "cifar") if recipe == "auto" else recipe)
        self._image_size = image_size or (224 if dataset == "folder" else 32)
        self.eval_crop_fraction = eval_crop_fraction
        self.in_memory = in_memory
        self.in_memory_limit_gb = in_memory_limit_gb
        self.num_workers = num_workers
        self.monitor_test = monitor_test
        self.return_index = augmentation == "fixed_teacher" if return_index is None else bool(return_index)
        self.meta_split = meta_split

        self._classes: list[str] | None = None
        self._layout: sources.ImageFolderLayout | None = None
        self._streamed = False
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._test: Dataset | None = None
        self._meta: Dataset | None = None
        self._train_eval: Dataset | None = None  # streamed folders: the training split without augmentation
        # Training randomness (shuffle order, augmentation) derives from one data seed plus
        # the epoch / number of training batches, both restored from checkpoints.
        self._data_seed: int | None = None
        self._train_batches = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._train_sampler: EpochShuffleSampler | None = None
        self._meta_sampler: EpochShuffleSampler | None = None

    # ------------------------------------------------------------------ properties

    @property
    def image_size(self) -> int:
        """Side length ``S`` of the images in a transformed batch."""
        return self._image_size

    @property
    def eval_style(self) -> Literal["cifar", "imagenet"]:
        """How evaluation views are made: ``"cifar"`` (the whole image at ``S``) or
        ``"imagenet"`` (resize to ``round(S / eval_crop_fraction)`` + centre crop ``S``)."""
        if self.recipe == "imagenet" or (self.recipe == "none" and self.dataset == "folder"):
            return "imagenet"
        return "cifar"

    @property
    def decode_size(self) -> int:
        """Shorter side the ImageNet-style eval resizes to before its centre crop."""
        return round(self._image_size / self.eval_crop_fraction)

    @property
    def classes(self) -> list[str]:
        """Class names, indexed by target (available before :meth:`setup`)."""
        if self._classes is None:
            self._classes = self._discover_classes()
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        """Number of classes (available right after construction, without loading images)."""
        if self.dataset in _STATIC_NUM_CLASSES:
            return _STATIC_NUM_CLASSES[self.dataset]
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        """Whether the data is decoded per sample in workers (set by :meth:`setup`)."""
        return self._streamed

    def _discover_classes(self) -> list[str]:
        if self.dataset == "digits":
            return [str(i) for i in range(10)]
        if self.dataset == "folder":
            return self._folder_layout().classes
        folder = sources.find_cifar_dir(self.dataset, self.data_dir)
        if folder is not None and (folder / ("batches.meta" if self.dataset == "cifar10" else "meta")).is_file():
            return sources.cifar_classes(self.dataset, folder)
        if self.dataset == "cifar10":
            return list(CIFAR10_CLASSES)
        raise RuntimeError(f"CIFAR-100 class names come from its meta file, which is not in '{self.data_dir}' "
                           "yet; call prepare_data()/setup() first")

    def _folder_layout(self) -> sources.ImageFolderLayout:
        if self._layout is None:
            self._layout = sources.scan_image_folder(self.data_dir)
        return self._layout

    # ------------------------------------------------------------------ loading

    def prepare_data(self) -> None:
        """Download CIFAR if asked to and missing (runs on one process per node)."""
        if self.download and self.dataset in ("cifar10", "cifar100"):
            if sources.find_cifar_dir(self.dataset, self.data_dir) is None:
                sources.download_cifar(self.dataset, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load (or index) the data once and carve the held-out split; later calls are no-ops."""
        if self._test is not None:
            return
        if self.dataset == "folder":
            self._setup_folder()
            return
        if self.in_memory is False:
            log.warning("in_memory=False is ignored for %s: it is always held in memory", self.dataset)
        if self.dataset == "digits":
            train, test = sources.load_digits(self._image_size)
        else:
            train, test = sources.load_cifar(self.dataset, self.data_dir, download=self.download)
            if self.eval_style == "cifar" and self._image_size != train.images.shape[-1]:
                train.images = resize_square(train.images, self._image_size)
                test.images = resize_square(test.images, self._image_size)
        self._classes = train.classes
        self._set_in_memory(train.images, train.targets, test.images, test.targets)

    def _set_in_memory(self, train_images: Tensor, train_targets: Tensor, test_images: Tensor,
                       test_targets: Tensor, val_images: Tensor | None = None,
                       val_targets: Tensor | None = None) -> None:
        index = self.return_index
        train_idx, val_idx, meta_idx = self._split_training(len(train_targets), separate_val=val_images is not None)
        self._train = InMemoryImageDataset(train_images, train_targets, train_idx, return_index=index)
        self._meta = (None if meta_idx is None
                      else InMemoryImageDataset(train_images, train_targets, meta_idx, return_index=index))
        if val_images is not None:
            self._val = InMemoryImageDataset(val_images, val_targets, return_index=index)
        else:
            self._val = (None if val_idx is None
                         else InMemoryImageDataset(train_images, train_targets, val_idx, return_index=index))
        self._test = InMemoryImageDataset(test_images, test_targets, return_index=index)
        self._streamed = False

    def _setup_folder(self) -> None:
        layout = self._folder_layout()
        self._classes = layout.classes
        held_out = layout.held_out
        if held_out is not None:
            log.info("folder %s has train/, val/ and test/: val/ is the validation split (val_split=%s is not "
                     "used), test/ the test split", layout.source.location, self.val_split)
        n_total = len(layout.train) + len(layout.eval) + (len(held_out) if held_out is not None else 0)
        if self.eval_style == "imagenet":
            # Store at the eval resize side, or at the native size when images are smaller
            # (e.g. 32 px CIFAR JPEGs): the batched crops resample to S anyway.
            store = min(self.decode_size, sources.probe_short_side(layout.source, layout.train.names))
        else:
            store = self._image_size
        need_gib = n_total * 3 * store * store / 2**30
        in_memory = self.in_memory if self.in_memory is not None else need_gib < self.in_memory_limit_gb
        log.info("folder %s: %d images, %s (%.2f GiB at %d px)", layout.source.location, n_total,
                 "in memory" if in_memory else "streamed", need_gib, store)
        if in_memory:
            train_images = sources.decode_images(layout.source, layout.train.names, store)
            test_images = sources.decode_images(layout.source, layout.eval.names, store)
            val = {}
            if held_out is not None:
                val = dict(val_images=sources.decode_images(layout.source, held_out.names, store),
                           val_targets=held_out.targets)
            self._set_in_memory(train_images, layout.train.targets, test_images, layout.eval.targets, **val)
            return
        train_idx, val_idx, meta_idx = self._split_training(len(layout.train), separate_val=held_out is not None)
        self._train = self._streaming_split(layout.train, train_idx, train=True)
        self._train_eval = self._streaming_split(layout.train, train_idx, train=False)
        self._meta = None if meta_idx is None else self._streaming_split(layout.train, meta_idx, train=True)
        if held_out is not None:
            self._val = self._streaming_split(held_out, None, train=False)
        else:
            self._val = None if val_idx is None else self._streaming_split(layout.train, val_idx, train=False)
        self._test = self._streaming_split(layout.eval, None, train=False)
        self._streamed = True

    def _split_training(self, n: int, separate_val: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Indices of the training set's training, held-out (``val_split``; none when the data has its
        own validation split) and meta-validation (``meta_split``) parts."""
        if separate_val:  # a separate validation folder: all of train/ is trained on
            train_idx, val_idx = torch.arange(n), None
        else:
            train_idx, val_idx = split_indices(n, self.val_split, self.split_seed)
        train_idx, meta_idx = self._split_meta(train_idx)
        return train_idx, val_idx, meta_idx

    def _split_meta(self, train_idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Carve the meta-validation part out of the training indices (``meta_split``)."""
        if self.meta_split <= 0:
            return train_idx, None
        keep, held = split_indices(len(train_idx), self.meta_split, self.split_seed + 1)
        if held is None or len(held) == 0 or len(keep) == 0:
            raise ValueError(
                f"meta_split={self.meta_split} leaves no meta-validation data: the training split has only "
                f"{len(train_idx)} sample(s) (after val_split={self.val_split}). Use more training data, "
                "lower val_split, or set meta_split=0 and replay a saved process instead of searching one."
            )
        return train_idx[keep], train_idx[held]

    @property
    def has_meta_split(self) -> bool:
        """Whether training batches come as ``{"train", "meta_val"}`` pairs (``meta_split > 0``)."""
        return self.meta_split > 0

    def _streaming_split(self, split: sources.FolderSplit, indices: Tensor | None,
                         train: bool) -> sources.StreamingImageDataset:
        names, targets = split.names, split.targets
        if indices is not None:
            names = [names[i] for i in indices.tolist()]
            targets = targets[indices]
        size = self._image_size
        eval_view = sources.sample_transform(f"eval_{self.eval_style}", size, self.eval_crop_fraction)
        if not train or self.recipe == "none":
            views = [eval_view]
        else:
            train_view = sources.sample_transform(self.recipe, size)
            views = {"consistent": [train_view], "independent": [train_view, train_view],
                     "fixed_teacher": [train_view, eval_view]}[self.augmentation]
        return sources.StreamingImageDataset(self._folder_layout().source, names, targets, views)

    # ------------------------------------------------------------------ loaders

    @property
    def data_seed(self) -> int:
        """Seed of the shuffle order and of the training augmentation.

        Taken from ``torch.initial_seed()`` when first needed (so
        ``lightning.seed_everything`` fixes it) and saved in checkpoints.
        """
        if self._data_seed is None:
            self._data_seed = int(torch.initial_seed()) & 0x7FFFFFFFFFFFFFFF
        return self._data_seed

    def _loader(self, dataset: Dataset | None, train: bool, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("KDDataModule.setup() has not run yet")
        batch_size = self.batch_size if train else self.eval_batch_size
        if train and sampler is None:
            sampler = self._train_sampler = EpochShuffleSampler(dataset, seed=self.data_seed)
        kwargs: dict[str, Any] = dict(batch_size=batch_size, sampler=sampler, drop_last=False,
                                      pin_memory=torch.cuda.is_available())
        loader_class = ResumableDataLoader if train else DataLoader
        if isinstance(dataset, InMemoryImageDataset):
            return loader_class(dataset, collate_fn=passthrough_collate, num_workers=0, **kwargs)
        return loader_class(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Shuffled training split (without the held-out part); with ``meta_split > 0`` a dict
        ``{"train", "meta_val"}`` that Lightning combines in ``max_size_cycle`` mode."""
        train = self._loader(self._train, train=True)
        if self._meta is None:
            return train
        self._meta_sampler = EpochShuffleSampler(self._meta, seed=_mix_seed(self.data_seed, 1))
        return {"train": train, "meta_val": self._loader(self._meta, train=True, sampler=self._meta_sampler)}

    def database_dataloader(self) -> DataLoader:
        """The training split (without the held-out part) in order, as evaluation views (no
        augmentation): the database of retrieval evaluation (:class:`lit_kd.callbacks.RetrievalEvaluation`)."""
        return self._loader(self._train_eval if self._streamed else self._train, train=False)

    @property
    def val_split_names(self) -> list[str]:
        """Names of the loaders :meth:`val_dataloader` returns, in order (``"val"``, ``"test"``).

        Methods log each under its own prefix (``val/acc``, ``test/acc``). Valid after ``setup``.
        """
        no_val = self._val is None if self._test is not None else self.val_split == 0
        if no_val:
            return ["test"]
        return ["val", "test"] if self.monitor_test else ["val"]

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Held-out split, plus the test split when ``monitor_test``; the test split if ``val_split == 0``."""
        test = self._loader(self._test, train=False)
        if self._val is None:
            return test
        val = self._loader(self._val, train=False)
        return [val, test] if self.monitor_test else val

    def test_dataloader(self) -> DataLoader:
        """Test split (CIFAR test set, digits' seeded test part, the folder's val/ or test/)."""
        return self._loader(self._test, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self._loader(self._test, train=False)

    # ------------------------------------------------------------------ device transforms

    def eval_view(self, images: Tensor) -> Tensor:
        """Deterministic evaluation view of stored (in-memory) images as float ``[0, 1]`` at ``S``.

        ``"cifar"`` style: the whole image (resized if it is not ``S``);
        ``"imagenet"`` style: the centre ``S / decode_size`` fraction resized to
        ``S`` (an exact slice when stored at :attr:`decode_size`).
        """
        side = images.shape[-1]
        if self.eval_style == "imagenet":
            crop = max(1, min(side, round(side * self._image_size / self.decode_size)))
            return center_crop_resize(images, crop, self._image_size)
        return center_crop_resize(images, min(images.shape[-2:]), self._image_size)

    def augment(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One random training view of stored (in-memory) images, float ``[0, 1]`` at ``S``."""
        if self.recipe == "cifar":
            if images.shape[-1] != self._image_size:
                images = self.eval_view(images)
            return random_crop_flip(images, padding=4, generator=generator)
        if self.recipe == "imagenet":
            return random_resized_crop_flip(images, self._image_size, generator=generator)
        return self.eval_view(images)

    def transform_batch(self, batch: dict[str, Tensor] | tuple | list, train: bool,
                        generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Turn a loader batch into the model batch ``{"image", "teacher_image", "target"}``.

        Training batches (``train=True``) are augmented per ``recipe`` and
        ``augmentation``; others get the evaluation view, shared by both
        networks. Streamed folder batches arrive already augmented by the
        workers, so they are only converted to float. Accepts a dict with
        ``"image"``/``"target"`` (optionally ``"teacher_image"``) or an
        ``(images, targets)`` pair.

        Args:
            batch: the batch as produced by this module's loaders.
            train: whether to apply training augmentation.
            generator: optional generator (on the batch's device) for reproducible augmentation.
        """
        if isinstance(batch, (tuple, list)):
            batch = {"image": batch[0], "target": batch[1]}
        images, target = batch["image"], batch["target"]
        if self._streamed:
            image = to_float(images)
            teacher = batch.get("teacher_image")
            teacher_image = image if teacher is None or teacher is images else to_float(teacher)
        elif not train or self.recipe == "none":
            image = self.eval_view(images)
            teacher_image = image
        else:
            image = self.augment(images, generator)
            if self.augmentation == "consistent":
                teacher_image = image
            elif self.augmentation == "independent":
                teacher_image = self.augment(images, generator)
            else:
                teacher_image = self.eval_view(images)
        out = {"image": image, "teacher_image": teacher_image, "target": target.long()}
        if "index" in batch:
            out["index"] = batch["index"]
        return out

    def training_generator(self, device: torch.device | str) -> torch.Generator:
        """Generator for the next training batch on ``device``, reseeded per batch.

        The seed mixes :attr:`data_seed`, the process rank and the number of
        training batches seen so far, so augmentation is reproducible, differs
        between DDP ranks, and continues exactly after resuming from a checkpoint.
        """
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self._generators[device].manual_seed(_mix_seed(self.data_seed, rank, self._train_batches))
        self._train_batches += 1
        return self._generators[device]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, Any]:
        """Augment on the device: training batches while the trainer is training, eval views otherwise."""
        if isinstance(batch, dict) and "meta_val" in batch:  # meta_split > 0: transform both halves
            return {key: self.on_after_batch_transfer(part, dataloader_idx) for key, part in batch.items()}
        train = self.trainer is not None and bool(self.trainer.training)
        generator = None
        if train and not self._streamed:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch["image"]
            generator = self.training_generator(images.device)
        return self.transform_batch(batch, train=train, generator=generator)

    def fingerprint(self, split: Literal["train"] = "train") -> dict[str, Any]:
        """What identifies the samples behind ``batch["index"]`` and their evaluation view (after
        :meth:`setup`), for caches keyed by sample index (e.g. :class:`lit_kd.teacher_cache.TeacherCache`).

        Holds the data set's name, the split, the number of stored samples, a SHA-256 of all labels
        and of eight evenly spaced stored images (in-memory data) or of the file names (streamed
        folders), and the evaluation view's style, size and (ImageNet style) crop fraction. Only the training split is supported.
        """
        import hashlib

        if split != "train":
            raise ValueError(f"only the 'train' split has a fingerprint, got {split!r}")
        if self._train is None:
            raise RuntimeError("KDDataModule.setup() has not run yet")
        eval_view: dict[str, Any] = {"style": self.eval_style, "image_size": self._image_size}
        if self.eval_style == "imagenet":  # the crop decides which pixels the fixed teacher saw
            eval_view["crop_fraction"] = self.eval_crop_fraction
        info: dict[str, Any] = {"dataset": self.dataset, "split": split, "eval_view": eval_view}
        if isinstance(self._train, InMemoryImageDataset):
            images, targets = self._train.images, self._train.targets
            positions = torch.linspace(0, len(images) - 1, steps=min(8, len(images))).round().long().unique()
            info.update(num_samples=len(images), stored_shape=list(images.shape[1:]),
                        samples_sha256=hashlib.sha256(images[positions].contiguous().numpy().tobytes()).hexdigest())
        else:
            names = getattr(self._train, "names", [])
            targets = getattr(self._train, "targets", torch.zeros(0, dtype=torch.int64))
            info.update(num_samples=len(names),
                        names_sha256=hashlib.sha256("\n".join(names).encode()).hexdigest())
        labels = torch.as_tensor(targets, dtype=torch.int64).contiguous()
        info["labels_sha256"] = hashlib.sha256(labels.numpy().tobytes()).hexdigest()
        return info

    def state_dict(self) -> dict[str, Any]:
        """Data seed and training-batch count, so a resumed run continues the same randomness."""
        return {"data_seed": self.data_seed, "train_batches": self._train_batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self._data_seed = int(state_dict.get("data_seed", self.data_seed))
        self._train_batches = int(state_dict.get("train_batches", 0))
        if self._train_sampler is not None:
            self._train_sampler.seed = self._data_seed
        if self._meta_sampler is not None:
            self._meta_sampler.seed = _mix_seed(self._data_seed, 1)
