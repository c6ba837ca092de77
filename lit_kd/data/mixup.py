"""Batch mixup and CutMix in the style of function matching (Beyer et al., CVPR 2022).

Function matching mixes a batch with *itself*: every image is blended with its neighbour in the batch
(``torch.roll(x, 1, 0)``, so image ``i`` is paired with image ``i - 1`` and image 0 with the last one)
using **one** coefficient for the whole batch, drawn as ``a ~ Beta(p, p)`` and folded to
``a = max(a, 1 - a)`` so that each output stays closest to its own source image.

Sampling (:func:`sample_mix`) and applying (:func:`apply_mix`) are separate, so that the very same
partner, coefficient and CutMix box can be applied to two views of a batch (the teacher's and the
student's, in the *independent* ablation). :func:`mixup` and :func:`cutmix` do both at once.

Everything works on ``B×C×H×W`` float tensors on any device; the coefficient and the box are drawn
from an optional CPU or device :class:`torch.Generator` (``None``: torch's global generator, which
``lightning.seed_everything`` seeds), so a seeded generator reproduces them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["MixParams", "check_alpha", "sample_mix", "apply_mix", "mixup", "cutmix"]


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing parameters.

    Attributes:
        a: the coefficient of each image's own content, in ``[0.5, 1]``.
        box: for CutMix, the pasted region as fractions of the image side,
            ``(top, left, height, width)``; ``None`` for plain mixup. It has area ``1 - a``
            (before rounding to pixels) and lies wholly inside the image.
    """

    a: float
    box: tuple[float, float, float, float] | None = None


def check_alpha(alpha: float) -> None:
    """Raise a ValueError unless ``alpha`` is a usable ``p`` of ``Beta(p, p)`` (finite and > 0)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(
            f"the mixup parameter p of Beta(p, p) must be a finite number > 0, got {alpha!r}; "
            "to train without mixup, turn mixup off instead of passing p <= 0"
        )


def _uniform(n: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64).cpu()


def sample_mix(alpha: float = 1.0, generator: torch.Generator | None = None, cutmix: bool = False) -> MixParams:
    """Draw one batch's coefficient ``a = max(u, 1 - u)``, ``u ~ Beta(alpha, alpha)``, and a CutMix box.

    ``alpha = 1`` gives ``u ~ U(0, 1)``, the official recipe. The Beta draw uses NumPy seeded from
    ``generator`` (torch has no generator-driven Beta sampler), so it is reproducible. With a device
    generator this reads one number back from the device.

    Raises:
        ValueError: if ``alpha`` is not a finite number > 0.
    """
    check_alpha(alpha)
    if alpha == 1.0:
        u = float(_uniform(1, generator)[0])
    else:
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        u = float(np.random.default_rng(seed).beta(alpha, alpha))
    a = max(u, 1.0 - u)
    if not cutmix:
        return MixParams(a)
    side = math.sqrt(1.0 - a)  # a square box of area 1 - a
    top, left = (float(v) * (1.0 - side) for v in _uniform(2, generator))
    return MixParams(a, (top, left, side, side))


def _pixel_box(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    top, left, h, w = box
    y0, x0 = round(top * height), round(left * width)
    y1, x1 = min(height, y0 + round(h * height)), min(width, x0 + round(w * width))
    return y0, y1, x0, x1


def apply_mix(images: Tensor, params: MixParams) -> tuple[Tensor, float]:
    r"""Mix a batch with itself rolled by one, as ``params`` says; returns ``(mixed, a)``.

    Mixup:

    .. math::
        \tilde x_i = a \, x_i + (1 - a) \, x_{(i - 1) \bmod B}

    CutMix: :math:`\tilde x_i = x_i` outside the box and :math:`x_{(i-1) \bmod B}` inside it; the
    returned ``a`` is then the fraction of pixels outside the box after rounding it to whole pixels
    (``1 - box area / (H W)``). The box, given in fractions of the side, lands on the same region
    at any resolution. The input is not modified.
    """
    if images.dim() != 4:
        raise ValueError(f"expected a B×C×H×W batch, got shape {tuple(images.shape)}")
    partner = torch.roll(images, shifts=1, dims=0)
    if params.box is None:
        return torch.lerp(partner, images, params.a), params.a
    height, width = images.shape[-2:]
    y0, y1, x0, x1 = _pixel_box(params.box, height, width)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


def mixup(images: Tensor, alpha: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    r"""Function-matching mixup of a batch: returns ``(mixed, a)``.

    .. math::
        u \sim \mathrm{Beta}(p, p), \quad a = \max(u, 1 - u), \quad
        \tilde x_i = a \, x_i + (1 - a) \, x_{(i - 1) \bmod B}

    One ``a`` for the whole batch; the partner of each image is the batch rolled by one
    (``torch.roll(images, 1, 0)``). ``alpha`` is ``p`` (1: ``u`` uniform).

    Raises:
        ValueError: if ``alpha <= 0``.
    """
    return apply_mix(images, sample_mix(alpha, generator))


def cutmix(images: Tensor, alpha: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """CutMix with the same pairing: one square box of area ``1 - a`` (``a`` as in :func:`mixup`),
    at the same place in every image, is filled from the batch rolled by one. Returns
    ``(mixed, a)`` with ``a`` the exact fraction of each image's own pixels."""
    return apply_mix(images, sample_mix(alpha, generator, cutmix=True))
