"""Losses on logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    r"""Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    .. math::
        L_{KD} = T^2 \cdot \frac{1}{B} \sum_{b=1}^{B}
                 \mathrm{KL}\big(\mathrm{softmax}(z^t_b / T) \,\|\, \mathrm{softmax}(z^s_b / T)\big)

    KL(teacher || student), summed over classes and averaged over the batch ("batchmean", not the
    per-element mean that ``nn.KLDivLoss()`` defaults to), times T² so that gradient magnitudes do
    not shrink with the temperature. Computed in at least float32 (the losses' precision policy).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape: teacher and student must predict the same classes."
        )
    check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """``temperature`` as a float if it is a usable softmax temperature (finite and > 0), else a ValueError."""
    value = float(temperature)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature}")
    return value
