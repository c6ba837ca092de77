"""CIFAR-10/100 read from torchvision's python-pickle layout (downloaded with torchvision only when asked)."""

from __future__ import annotations

import logging
import os
import pickle
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lit_kd.data.labeled import LabeledImages

log = logging.getLogger(__name__)

__all__ = ["CifarName", "CifarUnpickler", "UnsafePickleError", "find_cifar_dir", "download_cifar", "load_cifar",
           "cifar_classes"]


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


class UnsafePickleError(ValueError):
    """A CIFAR file that asks the unpickler for something the CIFAR format never holds (code)."""


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only what the CIFAR python format holds.

    Dicts, lists, strings/bytes and numbers need no globals; a NumPy array is rebuilt from
    ``numpy.ndarray``, ``numpy.dtype`` and ``numpy.core.multiarray._reconstruct`` (the names the
    official files use; ``numpy._core`` under NumPy 2). Any other global (``os.system``,
    ``builtins.eval``, ...) is refused before anything runs, so a crafted ``batches.meta`` or
    ``data_batch_*`` cannot execute code when a fit starts.
    """

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles made by Python 3 store text; it only returns bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a CIFAR pickle holds only dicts, lists, bytes, numbers and "
                "NumPy arrays, so this file is not a CIFAR batch (it may be crafted to run code). Replace it with "
                "the original file.")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except UnsafePickleError as err:
        raise UnsafePickleError(f"CIFAR file '{path}': {err}") from None
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
