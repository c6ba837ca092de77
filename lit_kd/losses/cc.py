"""Correlation congruence: match the kernel correlations between the samples of a batch."""

from __future__ import annotations

import math

from torch import Tensor

from lit_kd.losses.precision import promote

__all__ = ["cc_loss", "cc_loss_repdistiller", "correlation_matrix"]


def _check_batch(student: Tensor, teacher: Tensor) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"CC needs the same batch for both networks; got {student.shape[0]} student and "
                         f"{teacher.shape[0]} teacher embeddings.")
    if student.shape[0] < 2:
        raise ValueError("CC correlates the samples of a batch with each other: it needs a batch of at least 2.")


def correlation_matrix(embedding: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    r"""``(B, B)`` sample correlations by the Taylor-expanded Gaussian RBF kernel of Peng et al. (ICCV 2019).

    .. math::
        k(x_i, x_j) = e^{-\gamma \lVert x_i - x_j \rVert^2}
        \approx e^{-2\gamma} \sum_{p=0}^{P} \frac{(2\gamma)^p}{p!} \, (x_i^\top x_j)^p

    The expansion is exact (as :math:`P \to \infty`) for unit-norm embeddings; like torchdistill's
    implementation, the embeddings are used as given.

    Args:
        embedding: ``(B, ...)`` embeddings (flattened).
        gamma: the kernel's :math:`\gamma` (the paper uses 0.4).
        order: the expansion order :math:`P` (the paper uses 2).
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if order < 0 or int(order) != order:
        raise ValueError(f"order must be an integer >= 0, got {order}")
    flat = embedding.flatten(1)
    inner = flat @ flat.T
    kernel = inner.new_ones(inner.shape)
    for p in range(1, int(order) + 1):
        kernel = kernel + (2 * gamma) ** p / math.factorial(p) * inner.pow(p)
    return math.exp(-2 * gamma) * kernel


def cc_loss(student_embedding: Tensor, teacher_embedding: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    r"""Correlation congruence, Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019).

    .. math::
        L_{CC} = \frac{1}{B^2} \big\lVert \psi(F^t) - \psi(F^s) \big\rVert_F^2

    with :math:`\psi` the :func:`correlation_matrix` of a batch of embeddings (each network's
    features after its own linear embedding to a common width; the kernel needs no common width,
    only the batch must agree). This is the paper's loss. RepDistiller's ``Correlation`` computes
    something else (see :func:`cc_loss_repdistiller`); torchdistill's ``CCKDLoss`` uses the same
    kernel but the unsquared Frobenius distance divided by :math:`B^2`.

    Args:
        student_embedding: ``(B, ...)`` student embeddings.
        teacher_embedding: ``(B, ...)`` teacher embeddings.
        gamma: the Gaussian kernel's :math:`\gamma`.
        order: the Taylor expansion order :math:`P`.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    _check_batch(student, teacher)
    difference = correlation_matrix(teacher, gamma, order) - correlation_matrix(student, gamma, order)
    return difference.pow(2).mean()


def cc_loss_repdistiller(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    r"""The ``Correlation`` loss that RepDistiller actually implements under the name CC.

    .. math::
        L = \frac{1}{B - 1} \sum_{i=1}^{B-1} \sum_{d} \lvert s_i - t_i \rvert_d \, \lvert s_{i+1} - t_{i+1} \rvert_d

    the product of the absolute errors of consecutive samples of the batch (in batch order),
    summed over dimensions and averaged over the :math:`B - 1` neighbouring pairs. It needs
    embeddings of one width (RepDistiller embeds both to 128 by a linear layer) and is not the
    paper's kernel correlation (:func:`cc_loss`). RepDistiller's CIFAR numbers for CC (weight 0.02)
    were obtained with this form; its source says it restructures code shared by the paper's authors.
    """
    student, teacher = (e.flatten(1) for e in promote(student_embedding, teacher_embedding))
    _check_batch(student, teacher)
    if student.shape != teacher.shape:
        raise ValueError(f"RepDistiller's CC compares embeddings elementwise: it needs one width; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}. Embed both to one width.")
    error = (student - teacher).abs()
    return (error[:-1] * error[1:]).sum(dim=1).mean()
