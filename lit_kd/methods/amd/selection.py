"""Choosing the teacher assistant from candidates' accuracy over a scale grid (AMD stage 3).

Han et al., "AMD: Automatic Multi-step Distillation of Large-scale Vision Models" (ECCV 2024)
select the TA by the *Negative Performance-Scale Derivative* (NPSD). The exact formula is not in
what we have of the paper; lit_kd's reading (documented in ``docs/amd.md``):

With the scales sorted from large to small, ``g_1 > ... > g_K``, and validation accuracies
``P_k``, the NPSD of interval ``k`` (between candidates ``k`` and ``k + 1``) is

    NPSD_k = (P_k - P_{k+1}) / (g_k - g_{k+1})

the accuracy lost per unit of scale removed when going one step smaller (the negative of the
derivative of accuracy with respect to the removed fraction ``1 - g``). It is positive where a
smaller candidate is worse. :class:`NPSDSelector` picks the smallest candidate before the
accuracy curve falls off a cliff: the larger end of the steepest interval, or of the first
interval whose NPSD exceeds a threshold.

Selectors are pluggable: any :class:`AssistantSelector` subclass can be named in a config
(``selector: {class_path: ..., init_args: ...}``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["npsd", "AssistantSelector", "NPSDSelector", "BestAccuracySelector"]


def npsd(scales: Sequence[float], accuracies: Sequence[float]) -> list[float]:
    """NPSD of each interval between neighbouring candidates, scales sorted from large to small."""
    if len(scales) != len(accuracies):
        raise ValueError(f"{len(scales)} scales but {len(accuracies)} accuracies")
    if any(b >= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"Scales must be sorted from large to small and distinct; got {list(scales)}")
    return [(accuracies[k] - accuracies[k + 1]) / (scales[k] - scales[k + 1]) for k in range(len(scales) - 1)]


class AssistantSelector:
    """Picks the index of the teacher assistant among candidates sorted from large to small."""

    def __call__(self, scales: Sequence[float], accuracies: Sequence[float]) -> int:
        raise NotImplementedError


class NPSDSelector(AssistantSelector):
    """The candidate just before the steepest accuracy drop (lit_kd's reading of AMD's NPSD rule).

    Args:
        threshold: if given, choose the larger end of the *first* interval (from large to small)
            whose NPSD exceeds it (accuracy points per unit of scale, e.g. ``0.1`` = 1 point per 0.1
            of scale), or the smallest candidate if none does. If ``None``, choose the larger end
            of the interval with the largest NPSD (ties: the larger candidate).
    """

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold

    def __call__(self, scales: Sequence[float], accuracies: Sequence[float]) -> int:
        if len(scales) == 1:
            return 0
        values = npsd(scales, accuracies)
        if self.threshold is None:
            return max(range(len(values)), key=lambda k: (values[k], -k))
        return next((k for k, value in enumerate(values) if value > self.threshold), len(scales) - 1)


class BestAccuracySelector(AssistantSelector):
    """The most accurate candidate (ties: the smaller one); a baseline rule without NPSD."""

    def __call__(self, scales: Sequence[float], accuracies: Sequence[float]) -> int:
        return max(range(len(scales)), key=lambda k: (accuracies[k], k))
