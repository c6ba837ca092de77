"""ImageNet-style image folders (``train/<class>/*`` plus ``val/`` and/or ``test/``) in a directory or a
``.zip``: reading files by name from either, and listing the splits and classes (no decoding)."""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["IMG_EXTENSIONS", "FileSource", "DirectorySource", "ZipSource", "FolderSplit", "ImageFolderLayout",
           "scan_image_folder"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


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
    """Every file below the split folders, each real file and folder once.

    Symbolic links are followed, but a folder already visited (a link loop, or two links to one
    folder) is not entered again, and a file already listed (reached through another link) is left
    out, with one warning that says how many: a file that appeared twice could land in both the
    training and the held-out split.
    """
    names: list[str] = []
    seen_dirs: set[str] = set()
    seen_files: dict[str, str] = {}
    skipped: list[str] = []
    for split in ("train", "val", "test"):
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            names.append(class_dir.relative_to(root).as_posix() + "/")  # keeps empty class folders visible
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
                real_dir = os.path.realpath(dirpath)
                if real_dir in seen_dirs:
                    skipped.append(dirpath)
                    dirnames[:] = []
                    continue
                seen_dirs.add(real_dir)
                dirnames.sort()
                rel = Path(dirpath).relative_to(root).as_posix()
                for filename in sorted(filenames):
                    real = os.path.realpath(os.path.join(dirpath, filename))
                    if real in seen_files:
                        skipped.append(f"{rel}/{filename}")
                        continue
                    seen_files[real] = f"{rel}/{filename}"
                    names.append(f"{rel}/{filename}")
    if skipped:
        warnings.warn(f"Image folder {str(root)!r}: {len(skipped)} files or folders are reached a second time through "
                      f"symbolic links (e.g. {skipped[:3]}); each is listed once, in the first split and class that "
                      "reaches it, so no image is trained on and held out at once.", UserWarning, stacklevel=3)
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
    if len(classes) < 2:
        raise ValueError(f"'{where}/train' has a single class folder ({classes[0]!r}): classification needs at least "
                         "two classes, one sub-folder each (train/<class>/<image>).")
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
