"""Readers for the data sets of :class:`~lit_kd.data.datamodule.KDDataModule`.

In-memory readers return :class:`LabeledImages` (``uint8`` images
``N×3×H×W`` plus ``int64`` targets):

* :func:`load_cifar` reads CIFAR-10/100 from torchvision's python-pickle layout
  (downloading with torchvision only when asked to);
* :func:`load_digits` uses scikit-learn's embedded 8×8 digits (offline);
* :func:`scan_image_folder` + :func:`decode_images` read an ImageNet-style
  ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``) tree from a directory
  or a ``.zip`` file.

Folders too large to decode into memory are read by
:class:`StreamingImageDataset`, which decodes and augments per sample inside
DataLoader workers.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import shlex
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_kd.data.augment import resize_square

log = logging.getLogger(__name__)

__all__ = [
    "IMG_EXTENSIONS",
    "LabeledImages",
    "find_cifar_dir",
    "download_cifar",
    "load_cifar",
    "cifar_classes",
    "load_digits",
    "FileSource",
    "DirectorySource",
    "ZipSource",
    "FolderSplit",
    "ImageFolderLayout",
    "scan_image_folder",
    "decode_image_bytes",
    "fit_square",
    "probe_short_side",
    "decode_images",
    "sample_transform",
    "StreamingImageDataset",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class LabeledImages:
    """A labelled image set held in memory.

    Attributes:
        images: ``uint8`` tensor ``N×3×H×W``.
        targets: ``int64`` tensor ``N`` of class indices.
        classes: class names; ``targets`` index into it.
    """

    images: Tensor
    targets: Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N×3×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.targets.dtype != torch.int64 or self.targets.shape != (self.images.shape[0],):
            raise ValueError(f"targets must be int64 of shape ({self.images.shape[0]},), got {self.targets.dtype} "
                             f"{tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    tarball: str
    tar_flags: str


_CIFAR = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        tarball="cifar-10-batches-py.tar.xz",
        tar_flags="-xJf",
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        tarball="cifar-100-python.tar.gz",
        tar_flags="-xzf",
    ),
}

CifarName = Literal["cifar10", "cifar100"]


def _cifar_spec(name: str) -> _CifarSpec:
    try:
        return _CIFAR[name]
    except KeyError:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of {sorted(_CIFAR)}") from None


def find_cifar_dir(name: CifarName, data_dir: str | os.PathLike[str]) -> Path | None:
    """Locate the pickle folder of ``name`` given ``data_dir``.

    ``data_dir`` may be the folder itself (``.../cifar-10-batches-py``) or its
    parent. Returns ``None`` if neither holds it.
    """
    spec = _cifar_spec(name)
    root = Path(data_dir).expanduser()
    if root.is_dir() and (root.name == spec.folder or (root / spec.meta_file).exists()):
        return root
    if (root / spec.folder).is_dir():
        return root / spec.folder
    return None


def _missing_cifar_message(spec: _CifarSpec, root: Path) -> str:
    target = shlex.quote(str(root))
    return (
        f"{spec.title} not found: looked for '{root / spec.folder}' (and for the pickles directly in '{root}').\n"
        f"Fix one of:\n"
        f"  * set data.data_dir to the folder that holds {spec.folder}/ (or to that folder itself);\n"
        f"  * set data.download=true (needs network access; torchvision downloads it into '{root}');\n"
        f"  * unpack a tarball you have: mkdir -p {target} && tar {spec.tar_flags} {spec.tarball} -C {target}\n"
        f"    (for the official cifar-*-python.tar.gz: tar -xzf <file> -C {target})."
    )


def download_cifar(name: CifarName, root: str | os.PathLike[str]) -> Path:
    """Download ``name`` with torchvision into ``root`` (needs network access); return its folder."""
    import torchvision

    spec = _cifar_spec(name)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    log.info("downloading %s into %s", spec.title, root)
    try:
        cls(str(root), train=True, download=True)
    except Exception as err:  # network errors come in many types
        raise RuntimeError(f"downloading {spec.title} into '{root}' failed: {err}\n"
                           + _missing_cifar_message(spec, root)) from err
    return root / spec.folder


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"cannot read CIFAR file '{path}' (corrupt or not a CIFAR pickle): {err}") from err


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        raise ValueError(f"CIFAR file '{path}' lacks the keys b'data' and {label_key!r}")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"CIFAR file '{path}' has data of shape {data.shape} and {labels.shape[0]} labels; "
                         "expected N×3072 and N labels")
    return data, labels


def cifar_classes(name: CifarName, folder: str | os.PathLike[str]) -> list[str]:
    """Class names from the meta file of a CIFAR folder found by :func:`find_cifar_dir`."""
    spec = _cifar_spec(name)
    meta = _unpickle(Path(folder) / spec.meta_file)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(spec.names_key, [])]
    if len(names) != spec.num_classes:
        raise ValueError(f"'{Path(folder) / spec.meta_file}' lists {len(names)} class names, "
                         f"expected {spec.num_classes}")
    return names


def load_cifar(
    name: CifarName, data_dir: str | os.PathLike[str], download: bool = False
) -> tuple[LabeledImages, LabeledImages]:
    """Read CIFAR-10/100 from torchvision's python format; return ``(train, test)``.

    The pickles are read directly (no md5 check: a folder the user already has
    is trusted). If the folder is missing it is downloaded with torchvision when
    ``download`` is true, otherwise :class:`FileNotFoundError` explains the fixes.
    CIFAR-100 uses the fine labels.
    """
    spec = _cifar_spec(name)
    root = Path(data_dir).expanduser()
    folder = find_cifar_dir(name, root)
    if folder is None:
        if not download:
            raise FileNotFoundError(_missing_cifar_message(spec, root))
        folder = download_cifar(name, root)
    names = [*spec.train_files, *spec.test_files, spec.meta_file]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{spec.title} folder '{folder}' is incomplete: missing {', '.join(missing)}. "
            f"Re-unpack it (tar {spec.tar_flags} {spec.tarball} -C {shlex.quote(str(folder.parent))}) "
            f"or point data.data_dir elsewhere."
        )
    classes = cifar_classes(name, folder)

    def read(files: Sequence[str]) -> LabeledImages:
        parts = [_read_cifar_batch(folder / f, spec.label_key) for f in files]
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.min() < 0 or labels.max() >= spec.num_classes:
            raise ValueError(f"{spec.title} labels in '{folder}' outside 0..{spec.num_classes - 1}")
        images = torch.from_numpy(data).view(-1, 3, 32, 32)
        return LabeledImages(images, torch.from_numpy(labels), classes)

    return read(spec.train_files), read(spec.test_files)


# --------------------------------------------------------------------------- digits


def load_digits(
    image_size: int = 32, test_fraction: float = 0.2, seed: int = 0
) -> tuple[LabeledImages, LabeledImages]:
    """scikit-learn's 8×8 handwritten digits as a tiny offline image data set.

    Gray values 0..16 are scaled to 0..255, replicated to 3 channels and
    upscaled (bilinear, once) to ``image_size``. There is no official test set:
    a fraction ``test_fraction`` is split off with a fixed ``seed``.

    Returns:
        ``(train, test)``; 10 classes named ``"0"``..``"9"``.
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    gray = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8))
    images = resize_square(gray.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), image_size)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(targets) * test_fraction))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    classes = [str(i) for i in range(10)]
    return (LabeledImages(images[train_idx], targets[train_idx], classes),
            LabeledImages(images[test_idx], targets[test_idx], classes))


# --------------------------------------------------------------------------- folders and zips


class FileSource(Protocol):
    """Something that reads image files by name (a directory or a zip)."""

    location: str

    def read(self, name: str) -> bytes:
        """Return the raw bytes of file ``name``."""
        ...

    def describe(self, name: str) -> str:
        """Human-readable path of ``name`` for error messages."""
        ...


class DirectorySource:
    """Files below a directory; names are POSIX paths relative to it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def describe(self, name: str) -> str:
        return str(self.root / name)


class ZipSource:
    """Members of a zip file, readable from any process.

    The central directory is parsed once (in the creating process); members
    are then read with positioned reads (``os.pread``) on a per-process file
    descriptor, so forked or spawned DataLoader workers neither share a file
    offset nor re-parse the archive. Stored and deflated members are read
    directly (CRC-checked); other compression methods go through :mod:`zipfile`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        with zipfile.ZipFile(self.path) as archive:
            self._names = archive.namelist()
            self._members = {
                info.filename: (info.header_offset, info.compress_size, info.compress_type, info.CRC, info.flag_bits)
                for info in archive.infolist()
            }
        self._fd = -1
        self._pid = -1
        self._zip: zipfile.ZipFile | None = None

    def namelist(self) -> list[str]:
        return list(self._names)

    def _descriptor(self) -> int:
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
            self._zip = None
        return self._fd

    def read(self, name: str) -> bytes:
        try:
            offset, size, method, crc, flags = self._members[name]
        except KeyError:
            raise FileNotFoundError(f"'{name}' is not in zip '{self.path}'") from None
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or flags & 0x1:
            if self._zip is None or self._pid != os.getpid():
                self._descriptor()
                self._zip = zipfile.ZipFile(self.path)
            return self._zip.read(name)
        fd = self._descriptor()
        header = os.pread(fd, 30, offset)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise OSError(f"bad local header for '{name}' in zip '{self.path}'")
        start = offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
        data = os.pread(fd, size, start)
        if method == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(data, -15)
        if zlib.crc32(data) != crc:
            raise OSError(f"CRC mismatch for '{name}' in zip '{self.path}' (corrupt archive)")
        return data

    def describe(self, name: str) -> str:
        return f"{self.path}!{name}"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_fd=-1, _pid=-1, _zip=None)
        return state

    def __del__(self) -> None:
        if self._pid == os.getpid() and self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass


@dataclass
class FolderSplit:
    """File names (relative to the source) and class indices of one split."""

    names: list[str]
    targets: Tensor

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class ImageFolderLayout:
    """Result of :func:`scan_image_folder`.

    Attributes:
        source: reads the files.
        classes: sorted class folder names of the training split.
        train: the ``train/`` split.
        eval: the test split: ``test/`` when there is one, else ``val/``.
        eval_split: ``"val"`` or ``"test"``.
        held_out: the ``val/`` split when ``test/`` exists too (train/val/test layouts such as
            Flowers102), used for model selection instead of a part of ``train/``; else ``None``.
    """

    source: DirectorySource | ZipSource
    classes: list[str]
    train: FolderSplit
    eval: FolderSplit
    eval_split: str
    held_out: FolderSplit | None = None


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _group_split(
    entries: dict[str, dict[str, list[str]]], split: str, where: str
) -> tuple[list[str], dict[str, list[str]]]:
    classes = entries.get(split, {})
    if not classes:
        raise ValueError(f"'{where}/{split}' has no class sub-folders; expected {split}/<class>/<image>")
    empty = sorted(c for c, files in classes.items() if not files)
    if empty:
        raise ValueError(f"class folder(s) without images ({', '.join(IMG_EXTENSIONS)}) in '{where}/{split}': "
                         + ", ".join(empty))
    return sorted(classes), classes


def _entries_from_names(names: Sequence[str], prefix: str) -> dict[str, dict[str, list[str]]]:
    """Map split -> class -> sorted image names, from a flat listing of relative paths."""
    out: dict[str, dict[str, list[str]]] = {}
    for name in names:
        if not name.startswith(prefix) or "__MACOSX" in name:
            continue
        parts = name[len(prefix):].split("/")
        if len(parts) < 3 or not parts[1]:
            continue  # the split folder itself, or a file directly under it
        files = out.setdefault(parts[0], {}).setdefault(parts[1], [])
        if parts[-1] and _is_image(name):
            files.append(name)
    for classes in out.values():
        for files in classes.values():
            files.sort()
    return out


def _zip_prefix(names: Sequence[str], path: Path) -> str:
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if "train" in tops:
        return ""
    nested = sorted({n.split("/", 2)[0] for n in names if n.count("/") >= 2 and n.split("/", 2)[1] == "train"})
    nested = [t for t in nested if t != "__MACOSX"]
    if len(nested) == 1:
        return nested[0] + "/"
    raise ValueError(f"zip '{path}' has no train/ folder at its top level or inside a single top-level folder "
                     f"(top level: {sorted(tops)[:10]}); expected train/<class>/<image> and val/<class>/<image>")


def _dir_base(root: Path) -> Path:
    if (root / "train").is_dir():
        return root
    nested = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / "train").is_dir()]
    if len(nested) == 1:
        return nested[0]
    raise ValueError(f"'{root}' has no train/ folder (nor a single sub-folder holding one); expected "
                     "train/<class>/<image> and val/<class>/<image> (or test/<class>/<image>)")


def _dir_listing(base: Path, root: Path) -> list[str]:
    names: list[str] = []
    for split in ("train", "val", "test"):
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            names.append(class_dir.relative_to(root).as_posix() + "/")  # keeps empty class folders visible
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
                dirnames.sort()
                rel = Path(dirpath).relative_to(root).as_posix()
                names.extend(f"{rel}/{f}" for f in sorted(filenames))
    return names


def scan_image_folder(path: str | os.PathLike[str]) -> ImageFolderLayout:
    """List an ImageNet-style folder tree in a directory or a ``.zip`` file (no decoding).

    Expects ``train/<class>/<images>`` and ``val/<class>/<images>`` or
    ``test/<class>/<images>``, or all three (then ``val/`` is the held-out
    validation split and ``test/`` the test split), either at the top level or
    inside a single top-level folder. Images may sit in nested sub-folders of a class
    folder. Classes are the sorted train sub-folders; the eval split must have
    exactly the same ones.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: wrong layout, a class folder without images, or eval classes
            that differ from the training classes.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder or zip '{root}' does not exist (set data.data_dir)")
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(f"'{root}' is a file but not a zip archive; expected a folder or a .zip")
        source: DirectorySource | ZipSource = ZipSource(root)
        names = source.namelist()
        if not names:
            raise ValueError(f"zip '{root}' is empty")
        prefix = _zip_prefix(names, root)
        where = f"{root}!{prefix.rstrip('/')}" if prefix else str(root)
    else:
        if not any(root.iterdir()):
            raise ValueError(f"image folder '{root}' is empty; expected train/<class>/<image> and "
                             "val/<class>/<image>")
        base = _dir_base(root)
        source = DirectorySource(root)
        names = _dir_listing(base, root)
        prefix = "" if base == root else base.relative_to(root).as_posix() + "/"
        where = str(base)
    entries = _entries_from_names(names, prefix)
    classes, train_files = _group_split(entries, "train", where)
    present = [name for name in ("val", "test") if name in entries]
    if not present:
        raise ValueError(f"'{where}' has train/ but neither val/ nor test/ for evaluation")
    files_of: dict[str, dict[str, list[str]]] = {}
    for split_name in present:
        split_classes, files_of[split_name] = _group_split(entries, split_name, where)
        if split_classes != classes:
            only_train = sorted(set(classes) - set(split_classes))
            only_eval = sorted(set(split_classes) - set(classes))
            raise ValueError(f"classes of '{where}/{split_name}' differ from '{where}/train': only in train: "
                             f"{only_train[:10]}, only in {split_name}: {only_eval[:10]}")
    eval_split = present[-1]  # test/ when present

    def split(files: dict[str, list[str]]) -> FolderSplit:
        names_: list[str] = []
        targets: list[int] = []
        for index, cls in enumerate(classes):
            names_.extend(files[cls])
            targets.extend([index] * len(files[cls]))
        return FolderSplit(names_, torch.tensor(targets, dtype=torch.int64))

    held_out = split(files_of["val"]) if len(present) == 2 else None
    return ImageFolderLayout(source, classes, split(train_files), split(files_of[eval_split]), eval_split, held_out)


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> Tensor:
    """Decode an encoded image to a ``uint8`` RGB tensor ``3×H×W``.

    Uses torchvision's decoders (JPEG, PNG, WEBP, GIF) and falls back to PIL
    for other formats. ``name`` only appears in the error message.

    Raises:
        ValueError: the bytes are not a readable image.
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import to_dtype

    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if image.dim() == 4:  # animated GIF: first frame
            image = image[0]
        if image.dtype != torch.uint8:  # e.g. 16-bit PNG
            image = to_dtype(image, torch.uint8, scale=True)
        return image
    except Exception:
        pass
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as pil:
            array = np.asarray(pil.convert("RGB"))
    except Exception as err:
        raise ValueError(f"cannot decode image '{name}': {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def fit_square(image: Tensor, size: int) -> Tensor:
    """Resize the shorter side of a ``uint8`` ``3×H×W`` image to ``size`` and centre-crop a square."""
    from torchvision.transforms.v2.functional import center_crop, resize

    if image.shape[-2:] == (size, size):
        return image
    if min(image.shape[-2:]) != size:
        image = resize(image, [size], antialias=True)
    return center_crop(image, [size, size])


def probe_short_side(source: FileSource, names: Sequence[str], samples: int = 32) -> int:
    """Largest shorter side among up to ``samples`` evenly spread images (reads headers only)."""
    from PIL import Image

    if not names:
        raise ValueError("no images to probe")
    picks = sorted({int(i) for i in np.linspace(0, len(names) - 1, num=min(samples, len(names)))})
    best = 0
    for i in picks:
        try:
            with Image.open(io.BytesIO(source.read(names[i]))) as im:
                best = max(best, min(im.size))
        except Exception as err:
            raise ValueError(f"cannot read image '{source.describe(names[i])}': {err}") from err
    return best


class _DecodeChunks(Dataset):
    """Decodes consecutive chunks of files to ``uint8`` squares (one item per chunk)."""

    def __init__(self, source: FileSource, names: Sequence[str], size: int, chunk: int) -> None:
        self.source, self.names, self.size, self.chunk = source, names, size, chunk

    def __len__(self) -> int:
        return math.ceil(len(self.names) / self.chunk)

    def __getitem__(self, index: int) -> Tensor:
        names = self.names[index * self.chunk : (index + 1) * self.chunk]
        out = torch.empty(len(names), 3, self.size, self.size, dtype=torch.uint8)
        for i, name in enumerate(names):
            where = self.source.describe(name)
            try:
                data = self.source.read(name)
            except OSError as err:
                raise OSError(f"cannot read '{where}': {err}") from err
            out[i] = fit_square(decode_image_bytes(data, where), self.size)
        return out


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_images(
    source: FileSource, names: Sequence[str], size: int, workers: int | None = None, chunk: int = 512
) -> Tensor:
    """Decode every file to ``size×size`` (shorter side resized, centre crop); return ``uint8`` ``N×3×size×size``.

    Work is spread over ``workers`` processes (default: the usable CPU cores)
    through a DataLoader over chunks of ``chunk`` files; small sets are decoded
    in-process.
    """
    workers = _default_workers() if workers is None else workers
    if len(names) <= 2 * chunk:
        workers = 0
    start = time.perf_counter()
    out = torch.empty(len(names), 3, size, size, dtype=torch.uint8)
    loader = DataLoader(_DecodeChunks(source, names, size, chunk), batch_size=None, num_workers=workers)
    for index, part in enumerate(loader):
        out[index * chunk : index * chunk + len(part)] = part
    log.info("decoded %d images from %s at %d px in %.1f s", len(names), source.location, size,
             time.perf_counter() - start)
    return out


#: Default eval crop fraction of the ImageNet recipe: resize to round(S / 0.875), centre-crop S.
CROP_FRACTION = 0.875


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
    augmentation): both views come from the same decoded image.

    Args:
        source: reads the files (picklable, so it works in DataLoader workers).
        names: file names of this split.
        targets: class indices, aligned with ``names``.
        views: one or two callables mapping the decoded image to a view.
    """

    def __init__(self, source: FileSource, names: Sequence[str], targets: Tensor,
                 views: Sequence[Callable[[Tensor], Tensor]]) -> None:
        if not 1 <= len(views) <= 2:
            raise ValueError("views must hold one or two transforms")
        if len(names) != len(targets):
            raise ValueError("names and targets differ in length")
        self.source, self.names, self.targets, self.views = source, list(names), targets, list(views)

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
        return item
