"""Write small public data sets as ImageNet-style folders that :class:`~lit_kd.data.KDDataModule` reads.

The function-matching presets (Beyer et al., CVPR 2022, Table 4) use Flowers102 and Oxford-IIIT
Pets. torchvision downloads both (network access once); :func:`prepare` copies their images,
unchanged, into ``train/<class>/``, ``val/<class>/`` and ``test/<class>/``:

* ``flowers102``: the official splits, train (1,020) / val (1,020) / test (6,149); the layout has
  all three, so ``val/`` is the validation split.
* ``pets``: trainval (3,680) -> ``train/``, test (3,669) -> ``test/``; hold out 10 % of ``train/``
  with ``val_split: 0.1``, as the paper's ``train[90%:]`` minival.

Class folders are named ``<label:03d>_<name>`` so that their sorted order is the label order.
Command line: ``lit-kd prepare flowers102 --out ~/.cache/lit_kd/flowers102``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DATASETS", "prepare", "write_image_folder"]

#: name -> (torchvision class, {our split: torchvision split})
DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "flowers102": ("Flowers102", {"train": "train", "val": "val", "test": "test"}),
    "pets": ("OxfordIIITPet", {"train": "trainval", "test": "test"}),
}


def class_folder(label: int, name: str | None = None) -> str:
    """``007`` or ``007_name``: zero-padded so sorted folder names keep the label order."""
    clean = "" if name is None else "_" + "".join(c if c.isalnum() or c in "-." else "_" for c in name)
    return f"{label:03d}{clean}"


def write_image_folder(out: str | os.PathLike[str], split: str, items: Iterable[tuple[Any, int]],
                       class_names: Sequence[str] | None = None) -> int:
    """Write ``(image, label)`` pairs to ``out/split/<class>/``; return how many were written.

    ``image`` is a file path (copied byte for byte, hard-linked when possible) or a PIL image (saved
    as PNG). Existing files are kept, so an interrupted preparation can simply be run again.
    """
    root = Path(out).expanduser() / split
    count = 0
    for position, (image, label) in enumerate(items):
        label = int(label)
        if class_names is not None and not 0 <= label < len(class_names):
            raise ValueError(f"label {label} is outside the {len(class_names)} class names")
        folder = root / class_folder(label, None if class_names is None else class_names[label])
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(image, (str, os.PathLike)):
            source = Path(image)
            target = folder / source.name
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
        else:
            target = folder / f"{position:06d}.png"
            if not target.exists():
                image.save(target)
        count += 1
    if count == 0:
        raise ValueError(f"no images for split {split!r}")
    return count


def _pairs(dataset: Any) -> Iterable[tuple[Any, int]]:
    """(file path, label) from torchvision's file lists when present, else (PIL image, label)."""
    files = getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
    labels = getattr(dataset, "_labels", None)
    if files is not None and labels is not None and len(files) == len(labels):
        return zip(files, labels)
    return (dataset[i] for i in range(len(dataset)))


def prepare(name: str, out: str | os.PathLike[str], download_root: str | os.PathLike[str] | None = None,
            download: bool = True) -> dict[str, int]:
    """Download ``name`` with torchvision (into ``download_root``, default ``out/_download``) and
    write it under ``out`` as an image folder. Returns the image count per split."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    import torchvision.datasets

    class_name, splits = DATASETS[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    out = Path(out).expanduser()
    root = Path(download_root).expanduser() if download_root is not None else out / "_download"
    counts = {}
    for split, source_split in splits.items():
        try:
            dataset = dataset_class(str(root), split=source_split, download=download)
        except RuntimeError as err:
            raise RuntimeError(f"{class_name} is not in {root} ({err}). Run with network access (download=True) "
                               f"or put torchvision's {class_name} files there") from err
        names = getattr(dataset, "classes", None)
        counts[split] = write_image_folder(out, split, _pairs(dataset), names)
    return counts
