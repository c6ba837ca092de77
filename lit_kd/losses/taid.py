"""Temporally Adaptive Interpolated Distillation (TAID): the interpolated target and the schedule of t."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_logit_pair


def taid_loss(student_logits: Tensor, teacher_logits: Tensor, t: float, official: bool = False) -> Tensor:
    r"""Shing, Misaki, Bao, Yokoi, Akiba, "TAID: Temporally Adaptive Interpolated Distillation for
    Efficient Knowledge Transfer in Language Models" (ICLR 2025).

    .. math::
        p_t = \mathrm{softmax}\big((1 - t)\,\mathrm{sg}(z^s) + t\, z^t\big), \qquad
        J_{TAID} = \frac{1}{B} \sum_b \mathrm{KL}\big(p_{t,b} \,\|\, \mathrm{softmax}(z^s_b)\big)

    The target interpolates in logit space between the student's own (detached, :math:`\mathrm{sg}`)
    logits and the teacher's, moving from the student (:math:`t = 0`) to the teacher (:math:`t = 1`,
    plain forward KL at temperature 1) as :func:`taid_update` raises :math:`t`.

    ``official=True`` returns the official code's value, the cross-entropy
    :math:`-\sum_c p_{t,c} \log q_c = \mathrm{KL} + H(p_t)`: the same gradient, a larger value. The
    value matters because it drives the adaptive update of :math:`t`. The official code is written
    for LLM tokens (``B × L × V`` logits and a padding mask, computed in float32); here every row of
    ``(B, C)`` class logits is one token and all rows count.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        t: interpolation coefficient in ``[0, 1]``.
        official: return the cross-entropy as the official code does.
    """
    check_logit_pair(student_logits, teacher_logits, "TAID")
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"TAID's interpolation coefficient t must lie in [0, 1], got {t}.")
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    log_target = F.log_softmax((1.0 - t) * student_logits.detach() + t * teacher_logits, dim=1)
    log_student = F.log_softmax(student_logits, dim=1)
    if official:
        return -(log_target.exp() * log_student).sum(dim=1).mean()
    return (log_target.exp() * (log_target - log_student)).sum(dim=1).mean()


def taid_update(t: float, momentum: float, previous_loss: float, loss: float, step: int, total_steps: int,
                t_start: float = 0.4, t_end: float = 1.0, alpha: float = 5e-4, beta: float = 0.99,
                adaptive: bool = True) -> tuple[float, float, float]:
    r"""One adaptive update of TAID's :math:`t`, returning the new ``(t, momentum, previous_loss)``.

    With :math:`J` the loss of this step and :math:`J_{prev}` that of the previous one:

    .. math::
        \delta = \frac{J_{prev} - J}{J_{prev} + 10^{-15}}, \qquad m \leftarrow \beta m + (1 - \beta)\,\delta

        t \leftarrow \min\Big(t_{end},\; \max\big(t_{lin},\; t + \alpha\, \sigma(m)\,(1 - t)\big)\Big), \qquad
        t_{lin} = t_{start} + (t_{end} - t_{start}) \frac{\mathrm{step}}{\mathrm{total\_steps}}

    so :math:`t` never decreases, never falls behind the linear schedule and moves faster while the
    loss is still improving quickly. ``adaptive=False`` sets :math:`t = t_{lin}`. As in the official
    code, the first call (``previous_loss`` infinite, the initial state) only records the loss: ``t``
    and the momentum stay as they are. Start from ``(t_start, 0.0, math.inf)``; ``step`` counts the
    optimizer steps completed before this one (Lightning's ``trainer.global_step`` in
    ``training_step``) and ``total_steps`` their total (``trainer.estimated_stepping_batches``). The
    official code feeds the loss value of :func:`taid_loss` with ``official=True``.

    Defaults: ``t_start`` 0.4 (argparse default; the released Llama-2 / StableLM scripts use 0.2),
    ``t_end`` 1, ``alpha`` 5e-4, ``beta`` 0.99.
    """
    if not (0.0 <= t_start < 1.0 and 0.0 < t_end <= 1.0 and 0.0 <= alpha <= 1.0):
        raise ValueError(f"TAID needs 0 <= t_start < 1, 0 < t_end <= 1 and 0 <= alpha <= 1; got t_start={t_start}, "
                         f"t_end={t_end}, alpha={alpha}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}.")
    loss = float(loss)
    if math.isinf(previous_loss):
        return t, momentum, loss
    relative_change = (previous_loss - loss) / (previous_loss + 1e-15)
    momentum = beta * momentum + (1.0 - beta) * relative_change
    t_linear = t_start + (t_end - t_start) * step / total_steps
    if adaptive:
        sigmoid = 1.0 / (1.0 + math.exp(-momentum))
        t = min(t_end, max(t_linear, t + alpha * sigmoid * (1.0 - t)))
    else:
        t = t_linear
    return t, momentum, loss
