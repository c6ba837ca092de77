"""Losses that distil from several guides at once (DGKD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_kd.losses.logits import kd_loss


def dense_guidance_loss(student_logits: Tensor, guide_logits: Sequence[Tensor], temperature: float = 4.0) -> Tensor:
    r"""Son et al., "Densely Guided Knowledge Distillation using Multiple Teacher Assistants" (ICCV 2021).

    .. math::
        L_{DG} = \sum_{k \in K} T^2 \cdot \mathrm{KL}\big(\mathrm{softmax}(z^k / T) \,\|\, \mathrm{softmax}(z^s / T)\big)

    the sum over the kept guides :math:`K` (teacher and assistants) of the KD term of
    :func:`~lit_kd.losses.kd_loss`. Stochastic DGKD passes only the guides that survived
    :func:`drop_guides` this step.
    """
    if not guide_logits:
        raise ValueError("dense_guidance_loss needs at least one guide's logits (teacher or assistant).")
    return torch.stack([kd_loss(student_logits, logits, temperature) for logits in guide_logits]).sum()


def drop_guides(num_guides: int, drop_num: int, generator: torch.Generator | None = None) -> list[int]:
    """Indices of the guides kept this step: ``drop_num`` of ``num_guides`` removed uniformly at random.

    DGKD's stochastic variant drops whole KD terms (not samples) each iteration, a regularizer in the
    spirit of dropout. At least one guide must stay.
    """
    if not 0 <= drop_num < num_guides:
        raise ValueError(
            f"drop_num={drop_num} must be in [0, {num_guides - 1}] for {num_guides} guides (teacher plus "
            "assistants): at least one guide must stay. Lower drop_num or add assistants."
        )
    kept = torch.randperm(num_guides, generator=generator)[: num_guides - drop_num]
    return sorted(int(i) for i in kept)
