"""Batched RandAugment (the FixMatch variant that MLKD's code uses) for a strongly augmented view.

Multi-Level Logit Distillation (Jin, Wang, Lin, CVPR 2023) trains on a weak view (crop + flip) and a
strong view of every image; the strong view of its official code is ``RandAugment(2, 10)`` of the
FixMatch style (Sohn et al., NeurIPS 2020): two operations drawn uniformly, with replacement, from
fourteen, each with a magnitude drawn uniformly from the operation's range (the ``10`` is not used),
then a Cutout square of random side (up to half the image) filled with the grey ``(125, 123, 114)``.

The official code applies it per image with PIL on ``uint8`` images. Here the whole batch is
augmented on its device: the draws are batched (:func:`sample_randaugment`, one optional
:class:`torch.Generator`), and :func:`apply_randaugment` groups the images by the operation they
drew (one sort per slot), runs each operation once on its group with per-image magnitudes, and puts
the results back. Pixels stay on the 8-bit grid after every operation, as with PIL, and every
operation follows PIL's arithmetic (truncating blends, nearest-neighbour affine sampling of pixel
centres, PIL's histogram equalization and autocontrast, the 3×3 smoothing kernel of ``Sharpness``).

Ranges (as in the official code): AutoContrast, Equalize, Identity (no magnitude); Brightness,
Color, Contrast, Sharpness: factor in [0.05, 0.95]; Posterize: bits in [4, 8]; Rotate: degrees in
[-30, 30]; ShearX/ShearY: [-0.3, 0.3]; Solarize: threshold in [0, 256]; TranslateX/TranslateY:
[-0.3, 0.3] of the side. Cutout: side in [0, 0.5] of the image, centred at a point drawn between
1 and the side in each direction (the official ``numpy.random.uniform(w)`` means ``uniform(low=w,
high=1)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.data.augment import to_float

__all__ = ["RANDAUGMENT_OPS", "RandAugmentParams", "sample_randaugment", "apply_randaugment", "randaugment"]

#: The operations and their magnitude ranges ``(low, high)`` (``None``: the operation has no magnitude).
RANDAUGMENT_OPS: dict[str, tuple[float, float] | None] = {
    "auto_contrast": None,
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "equalize": None,
    "identity": None,
    "posterize": (4.0, 8.0),
    "rotate": (-30.0, 30.0),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "solarize": (0.0, 256.0),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}
CUTOUT_MAX_FRACTION = 0.5
CUTOUT_FILL = (125.0, 123.0, 114.0)


@dataclass(frozen=True)
class RandAugmentParams:
    """One batch's RandAugment draws.

    Attributes:
        ops: ``(B, num_ops)`` indices into :data:`RANDAUGMENT_OPS`, applied left to right.
        levels: ``(B, num_ops)`` positions in ``[0, 1)`` within each operation's magnitude range.
        cutout: ``(B, 3)`` uniforms in ``[0, 1)``: the Cutout side (times 0.5 of the image side) and
            the centre's column and row.
    """

    ops: Tensor
    levels: Tensor
    cutout: Tensor


def sample_randaugment(n: int, num_ops: int = 2, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> RandAugmentParams:
    """Draw the operations, magnitudes and Cutout squares of ``n`` images (``num_ops`` operations each)."""
    if num_ops < 0:
        raise ValueError(f"num_ops must be >= 0, got {num_ops}")
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (n, num_ops), generator=generator, device=device)
    levels = torch.rand(n, num_ops, generator=generator, device=device)
    cutout = torch.rand(n, 3, generator=generator, device=device)
    return RandAugmentParams(ops=ops, levels=levels, cutout=cutout)


def apply_randaugment(images: Tensor, params: RandAugmentParams) -> Tensor:
    """Apply drawn RandAugment parameters to a batch; deterministic given ``params``.

    Args:
        images: ``B×3×H×W`` ``uint8`` images, or floats in ``[0, 1]`` (rounded to the 8-bit grid first).
        params: from :func:`sample_randaugment` with ``n = B``.

    Returns:
        ``B×3×H×W`` ``float32`` images in ``[0, 1]`` on the 8-bit grid.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"RandAugment works on B×3×H×W RGB batches, got shape {tuple(images.shape)}")
    if params.ops.shape[0] != images.shape[0]:
        raise ValueError(f"params were drawn for {params.ops.shape[0]} images, the batch has {images.shape[0]}")
    pixels = to_float(images).mul(255.0).round_()  # PIL works on uint8: keep to the 8-bit grid
    names = list(RANDAUGMENT_OPS)
    for slot in range(params.ops.shape[1]):
        chosen = params.ops[:, slot]
        order = torch.argsort(chosen, stable=True)
        counts = torch.bincount(chosen, minlength=len(names)).tolist()  # one device sync per slot
        grouped, levels = pixels[order], params.levels[order, slot]
        outputs, start = [], 0
        for name, count in zip(names, counts):
            if count:
                part = slice(start, start + count)
                outputs.append(_OPS[name](grouped[part], _magnitude(name, levels[part])))
            start += count
        pixels = torch.empty_like(pixels).index_copy_(0, order, torch.cat(outputs))
    pixels = _cutout(pixels, params.cutout)
    return pixels.div_(255.0)


def randaugment(images: Tensor, num_ops: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Draw and apply RandAugment in one call (see the module docstring); ``float32`` in ``[0, 1]``."""
    return apply_randaugment(images, sample_randaugment(images.shape[0], num_ops, generator, images.device))


# --------------------------------------------------------------------------- the operations
# Every operation takes ``k×3×H×W`` float pixels in [0, 255] on the 8-bit grid and ``k`` magnitudes.

def _magnitude(name: str, levels: Tensor) -> Tensor:
    bounds = RANDAUGMENT_OPS[name]
    if bounds is None:
        return levels
    low, high = bounds
    return low + (high - low) * levels.to(torch.float64)


def _blend(degenerate: Tensor, pixels: Tensor, factor: Tensor) -> Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)`` for factors in [0, 1]: truncated, in float32."""
    factor = factor.to(torch.float32).view(-1, 1, 1, 1)
    return (degenerate + factor * (pixels - degenerate)).floor_().clamp_(0.0, 255.0)


def _luminance(pixels: Tensor) -> Tensor:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point), ``k×1×H×W``."""
    r, g, b = pixels.to(torch.int64).unbind(dim=1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1).to(pixels.dtype)


def _auto_contrast(pixels: Tensor, _: Tensor) -> Tensor:
    low = pixels.amin(dim=(-2, -1), keepdim=True).double()
    high = pixels.amax(dim=(-2, -1), keepdim=True).double()
    span = (high - low).clamp_min(1.0)
    scale = torch.full_like(span, 255.0) / span  # a true division (scalar / tensor multiplies by a reciprocal)
    stretched = (pixels.double() * scale - low * scale).floor().clamp(0.0, 255.0)  # PIL: int(ix * scale + offset)
    return torch.where(high > low, stretched, pixels.double()).to(pixels.dtype)


def _brightness(pixels: Tensor, factor: Tensor) -> Tensor:
    return _blend(torch.zeros_like(pixels), pixels, factor)


def _color(pixels: Tensor, factor: Tensor) -> Tensor:
    return _blend(_luminance(pixels).expand_as(pixels), pixels, factor)


def _contrast(pixels: Tensor, factor: Tensor) -> Tensor:
    mean = _luminance(pixels).double().mean(dim=(1, 2, 3), keepdim=True)
    grey = (mean + 0.5).floor().to(pixels.dtype).expand_as(pixels)
    return _blend(grey, pixels, factor)


def _equalize(pixels: Tensor, _: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize``, per image and channel."""
    k, c, h, w = pixels.shape
    values = pixels.reshape(k * c, h * w).to(torch.int64)
    histogram = torch.zeros(k * c, 256, dtype=torch.int64, device=pixels.device)
    histogram.scatter_add_(1, values, torch.ones_like(values))
    # step = (pixels - count of the highest occupied value) // 255
    highest = torch.where(histogram > 0, torch.arange(256, device=pixels.device), -1).amax(dim=1, keepdim=True)
    step = (h * w - histogram.gather(1, highest)) // 255
    before = histogram.cumsum(dim=1) - histogram  # pixels below each value
    lut = ((step // 2 + before) // step.clamp_min(1)).clamp_(max=255)
    equalized = lut.gather(1, values)
    out = torch.where(step > 0, equalized, values)  # one occupied value or step 0: unchanged
    return out.to(pixels.dtype).view(k, c, h, w)


def _identity(pixels: Tensor, _: Tensor) -> Tensor:
    return pixels


def _posterize(pixels: Tensor, bits: Tensor) -> Tensor:
    keep = bits.floor().clamp_min(1.0)  # PIL: max(1, int(v)) bits kept
    quantum = torch.pow(2.0, 8.0 - keep).to(pixels.dtype).view(-1, 1, 1, 1)
    return (pixels / quantum).floor_() * quantum


def _sharpness(pixels: Tensor, factor: Tensor) -> Tensor:
    """Blend with PIL's SMOOTH filter (3×3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13; border pixels kept)."""
    kernel = torch.ones(3, 3, dtype=torch.float32, device=pixels.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(3, 1, 3, 3)
    smooth = F.conv2d(pixels.to(torch.float32), kernel, groups=3)
    smooth = (smooth + 0.5).floor_().clamp_(0.0, 255.0).to(pixels.dtype)
    degenerate = pixels.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, pixels, factor)


def _solarize(pixels: Tensor, threshold: Tensor) -> Tensor:
    return torch.where(pixels < threshold.to(pixels.dtype).view(-1, 1, 1, 1), pixels, 255.0 - pixels)


def _affine(pixels: Tensor, matrices: Tensor) -> Tensor:
    """PIL's ``transform(AFFINE, (a, b, c, d, e, f), NEAREST)`` with fill 0, per image.

    Output pixel ``(x, y)`` reads input pixel ``floor(a x' + b y' + c), floor(d x' + e y' + f)`` at its
    centre ``x' = x + 0.5, y' = y + 0.5``, or 0 where that falls outside the image. Like PIL, matrices
    with a rotation or shear part (``b`` or ``d`` non-zero) are evaluated in 16.16 fixed point.
    """
    k, c, h, w = pixels.shape
    device = pixels.device
    a, b, shift_x, d, e, shift_y = matrices.to(torch.float64).view(k, 6, 1, 1).unbind(dim=1)
    rows = torch.arange(h, device=device, dtype=torch.float64).view(h, 1)
    columns = torch.arange(w, device=device, dtype=torch.float64).view(1, w)
    column = (a * (columns + 0.5) + b * (rows + 0.5) + shift_x).floor()
    row = (d * (columns + 0.5) + e * (rows + 0.5) + shift_y).floor()

    def fixed(value: Tensor) -> Tensor:  # PIL's FIX(): round half up to 1/65536
        return (value * 65536.0 + 0.5).floor().to(torch.int64)

    rows_int, columns_int = rows.to(torch.int64), columns.to(torch.int64)
    column_fixed = (fixed(shift_x + b * 0.5 + a * 0.5) + rows_int * fixed(b) + columns_int * fixed(a)) >> 16
    row_fixed = (fixed(shift_y + e * 0.5 + d * 0.5) + rows_int * fixed(e) + columns_int * fixed(d)) >> 16
    use_fixed = (b != 0) | (d != 0)
    column = torch.where(use_fixed, column_fixed, column.to(torch.int64)).view(k, h * w)
    row = torch.where(use_fixed, row_fixed, row.to(torch.int64)).view(k, h * w)
    inside = (column >= 0) & (column < w) & (row >= 0) & (row < h)
    index = (row.clamp(0, h - 1) * w + column.clamp(0, w - 1)).unsqueeze(1).expand(k, c, h * w)
    sampled = pixels.reshape(k, c, h * w).gather(2, index)
    return torch.where(inside.unsqueeze(1), sampled, torch.zeros_like(sampled)).view(k, c, h, w)


def _rows(*columns: Tensor) -> Tensor:
    return torch.stack([col.to(torch.float64) for col in columns], dim=1)


def _rotate(pixels: Tensor, degrees: Tensor) -> Tensor:
    """PIL's ``rotate(degrees)``: counter-clockwise about the image centre, nearest, fill 0."""
    h, w = pixels.shape[-2:]
    angle = -degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    centre_x, centre_y = w / 2.0, h / 2.0
    shift_x = cos * -centre_x + sin * -centre_y + centre_x
    shift_y = -sin * -centre_x + cos * -centre_y + centre_y
    return _affine(pixels, _rows(cos, sin, shift_x, -sin, cos, shift_y))


def _shear_x(pixels: Tensor, shear: Tensor) -> Tensor:
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _affine(pixels, _rows(one, shear, zero, zero, one, zero))


def _shear_y(pixels: Tensor, shear: Tensor) -> Tensor:
    one, zero = torch.ones_like(shear), torch.zeros_like(shear)
    return _affine(pixels, _rows(one, zero, zero, shear, one, zero))


def _translate_x(pixels: Tensor, fraction: Tensor) -> Tensor:
    one, zero = torch.ones_like(fraction), torch.zeros_like(fraction)
    return _affine(pixels, _rows(one, zero, fraction * pixels.shape[-1], zero, one, zero))


def _translate_y(pixels: Tensor, fraction: Tensor) -> Tensor:
    one, zero = torch.ones_like(fraction), torch.zeros_like(fraction)
    return _affine(pixels, _rows(one, zero, zero, zero, one, fraction * pixels.shape[-2]))


def _cutout(pixels: Tensor, draws: Tensor) -> Tensor:
    """Fill a square of side ``0.5 u`` of the width with the grey :data:`CUTOUT_FILL` (as PIL draws it:
    corners truncated to whole pixels, both corner rows and columns filled)."""
    k, _, h, w = pixels.shape
    draws = draws.to(torch.float64)
    side = draws[:, 0] * CUTOUT_MAX_FRACTION * w
    centre_x = 1.0 + (w - 1.0) * draws[:, 1]
    centre_y = 1.0 + (h - 1.0) * draws[:, 2]
    left = (centre_x - side / 2.0).clamp_min(0.0).floor()
    top = (centre_y - side / 2.0).clamp_min(0.0).floor()
    right = (left + side).clamp(max=float(w)).floor()
    bottom = (top + side).clamp(max=float(h)).floor()
    columns = torch.arange(w, device=pixels.device, dtype=torch.float64)
    rows = torch.arange(h, device=pixels.device, dtype=torch.float64)
    in_columns = (columns >= left.view(-1, 1)) & (columns <= right.view(-1, 1))
    in_rows = (rows >= top.view(-1, 1)) & (rows <= bottom.view(-1, 1))
    inside = (in_rows.view(k, 1, h, 1) & in_columns.view(k, 1, 1, w)) & (side > 0).view(k, 1, 1, 1)
    fill = torch.tensor(CUTOUT_FILL, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return torch.where(inside, fill, pixels)


_OPS = {
    "auto_contrast": _auto_contrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "identity": _identity,
    "posterize": _posterize,
    "rotate": _rotate,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "solarize": _solarize,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
