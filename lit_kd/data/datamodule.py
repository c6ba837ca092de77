"""``KDDataModule``: data for distillation, with teacher/student-consistent augmentation.

Loaders yield raw ``uint8`` batches (cheap to move to the device); all augmentation happens batched
on the training device in :meth:`KDDataModule.on_after_batch_transfer`, which produces the
:class:`~lit_kd.contract.KDBatch` every lit_kd method reads (float images in [0, 1], not normalized;
``teacher_image is image`` unless the teacher is augmented separately; ``index`` with
``return_index``). The module declares what methods may know of the data in :meth:`data_info`.

The parts live beside it: readers (:mod:`~lit_kd.data.cifar`, :mod:`~lit_kd.data.digits`,
:mod:`~lit_kd.data.folders` + :mod:`~lit_kd.data.decode`), splitting (:mod:`~lit_kd.data.splits`),
datasets and loaders (:mod:`~lit_kd.data.loaders`, :mod:`~lit_kd.data.streaming`), and the views
(:mod:`~lit_kd.data.views`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lit_kd.contract import Augmentation, DataInfo, KDBatch, check_lightning_package
from lit_kd.data.augment import CROP_FRACTION, resize_square
from lit_kd.data.cifar import cifar_classes, find_cifar_dir, load_cifar
from lit_kd.data.decode import decode_images, probe_short_side
from lit_kd.data.digits import load_digits
from lit_kd.data.folders import ImageFolderLayout, scan_image_folder
from lit_kd.data.loaders import EpochShuffleSampler, InMemoryImageDataset, ResumableDataLoader, passthrough_collate
from lit_kd.data.splits import Splits, in_memory_splits
from lit_kd.data.streaming import streamed_splits
from lit_kd.data.views import STRONG_VIEW_NAME, BatchViews, EvalStyle, StrongView
from lit_kd.seeding import base_seed, mix_seed

log = logging.getLogger(__name__)

__all__ = ["KDDataModule"]

DatasetName = Literal["digits", "cifar10", "cifar100", "folder"]
Recipe = Literal["auto", "cifar", "imagenet", "none"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STATIC_NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


class KDDataModule(L.LightningDataModule):
    """Image classification data for knowledge distillation.

    Loaders produce ``uint8`` batches; :meth:`on_after_batch_transfer` turns
    them on the device into :class:`~lit_kd.contract.KDBatch` objects with
    float images in ``[0, 1]`` (not normalized). Training batches are augmented
    (batched, no per-sample Python loop) according to ``recipe``; how the
    teacher's view relates to the student's is set by ``augmentation``
    (:mod:`lit_kd.data.views`). What methods may know of the data is declared by
    :meth:`data_info`.

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
            teacher (``batch.teacher_image is batch.image``);
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
        return_index: batches also carry ``index``: for in-memory data each sample's
            position in the stored images of its split (held-out samples share the
            training store and have their own positions), for streamed folders its
            position in its split. ``None``: only with ``augmentation="fixed_teacher"``,
            where teacher-output caches need it. Methods with per-sample state (CRD's
            memory bank) need it too.
        meta_split: fraction of the training split (what ``val_split`` leaves) set aside as
            *meta-validation* data for bi-level methods (DistPro: ``0.2``, the 80/20 split of its
            official code), drawn with ``split_seed``. With ``meta_split > 0`` every training batch
            carries a meta-validation batch as ``KDBatch.meta`` (the meta-validation loader
            cycling; both augmented with the training recipe); ``0`` keeps plain training batches.
        strong_view: ``"randaugment"``: every training batch also carries a strongly augmented view
            of the same samples in ``KDBatch.views["strong"]``: the student's crop and flip followed
            by RandAugment(2, 10) as in MLKD's code (:mod:`lit_kd.data.randaugment`), made on the
            device, drawn from the training generator (reproducible and resumable); declared as
            ``DataInfo(views=("strong",))``. Evaluation batches carry no extra view. ``None``: off.
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
        eval_crop_fraction: float = CROP_FRACTION,
        in_memory: bool | None = None,
        in_memory_limit_gb: float = 4.0,
        num_workers: int = 4,
        monitor_test: bool = True,
        return_index: bool | None = None,
        meta_split: float = 0.0,
        strong_view: StrongView | None = None,
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
        if strong_view not in (None, "randaugment"):
            raise ValueError(f"strong_view must be 'randaugment' or None, got {strong_view!r}")
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
        self.strong_view = strong_view

        self._classes: list[str] | None = None
        self._layout: ImageFolderLayout | None = None
        self._splits: Splits | None = None
        # Training randomness (shuffle order, augmentation) derives from one data seed plus
        # the epoch / number of training batches, both restored from checkpoints.
        self._data_seed: int | None = None
        self._train_batches = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._train_sampler: EpochShuffleSampler | None = None
        self._meta_sampler: EpochShuffleSampler | None = None

    # ------------------------------------------------------------------ what the data is

    @property
    def image_size(self) -> int:
        """Side length ``S`` of the images in a transformed batch."""
        return self._image_size

    @property
    def eval_style(self) -> EvalStyle:
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
        if self.dataset in STATIC_NUM_CLASSES:
            return STATIC_NUM_CLASSES[self.dataset]
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        """Whether the data is decoded per sample in workers (set by :meth:`setup`)."""
        return self._splits is not None and self._splits.streamed

    @property
    def splits(self) -> Splits:
        """The datasets of every split (after :meth:`setup`)."""
        if self._splits is None:
            raise RuntimeError("KDDataModule.setup() has not run yet")
        return self._splits

    @property
    def has_meta_split(self) -> bool:
        """Whether training batches carry a meta-validation batch (``meta_split > 0``)."""
        return self.meta_split > 0

    @property
    def val_split_names(self) -> list[str]:
        """Names of the loaders :meth:`val_dataloader` returns, in order (``"val"``, ``"test"``).

        Methods log each under its own prefix (``val/acc``, ``test/acc``). Valid after ``setup``.
        """
        no_val = self._splits.val is None if self._splits is not None else self.val_split == 0
        if no_val:
            return ["test"]
        return ["val", "test"] if self.monitor_test else ["val"]

    @property
    def views(self) -> BatchViews:
        """How stored batches become the networks' views (:mod:`lit_kd.data.views`)."""
        return BatchViews(recipe=self.recipe, augmentation=self.augmentation, image_size=self._image_size,
                          eval_style=self.eval_style, decode_size=self.decode_size, streamed=self.streamed,
                          strong_view=self.strong_view)

    @property
    def trainer(self) -> Any:
        """The Trainer this data module is attached to (set by the Trainer)."""
        return self.__dict__.get("_attached_trainer")

    @trainer.setter
    def trainer(self, trainer: Any) -> None:
        # A pytorch_lightning Trainer attaches its data module first; its own error comes later ("Expected a parent").
        check_lightning_package(trainer, "KDDataModule is a `lightning` data module; the Trainer given it")
        self.__dict__["_attached_trainer"] = trainer

    def data_info(self) -> DataInfo:
        """What lit_kd methods may know about this data (the :class:`~lit_kd.contract.DataInfo` protocol)."""
        return DataInfo(
            num_classes=self.num_classes, image_size=self._image_size,
            classes=tuple(self._classes) if self._classes is not None else None,
            val_split_names=tuple(self.val_split_names), augmentation=self.augmentation,
            has_meta_split=self.has_meta_split, views=(STRONG_VIEW_NAME,) if self.strong_view else (),
            fingerprint=self.fingerprint, training_samples=self.training_samples if self.return_index else None,
            database_dataloader=self.database_dataloader,
            eval_batch=lambda batch: self.transform_batch(batch, train=False), source=f"KDDataModule({self.dataset})",
        )

    def _discover_classes(self) -> list[str]:
        if self.dataset == "digits":
            return [str(i) for i in range(10)]
        if self.dataset == "folder":
            return self._folder_layout().classes
        folder = find_cifar_dir(self.dataset, self.data_dir)
        if folder is not None and (folder / ("batches.meta" if self.dataset == "cifar10" else "meta")).is_file():
            return cifar_classes(self.dataset, folder)
        if self.dataset == "cifar10":
            return list(CIFAR10_CLASSES)
        raise RuntimeError(f"CIFAR-100 class names come from its meta file, which is not in '{self.data_dir}' "
                           "yet; call prepare_data()/setup() first")

    def _folder_layout(self) -> ImageFolderLayout:
        if self._layout is None:
            self._layout = scan_image_folder(self.data_dir)
        return self._layout

    # ------------------------------------------------------------------ loading

    def prepare_data(self) -> None:
        """Download CIFAR if asked to and missing (runs on one process per node)."""
        if self.download and self.dataset in ("cifar10", "cifar100"):
            if find_cifar_dir(self.dataset, self.data_dir) is None:
                from lit_kd.data.cifar import download_cifar

                download_cifar(self.dataset, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load (or index) the data once and carve the held-out split; later calls are no-ops."""
        if self._splits is not None:
            return
        if self.dataset == "folder":
            self._splits = self._folder_splits()
            return
        if self.in_memory is False:
            log.warning("in_memory=False is ignored for %s: it is always held in memory", self.dataset)
        if self.dataset == "digits":
            train, test = load_digits(self._image_size)
        else:
            train, test = load_cifar(self.dataset, self.data_dir, download=self.download)
            if self.eval_style == "cifar" and self._image_size != train.images.shape[-1]:
                train.images = resize_square(train.images, self._image_size)
                test.images = resize_square(test.images, self._image_size)
        self._classes = train.classes
        self._splits = in_memory_splits(train.images, train.targets, test.images, test.targets, self.val_split,
                                        self.meta_split, self.split_seed, self.return_index)

    def _folder_splits(self) -> Splits:
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
            store = min(self.decode_size, probe_short_side(layout.source, layout.train.names))
        else:
            store = self._image_size
        need_gib = n_total * 3 * store * store / 2**30
        in_memory = self.in_memory if self.in_memory is not None else need_gib < self.in_memory_limit_gb
        log.info("folder %s: %d images, %s (%.2f GiB at %d px)", layout.source.location, n_total,
                 "in memory" if in_memory else "streamed", need_gib, store)
        if not in_memory:
            return streamed_splits(layout, self._image_size, self.recipe, self.augmentation, self.eval_style,
                                   self.eval_crop_fraction, self.val_split, self.meta_split, self.split_seed,
                                   return_index=self.return_index)
        val = {}
        if held_out is not None:
            val = dict(val_images=decode_images(layout.source, held_out.names, store), val_targets=held_out.targets)
        return in_memory_splits(decode_images(layout.source, layout.train.names, store), layout.train.targets,
                                decode_images(layout.source, layout.eval.names, store), layout.eval.targets,
                                self.val_split, self.meta_split, self.split_seed, self.return_index, **val)

    # ------------------------------------------------------------------ loaders

    @property
    def data_seed(self) -> int:
        """Seed of the shuffle order and of the training augmentation.

        Taken from ``torch.initial_seed()`` when first needed (so
        ``lightning.seed_everything`` fixes it) and saved in checkpoints.
        """
        if self._data_seed is None:
            self._data_seed = base_seed()
        return self._data_seed

    def _loader(self, dataset: Dataset, train: bool, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        batch_size = self.batch_size if train else self.eval_batch_size
        if train and sampler is None:
            sampler = self._train_sampler = EpochShuffleSampler(dataset, seed=self.data_seed)
        kwargs: dict[str, Any] = dict(batch_size=batch_size, sampler=sampler, drop_last=False,
                                      pin_memory=torch.cuda.is_available())
        loader_class = DataLoader
        if train:
            loader_class = ResumableDataLoader
            kwargs["epoch_batches"] = self._train_batches_per_epoch
        if isinstance(dataset, InMemoryImageDataset):
            return loader_class(dataset, collate_fn=passthrough_collate, num_workers=0, **kwargs)
        return loader_class(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def _train_batches_per_epoch(self, length: int) -> int:
        """The batches a fit runs per epoch from a training loader of ``length`` batches (the
        Trainer's ``limit_train_batches``: an integer is a count, a float a fraction)."""
        trainer = self.trainer
        limit = getattr(trainer, "limit_train_batches", None) if trainer is not None else None
        if limit is None:
            return length
        if isinstance(limit, int):
            return min(length, limit)
        return int(length * limit)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """Shuffled training split (without the held-out part); with ``meta_split > 0`` a dict
        ``{"train", "meta_val"}`` that Lightning combines in ``max_size_cycle`` mode (one
        :class:`KDBatch` with ``meta`` after the transfer)."""
        splits = self.splits
        train = self._loader(splits.train, train=True)
        if splits.meta is None:
            return train
        self._meta_sampler = EpochShuffleSampler(splits.meta, seed=mix_seed(self.data_seed, 1))
        return {"train": train, "meta_val": self._loader(splits.meta, train=True, sampler=self._meta_sampler)}

    def database_dataloader(self) -> DataLoader:
        """The training split (without the held-out part) in order, as evaluation views (no
        augmentation): the database of retrieval evaluation (:class:`lit_kd.callbacks.RetrievalEvaluation`)."""
        return self._loader(self.splits.database, train=False)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Held-out split, plus the test split when ``monitor_test``; the test split if ``val_split == 0``."""
        splits = self.splits
        test = self._loader(splits.test, train=False)
        if splits.val is None:
            return test
        val = self._loader(splits.val, train=False)
        return [val, test] if self.monitor_test else val

    def test_dataloader(self) -> DataLoader:
        """Test split (CIFAR test set, digits' seeded test part, the folder's val/ or test/)."""
        return self._loader(self.splits.test, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self._loader(self.splits.test, train=False)

    # ------------------------------------------------------------------ device transforms

    def eval_view(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic evaluation view of stored (in-memory) images as float ``[0, 1]`` at ``S``."""
        return self.views.eval_view(images)

    def augment(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random training view of stored (in-memory) images, float ``[0, 1]`` at ``S``."""
        return self.views.augment(images, generator)

    def transform_batch(self, batch: Any, train: bool, generator: torch.Generator | None = None) -> KDBatch:
        """Turn a loader batch into the :class:`KDBatch` the networks read (see :class:`BatchViews`).

        Args:
            batch: the batch as produced by this module's loaders (a dict with ``"image"``/``"target"``,
                optionally ``"teacher_image"``/``"index"``, or an ``(images, targets)`` pair).
            train: whether to apply training augmentation.
            generator: optional generator (on the batch's device) for reproducible augmentation.
        """
        return self.views(batch, train=train, generator=generator)

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
        self._generators[device].manual_seed(mix_seed(self.data_seed, rank, self._train_batches))
        self._train_batches += 1
        return self._generators[device]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> KDBatch:
        """Augment on the device: training batches while the trainer is training, eval views otherwise."""
        if isinstance(batch, dict) and "meta_val" in batch:  # meta_split > 0: both halves, one KDBatch
            train = self.on_after_batch_transfer(batch["train"], dataloader_idx)
            return KDBatch(image=train.image, target=train.target, teacher_image=train.teacher_image,
                           index=train.index, views=train.views,
                           meta=self.on_after_batch_transfer(batch["meta_val"], dataloader_idx))
        train = self.trainer is not None and bool(self.trainer.training)
        generator = None
        if train and (not self.streamed or self.strong_view is not None):  # streamed crops come from workers
            images = batch[0] if isinstance(batch, (tuple, list)) else batch["image"]
            generator = self.training_generator(images.device)
        return self.transform_batch(batch, train=train, generator=generator)

    # ------------------------------------------------------------------ identity and state

    def fingerprint(self, split: Literal["train"] = "train") -> dict[str, Any]:
        """What identifies the samples behind ``KDBatch.index`` and their evaluation view (after
        :meth:`setup`), for caches keyed by sample index (e.g. function matching's teacher cache).

        Holds the data set's name, the split, the number of stored samples, a SHA-256 of all labels
        and of eight evenly spaced stored images (in-memory data) or of the file names (streamed
        folders), and the evaluation view's style, size and (ImageNet style) crop fraction. Only the
        training split is supported.
        """
        if split != "train":
            raise ValueError(f"only the 'train' split has a fingerprint, got {split!r}")
        train = self.splits.train
        eval_view: dict[str, Any] = {"style": self.eval_style, "image_size": self._image_size}
        if self.eval_style == "imagenet":  # the crop decides which pixels the fixed teacher saw
            eval_view["crop_fraction"] = self.eval_crop_fraction
        info: dict[str, Any] = {"dataset": self.dataset, "split": split, "eval_view": eval_view}
        if isinstance(train, InMemoryImageDataset):
            images, targets = train.images, train.targets
            positions = torch.linspace(0, len(images) - 1, steps=min(8, len(images))).round().long().unique()
            info.update(num_samples=len(images), stored_shape=list(images.shape[1:]),
                        samples_sha256=hashlib.sha256(images[positions].contiguous().numpy().tobytes()).hexdigest())
        else:
            names = getattr(train, "names", [])
            targets = getattr(train, "targets", torch.zeros(0, dtype=torch.int64))
            info.update(num_samples=len(names),
                        names_sha256=hashlib.sha256("\n".join(names).encode()).hexdigest())
        labels = torch.as_tensor(targets, dtype=torch.int64).contiguous()
        info["labels_sha256"] = hashlib.sha256(labels.numpy().tobytes()).hexdigest()
        return info

    def training_samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index, target)`` of every training sample (after :meth:`setup`): the ``KDBatch.index``
        values the training batches carry (with ``return_index``), in increasing order, and each
        sample's class. Declared in :meth:`data_info` when ``return_index`` is on."""
        train = self.splits.train
        if isinstance(train, InMemoryImageDataset):
            index = train.indices if train.indices is not None else torch.arange(len(train.targets))
            return index.clone(), torch.as_tensor(train.targets)[index].long()
        targets = torch.as_tensor(getattr(train, "targets", torch.zeros(0, dtype=torch.int64))).long()
        return torch.arange(len(train)), targets.clone()

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
            self._meta_sampler.seed = mix_seed(self._data_seed, 1)
