"""Batched image augmentation that runs on the training device.

Every function here works on a whole batch at once (no Python loop over
samples), takes images as ``B×C×H×W`` tensors (``uint8`` in ``[0, 255]`` or
floating point in ``[0, 1]``) and returns ``float32`` images in ``[0, 1]``.
Nothing is normalized: each network applies its own mean/std later.

Random functions accept an optional :class:`torch.Generator`. It must live on
the same device as the images; ``None`` uses the device's global generator
(seeded by ``lightning.seed_everything``).

The random functions are split into *sampling* (``sample_*``: draws the
parameters) and *applying* (``apply_*`` / :func:`resized_crop`: deterministic
given the parameters), so that the same augmentation can be replayed, e.g. the
same crop at two resolutions: boxes are in pixels of the image they were sampled
for, so multiplying them by ``new_size / old_size`` gives the same region of a
resized copy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

__all__ = [
    "CROP_FRACTION",
    "to_float",
    "sample_crop_offsets",
    "sample_flips",
    "apply_crop_flip",
    "random_crop_flip",
    "sample_resized_crop_boxes",
    "resized_crop",
    "random_resized_crop_flip",
    "center_crop_resize",
    "resize_square",
]

#: Default evaluation crop of the ImageNet recipe: resize the shorter side to round(S / 0.875), centre-crop S.
CROP_FRACTION = 0.875


def to_float(images: Tensor) -> Tensor:
    """Convert images to ``float32`` in ``[0, 1]``.

    ``uint8`` input is divided by 255; floating-point input is assumed to be in
    ``[0, 1]`` already and is only cast to ``float32`` (no copy if it already is).
    """
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or floating-point images, got {images.dtype}")
    return images.to(torch.float32)


def _check_images(images: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"expected a B×C×H×W batch, got shape {tuple(images.shape)}")


def sample_flips(
    n: int, p: float = 0.5, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Draw ``n`` independent horizontal-flip decisions, each ``True`` with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


def sample_crop_offsets(
    n: int, padding: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Draw per-sample integer offsets for a padded random crop.

    Returns ``(dy, dx)``, two int64 tensors of shape ``(n,)`` with values in
    ``[0, 2 * padding]``: the top-left corner of the crop inside the padded image.
    ``dy = dx = padding`` is the un-shifted image.
    """
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=device)
    return offsets[0], offsets[1]


def apply_crop_flip(
    images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, padding: int
) -> Tensor:
    """Crop every image with its own integer shift, zero padding, and optional flip.

    Equivalent to padding each image with ``padding`` zeros on all sides,
    cutting the ``H×W`` window whose top-left corner is ``(dy[i], dx[i])`` and
    mirroring it horizontally where ``flip[i]``. Pixels are copied exactly (one
    ``gather``), no interpolation. Returns ``float32`` in ``[0, 1]``.

    Args:
        images: ``B×C×H×W`` uint8 or float images.
        dy: ``(B,)`` row offsets in ``[0, 2 * padding]``.
        dx: ``(B,)`` column offsets in ``[0, 2 * padding]``.
        flip: ``(B,)`` booleans, or ``None`` for no flipping.
        padding: zero padding on each side.
    """
    _check_images(images)
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    wp = w + 2 * padding
    rows = dy.to(images.device).view(b, 1) + torch.arange(h, device=images.device)
    cols = dx.to(images.device).view(b, 1) + torch.arange(w, device=images.device)
    if flip is not None:
        cols = torch.where(flip.to(images.device).view(b, 1), cols.flip(1), cols)
    index = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    out = padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)
    return to_float(out)


def random_crop_flip(
    images: Tensor,
    padding: int = 4,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CIFAR-style augmentation: random crop with zero padding plus random horizontal flip.

    Each image gets its own shift (uniform over ``[-padding, padding]`` in both
    directions) and its own flip decision (probability ``flip_p``); output has the
    input's size. Returns ``float32`` in ``[0, 1]``.

    Args:
        images: ``B×C×H×W`` uint8 or float images.
        padding: zero padding on each side (4 for CIFAR).
        flip_p: probability of a horizontal flip per image.
        generator: optional generator on the images' device.
    """
    _check_images(images)
    n = images.shape[0]
    dy, dx = sample_crop_offsets(n, padding, generator, images.device)
    flip = sample_flips(n, flip_p, generator, images.device)
    return apply_crop_flip(images, dy, dx, flip, padding)


def sample_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    attempts: int = 10,
) -> Tensor:
    """Draw ``RandomResizedCrop`` boxes for ``n`` images of size ``height×width``.

    Follows torchvision's rule: up to ``attempts`` tries of an area fraction
    uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, with
    rounded integer width/height, accepting the first try that fits inside the
    image, at a uniformly random integer position; if none fits, a centre crop
    with the aspect ratio clamped to ``ratio``. All tries for all images are drawn
    at once.

    Returns:
        ``n×4`` float tensor of pixel boxes ``(x0, y0, x1, y1)``; the box covers
        pixels ``x0 .. x1 - 1`` and ``y0 .. y1 - 1`` (integer corners).
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    u = torch.rand(4, n, attempts, generator=generator, device=device, dtype=torch.float64)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # Position: integer uniform in [0, H - h] and [0, W - w] (like randint).
    top = torch.floor(u[2] * (height - h + 1)).clamp_min(0)
    left = torch.floor(u[3] * (width - w + 1)).clamp_min(0)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    found = ok.any(dim=1)
    pick = lambda t: t.gather(1, first).squeeze(1)  # noqa: E731
    w, h, top, left = pick(w), pick(h), pick(top), pick(left)

    # Fallback: centre crop with the aspect ratio clamped into ``ratio``.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([left, top, left + w, top + h], dim=1).to(torch.float32)


def resized_crop(images: Tensor, boxes: Tensor, size: int | tuple[int, int], flip: Tensor | None = None) -> Tensor:
    """Cut one box out of every image and resize it to ``size``, in one batched call.

    Uses :func:`torchvision.ops.roi_align` with ``aligned=True``: for
    upsampling this is bilinear interpolation with ``align_corners=False``
    (identical to :func:`torch.nn.functional.interpolate` for a full-image box);
    for downsampling it averages ``ceil(box / size)`` bilinear samples per output
    pixel (an exact box filter for integer factors), which limits aliasing.
    Samples near a box edge may read the neighbouring pixels outside the box
    (torchvision crops first and clamps); for whole-pixel boxes this only
    touches the outermost half pixel.

    Args:
        images: ``B×C×H×W`` uint8 or float images.
        boxes: ``B×4`` pixel boxes ``(x0, y0, x1, y1)`` as from :func:`sample_resized_crop_boxes`.
        size: output size, an int (square) or ``(height, width)``.
        flip: optional ``(B,)`` booleans; flipped outputs are mirrored horizontally.

    Returns:
        ``B×C×size×size`` float32 images in ``[0, 1]``.
    """
    _check_images(images)
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    x = to_float(images)
    idx = torch.arange(x.shape[0], device=x.device, dtype=x.dtype).unsqueeze(1)
    rois = torch.cat([idx, boxes.to(device=x.device, dtype=x.dtype)], dim=1)
    out = roi_align(x, rois, output_size=out_hw, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if flip is not None:
        out = torch.where(flip.to(out.device).view(-1, 1, 1, 1), out.flip(-1), out)
    return out.clamp_(0.0, 1.0)


def random_resized_crop_flip(
    images: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ImageNet-style augmentation: per-sample ``RandomResizedCrop`` plus horizontal flip.

    Boxes are drawn with :func:`sample_resized_crop_boxes` (torchvision's
    sampling rule) and applied with one batched :func:`resized_crop`.

    Args:
        images: ``B×C×H×W`` uint8 or float images (all of the same size).
        size: output side length.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
        flip_p: probability of a horizontal flip per image.
        generator: optional generator on the images' device.

    Returns:
        ``B×C×size×size`` float32 images in ``[0, 1]``.
    """
    _check_images(images)
    n, _, h, w = images.shape
    boxes = sample_resized_crop_boxes(n, h, w, scale, ratio, generator, images.device)
    flip = sample_flips(n, flip_p, generator, images.device)
    return resized_crop(images, boxes, size, flip)


def center_crop_resize(images: Tensor, crop: int, size: int) -> Tensor:
    """Cut the centred ``crop×crop`` square and resize it to ``size×size``.

    The crop offset is ``round((H - crop) / 2)`` as in torchvision's
    ``CenterCrop``. When ``crop == size`` this is an exact slice; otherwise the
    slice is resized bilinearly with antialiasing. Returns ``float32`` in ``[0, 1]``.
    """
    _check_images(images)
    h, w = images.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} larger than the images ({h}×{w})")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    out = to_float(images[..., top : top + crop, left : left + crop])
    if crop != size:
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = out.clamp_(0.0, 1.0)
    return out


def resize_square(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Resize ``uint8`` images to ``size×size`` (bilinear, antialiased), keeping ``uint8``.

    Meant for a one-off resize at load time (e.g. 8×8 digits to 32×32).
    Non-square inputs are stretched; use it for square images. Works through
    the batch ``chunk`` images at a time to bound the float working memory.
    """
    _check_images(images)
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8, device=images.device)
    for start in range(0, images.shape[0], chunk):  # bounded float32 working memory
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out
