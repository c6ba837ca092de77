"""Online distillation losses: networks trained together teach each other (DML, BD-KD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote

__all__ = ["dml_loss", "bd_kd_balance_weights", "bd_kd_student_loss", "bd_kd_teacher_loss"]

# The official DML code (TensorFlow) guards its KL against division by zero with this constant.
DML_OFFICIAL_EPSILON = 1e-8


def _check_pair(logits: Tensor, other_logits: Tensor, labels: Tensor, names: tuple[str, str]) -> None:
    if logits.dim() != 2 or other_logits.shape != logits.shape:
        raise ValueError(f"{names[0]} logits {tuple(logits.shape)} and {names[1]} logits {tuple(other_logits.shape)} "
                         "must both be (batch, classes) of one shape: the networks must predict the same classes.")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0] or labels.is_floating_point():
        raise ValueError("Labels must be a (batch,) tensor of class indices; "
                         f"got {tuple(labels.shape)} ({labels.dtype}).")


def _kl(target_log_probabilities: Tensor, log_probabilities: Tensor) -> Tensor:
    """Per-sample :math:`\\mathrm{KL}(p \\| q)` from log-probabilities, shape ``(B,)``."""
    return (target_log_probabilities.exp() * (target_log_probabilities - log_probabilities)).sum(dim=-1)


def dml_loss(logits: Tensor, peer_logits: Sequence[Tensor], labels: Tensor, label_smoothing: float = 0.0,
             official: bool = False) -> Tensor:
    r"""One network's loss in Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018).

    .. math::
        L_k = \mathrm{CE}(z^k, y) + \frac{1}{K-1}\sum_{l \ne k}
              \frac{1}{B}\sum_{b=1}^{B} \mathrm{KL}\big(p^l_b \,\|\, p^k_b\big),
        \qquad p = \mathrm{softmax}(z)

    each peer :math:`l` is a fixed target: KL from the peer's prediction to this network's,
    summed over classes, averaged over the batch, no temperature. The peers' logits are detached
    (each network's optimizer updates only its own parameters). ``label_smoothing`` smooths the
    one-hot label of the CE as in ``F.cross_entropy`` (the official scripts use 0.1).

    The official TensorFlow code sums the KL terms over the peers instead of averaging (the same
    for two networks) and computes each as
    :math:`\frac{1}{B}\sum_b\sum_c p^l_c \log(10^{-8} + p^l_c / (p^k_c + 10^{-8}))`;
    ``official=True`` reproduces both.
    """
    peers = list(peer_logits)
    if not peers:
        raise ValueError("DML needs at least one peer's logits.")
    for peer in peers:
        _check_pair(logits, peer, labels, ("Network", "peer"))
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}.")
    logits, *peers = promote(logits, *[peer.detach() for peer in peers])
    cross_entropy = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if official:
        probabilities = F.softmax(logits, dim=-1)
        terms = []
        for peer in peers:
            peer_probabilities = F.softmax(peer, dim=-1)
            ratio = peer_probabilities / (probabilities + DML_OFFICIAL_EPSILON)
            terms.append((peer_probabilities * torch.log(DML_OFFICIAL_EPSILON + ratio)).sum(dim=-1).mean())
        return cross_entropy + torch.stack(terms).sum()
    log_probabilities = F.log_softmax(logits, dim=-1)
    kl = torch.stack([_kl(F.log_softmax(peer, dim=-1), log_probabilities).mean() for peer in peers])
    return cross_entropy + kl.mean()


def bd_kd_balance_weights(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                          emphasis: float = 2.0) -> tuple[Tensor, Tensor]:
    r"""BD-KD's per-sample weights of the forward and the reverse KL (Amara, Sepahvand, Meyer,
    Gross & Clark, "BD-KD: Balancing the Divergences for Online Knowledge Distillation", 2022).

    The weights are set per sample by the entropy gap between the student's and the teacher's
    softened predictions :math:`H(p^s_b)` and :math:`H(p^t_b)`:

    .. math::
        (w^{F}_b, w^{R}_b) = \begin{cases}
            (1, \lambda) & H(p^s_b) > H(p^t_b) \text{ (student less confident: reverse KL, mode-seeking)} \\
            (\lambda, 1) & \text{otherwise (student as or more confident: forward KL, mode-covering)}
        \end{cases}

    :math:`\lambda` = ``emphasis``. The weights carry no gradient. Returns ``(w_forward, w_reverse)``,
    each ``(B,)``. No official implementation was found and the paper's text could not be consulted
    here; the rule follows the published description (sample-wise weighting of forward and
    reverse KL guided by the entropy gap, to balance the student's confidence), and the value of
    :math:`\lambda` is a hyperparameter to set from the paper.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"Student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must both be (batch, classes) of one shape.")
    check_temperature(temperature)
    if not emphasis > 0:
        raise ValueError(f"emphasis must be > 0, got {emphasis}.")
    with torch.no_grad():
        student_logits, teacher_logits = promote(student_logits, teacher_logits)
        log_student = F.log_softmax(student_logits / temperature, dim=-1)
        log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
        student_entropy = -(log_student.exp() * log_student).sum(dim=-1)
        teacher_entropy = -(log_teacher.exp() * log_teacher).sum(dim=-1)
        student_less_confident = student_entropy > teacher_entropy
        one = torch.ones_like(student_entropy)
        forward = torch.where(student_less_confident, one, one * emphasis)
        reverse = torch.where(student_less_confident, one * emphasis, one)
    return forward, reverse


def bd_kd_student_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 1.0,
                       emphasis: float = 2.0, kd_weight: float = 1.0) -> Tensor:
    r"""BD-KD's student loss (Amara et al., 2022): CE plus forward and reverse KL, balanced per sample.

    .. math::
        L_S = \mathrm{CE}(z^s, y) + \beta \, T^2 \, \frac{1}{B}\sum_{b=1}^{B}
              \Big[w^F_b \, \mathrm{KL}\big(p^t_b \,\|\, p^s_b\big)
                 + w^R_b \, \mathrm{KL}\big(p^s_b \,\|\, p^t_b\big)\Big]

    with :math:`p = \mathrm{softmax}(z / T)`, the weights of :func:`bd_kd_balance_weights` and
    :math:`\beta` = ``kd_weight``. The teacher (trained at the same time by
    :func:`bd_kd_teacher_loss`) is detached here.
    """
    _check_pair(student_logits, teacher_logits, labels, ("Student", "teacher"))
    check_temperature(temperature)
    teacher_logits = teacher_logits.detach()
    forward_weight, reverse_weight = bd_kd_balance_weights(student_logits, teacher_logits, temperature, emphasis)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    forward = _kl(log_teacher, log_student)
    reverse = _kl(log_student, log_teacher)
    balanced = (forward_weight.to(forward.dtype) * forward + reverse_weight.to(reverse.dtype) * reverse).mean()
    return F.cross_entropy(student_logits, labels) + kd_weight * temperature**2 * balanced


def bd_kd_teacher_loss(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, temperature: float = 1.0,
                       kd_weight: float = 1.0) -> Tensor:
    r"""BD-KD's teacher (peer) loss (Amara et al., 2022): CE plus the reverse KL as a regularizer.

    .. math::
        L_T = \mathrm{CE}(z^t, y) + \beta \, T^2 \, \frac{1}{B}\sum_{b=1}^{B} \mathrm{KL}\big(p^s_b \,\|\, p^t_b\big)

    "reverse" as seen from the student (forward KL being :math:`\mathrm{KL}(p^t \| p^s)`); the
    teacher learns towards the student's prediction as in DML. The student is detached here.
    """
    _check_pair(teacher_logits, student_logits, labels, ("Teacher", "student"))
    check_temperature(temperature)
    teacher_logits, student_logits = promote(teacher_logits, student_logits.detach())
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    return F.cross_entropy(teacher_logits, labels) + kd_weight * temperature**2 * _kl(log_student, log_teacher).mean()
