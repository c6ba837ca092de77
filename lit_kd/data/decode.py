"""Decoding image files to ``uint8`` tensors, one at a time or a whole split in worker processes."""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lit_kd.data.folders import FileSource

log = logging.getLogger(__name__)

__all__ = ["decode_image_bytes", "fit_square", "probe_short_side", "decode_images"]


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
