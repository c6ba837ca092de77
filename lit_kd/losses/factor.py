"""Factor transfer: match the teacher's paraphrased "factors" with the student's translated ones."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.spatial import check_feature_maps, pool_to_common_size

__all__ = ["ft_loss"]


def ft_loss(student_factor: Tensor, teacher_factor: Tensor,
            mode: Literal["paper", "repdistiller"] = "paper") -> Tensor:
    r"""Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer" (NeurIPS 2018).

    .. math::
        L_{FT} = \frac{1}{B D} \sum_{b} \Big\lVert \frac{F^s_b}{\lVert F^s_b \rVert_2}
                 - \frac{F^t_b}{\lVert F^t_b \rVert_2} \Big\rVert_1

    where :math:`F^t` is the teacher's factor (the paraphraser's encoder output), :math:`F^s` the
    student's (the translator's output), each flattened to :math:`D` values per sample, with the
    paper's :math:`p = 1`. The paper writes the L1 norm; the authors' code averages it over the
    :math:`D` entries (``nn.L1Loss``), as here.

    ``mode="repdistiller"`` computes what RepDistiller's ``FactorTransfer`` does instead: each factor
    is first reduced to an attention map, the channel mean of its squares (``p1 = 2``), and then
    normalized and compared as above; the factors' channel counts may then differ.

    In both modes, when the spatial sizes differ the larger factor is average-pooled to the smaller
    size first (as RepDistiller does). The teacher's factor is a target: pass it detached.

    Args:
        student_factor: ``(B, C, H, W)`` translator output.
        teacher_factor: ``(B, C, H', W')`` paraphraser factor of the teacher.
        mode: ``"paper"`` (the authors' definition) or ``"repdistiller"``.
    """
    check_feature_maps(student_factor, teacher_factor, "FT")
    student_factor, teacher_factor = pool_to_common_size(*promote(student_factor, teacher_factor))
    if mode == "repdistiller":
        student_factor, teacher_factor = student_factor.pow(2).mean(1), teacher_factor.pow(2).mean(1)
    elif mode == "paper":
        if student_factor.shape[1] != teacher_factor.shape[1]:
            raise ValueError(
                f"FT compares factors entry by entry: the translator must output the paraphraser's factor channels; "
                f"got student {student_factor.shape[1]} and teacher {teacher_factor.shape[1]} channels."
            )
    else:
        raise ValueError(f"mode must be 'paper' or 'repdistiller', got {mode!r}")
    student_unit = F.normalize(student_factor.flatten(1), dim=1, eps=1e-12)
    teacher_unit = F.normalize(teacher_factor.flatten(1), dim=1, eps=1e-12)
    return (student_unit - teacher_unit).abs().mean()
