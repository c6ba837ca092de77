"""Folders too large for memory: decoded and augmented per sample inside DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor
from torch.utils.data import Dataset

from lit_kd.data.augment import CROP_FRACTION
from lit_kd.data.decode import decode_image_bytes
from lit_kd.data.folders import FileSource, FolderSplit, ImageFolderLayout
from lit_kd.data.splits import Splits, split_training

__all__ = ["sample_transform", "StreamingImageDataset", "streamed_splits"]


def sample_transform(
    kind: Literal["cifar", "imagenet", "eval_cifar", "eval_imagenet"], size: int,
    crop_fraction: float = CROP_FRACTION,
) -> Callable[[Tensor], Tensor]:
    """Per-sample torchvision transform on a decoded ``uint8`` image, for streamed folders.

    * ``"imagenet"``: ``RandomResizedCrop(size)`` + horizontal flip;
    * ``"cifar"``: resize/centre-crop to ``size``, random crop with padding 4 + flip;
    * ``"eval_imagenet"``: resize the shorter side to ``round(size / crop_fraction)`` + centre crop;
    * ``"eval_cifar"``: resize the shorter side to ``size`` + centre crop.

    All return ``uint8`` ``3×size×size``.
    """
    from torchvision.transforms import v2

    steps: dict[str, list] = {
        "imagenet": [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()],
        "cifar": [v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.RandomCrop(size, padding=4),
                  v2.RandomHorizontalFlip()],
        "eval_imagenet": [v2.Resize(round(size / crop_fraction), antialias=True), v2.CenterCrop(size)],
        "eval_cifar": [v2.Resize(size, antialias=True), v2.CenterCrop(size)],
    }
    if kind not in steps:
        raise ValueError(f"unknown transform kind {kind!r}")
    return v2.Compose(steps[kind])


class StreamingImageDataset(Dataset):
    """Decodes one image per item from a :class:`FileSource` and applies per-sample views.

    Items are dicts ``{"image": uint8 3×S×S, "target": int}`` plus
    ``"teacher_image"`` when a second view is given (independent / fixed-teacher
    augmentation): both views come from the same decoded image, and ``"index"`` (the
    item's position in this split) with ``return_index``.

    Args:
        source: reads the files (picklable, so it works in DataLoader workers).
        names: file names of this split.
        targets: class indices, aligned with ``names``.
        views: one or two callables mapping the decoded image to a view.
        return_index: items also carry their position in this split.
    """

    def __init__(self, source: FileSource, names: Sequence[str], targets: Tensor,
                 views: Sequence[Callable[[Tensor], Tensor]], return_index: bool = False) -> None:
        if not 1 <= len(views) <= 2:
            raise ValueError("views must hold one or two transforms")
        if len(names) != len(targets):
            raise ValueError("names and targets differ in length")
        self.source, self.names, self.targets, self.views = source, list(names), targets, list(views)
        self.return_index = return_index

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        where = self.source.describe(self.names[index])
        try:
            data = self.source.read(self.names[index])
        except OSError as err:
            raise OSError(f"cannot read '{where}': {err}") from err
        image = decode_image_bytes(data, where)
        item: dict[str, Tensor | int] = {"image": self.views[0](image), "target": int(self.targets[index])}
        if len(self.views) == 2:
            item["teacher_image"] = self.views[1](image)
        if self.return_index:
            item["index"] = index
        return item


def streamed_splits(layout: ImageFolderLayout, image_size: int, recipe: str, augmentation: str, eval_style: str,
                    crop_fraction: float, val_split: float, meta_split: float, seed: int,
                    return_index: bool = False) -> Splits:
    """The splits of a folder read per sample: training views per ``recipe`` and ``augmentation``
    (a second view for the teacher unless consistent), evaluation views elsewhere; with
    ``return_index`` items carry their position in their split."""
    eval_view = sample_transform(f"eval_{eval_style}", image_size, crop_fraction)  # type: ignore[arg-type]
    if recipe == "none":
        train_views = [eval_view]
    else:
        train_view = sample_transform(recipe, image_size)  # type: ignore[arg-type]
        train_views = {"consistent": [train_view], "independent": [train_view, train_view],
                       "fixed_teacher": [train_view, eval_view]}[augmentation]

    def dataset(split: FolderSplit, indices: Tensor | None, train: bool) -> StreamingImageDataset:
        names, targets = split.names, split.targets
        if indices is not None:
            names, targets = [names[i] for i in indices.tolist()], targets[indices]
        return StreamingImageDataset(layout.source, names, targets, train_views if train else [eval_view],
                                     return_index=return_index)

    held_out = layout.held_out
    train_idx, val_idx, meta_idx = split_training(len(layout.train), val_split, meta_split, seed,
                                                  separate_val=held_out is not None)
    if held_out is not None:
        val = dataset(held_out, None, train=False)
    else:
        val = None if val_idx is None else dataset(layout.train, val_idx, train=False)
    return Splits(train=dataset(layout.train, train_idx, train=True), test=dataset(layout.eval, None, train=False),
                  val=val, meta=None if meta_idx is None else dataset(layout.train, meta_idx, train=True),
                  train_eval=dataset(layout.train, train_idx, train=False), streamed=True)
