"""DIST: distillation of inter-class and intra-class relations with Pearson correlation."""

from __future__ import annotations

from torch import Tensor

from lit_kd.losses.logits import check_temperature
from lit_kd.losses.precision import promote
from lit_kd.losses.validation import check_logit_pair


def pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Pearson correlation of matching rows of ``a`` and ``b`` (shape ``(N, D)`` → ``(N,)``).

    .. math::
        \rho(u, v) = \frac{\langle u - \bar u,\, v - \bar v\rangle}
                          {\lVert u - \bar u\rVert\,\lVert v - \bar v\rVert + \epsilon}

    ``eps`` is added to the product of the norms (as in the official DIST code), so a constant row
    gives correlation 0 instead of NaN. ``eps = 0`` is the exact correlation.
    """
    a_centred = a - a.mean(dim=1, keepdim=True)
    b_centred = b - b.mean(dim=1, keepdim=True)
    return (a_centred * b_centred).sum(1) / (a_centred.norm(dim=1) * b_centred.norm(dim=1) + eps)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
               eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    r"""The two relation losses of DIST, ``(inter, intra)``, each multiplied by :math:`\tau^2`.

    With :math:`Y = \mathrm{softmax}(Z / \tau)` row-wise (a ``B × C`` matrix) and :math:`\rho` from
    :func:`pearson_correlation`:

    .. math::
        L_{inter} = \tau^2 \Big(1 - \frac{1}{B} \sum_{i=1}^{B} \rho\big(Y^s_{i,:}, Y^t_{i,:}\big)\Big), \qquad
        L_{intra} = \tau^2 \Big(1 - \frac{1}{C} \sum_{j=1}^{C} \rho\big(Y^s_{:,j}, Y^t_{:,j}\big)\Big)

    The intra-class term correlates each class's column across the batch, so it needs a batch of at
    least 2 to carry information; with one sample every centred column is zero and the term is
    :math:`\tau^2` (correlation 0 / eps), as in the official code.
    """
    check_logit_pair(student_logits, teacher_logits, "DIST")
    temperature = check_temperature(temperature)
    student_logits, teacher_logits = promote(student_logits, teacher_logits)
    student_probs = (student_logits / temperature).softmax(dim=1)
    teacher_probs = (teacher_logits / temperature).softmax(dim=1)
    inter = 1.0 - pearson_correlation(student_probs, teacher_probs, eps).mean()
    intra = 1.0 - pearson_correlation(student_probs.T, teacher_probs.T, eps).mean()
    return inter * temperature**2, intra * temperature**2


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0, eps: float = 1e-8) -> Tensor:
    r"""Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).

    .. math::
        L_{DIST} = \beta \, L_{inter} + \gamma \, L_{intra}

    with the terms of :func:`dist_terms`: a Pearson-correlation match of the predictions (per sample,
    inter-class relation) and of the class columns across the batch (intra-class relation), which
    relaxes KL's exact matching to a relational one. The official recipes weight this loss by 2 next
    to cross-entropy (i.e. effectively beta = gamma = 2) with :math:`\tau = 1` on ImageNet and
    :math:`\tau = 4` on CIFAR-100.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits.
        beta: weight of the inter-class term.
        gamma: weight of the intra-class term.
        temperature: softmax temperature :math:`\tau > 0`.
        eps: added to the product of norms in the correlation (official value 1e-8).
    """
    inter, intra = dist_terms(student_logits, teacher_logits, temperature, eps)
    return beta * inter + gamma * intra
