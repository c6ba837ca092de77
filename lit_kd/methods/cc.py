"""CC: correlation congruence, with the linear embeddings it compares."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import cc_loss, cc_loss_repdistiller
from lit_kd.methods.feature import FeatureDistillation, Layer
from lit_kd.models import ModelSpec

__all__ = ["CorrelationEmbed", "CC"]


class CorrelationEmbed(nn.Module):
    """A linear embedding of flattened features, one per network, for CC.

    Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019) compare
    correlations of embedded features; RepDistiller embeds the last (pooled) feature of each
    network by one linear layer to ``embed_dim`` = 128, without normalization.

    Args:
        in_features: width of the flattened feature.
        embed_dim: width of the embedding.
    """

    def __init__(self, in_features: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, embed_dim)

    def forward(self, feature: Tensor) -> Tensor:
        flat = feature.flatten(1)
        if flat.shape[1] != self.linear.in_features:
            raise ValueError(f"CorrelationEmbed expects {self.linear.in_features} features per sample; got "
                             f"{tuple(feature.shape)}.")
        return self.linear(flat)


class CC(FeatureDistillation):
    r"""Peng, Jin, Liu, Li, Wu, Liu, Zhou & Zhang, "Correlation Congruence for Knowledge
    Distillation" (ICCV 2019).

    .. math::
        L = w_{ce} \, \mathrm{CE}(z_s, y) + \beta \, \frac{1}{B^2}
            \big\lVert \psi(e_t(f^t)) - \psi(e_s(f^s)) \big\rVert_F^2

    with :math:`e_s, e_t` one trainable linear embedding per network (:class:`CorrelationEmbed`, to
    ``embed_dim`` = 128) and :math:`\psi` the ``B × B`` correlation matrix of the Taylor-expanded
    Gaussian RBF kernel (:func:`lit_kd.losses.cc_loss`, :math:`\gamma = 0.4`, order 2): the paper's
    loss (``form="paper"``, the default). That Taylor form equals the Gaussian kernel
    :math:`e^{-\gamma \lVert x_i - x_j \rVert^2}` only for unit-norm embeddings
    (:math:`\lVert x_i - x_j \rVert^2 = 2 - 2 x_i^\top x_j`), so by default the embeddings are
    L2-normalized first (``normalize=True``, lit_kd's reading of the derivation); ``normalize=False``
    uses them as given, as torchdistill's ``CCKDLoss`` does.

    ``form="repdistiller"`` computes what RepDistiller's ``Correlation`` computes instead
    (:func:`lit_kd.losses.cc_loss_repdistiller`: the products of consecutive samples' absolute
    embedding errors), the form behind RepDistiller's published CIFAR-100 numbers and its weight
    :math:`\beta = 0.02`. Both embeddings are trained with the student (RepDistiller's
    ``trainable_list``); the teacher's features reach them detached, so no gradient reaches the teacher.

    Defaults: the pooled embedding (``"pre_logits"``, RepDistiller's ``feat[-1]``), embed_dim 128,
    :math:`\beta = 0.02` (RepDistiller ``-b 0.02``, tuned for its form; the paper gives no CIFAR
    weight for this architecture family), CE weight 1, no KD term.

    Args:
        student_layer: the student feature (``"pre_logits"``, a stage index or module name).
        teacher_layer: the teacher feature.
        form: ``"paper"`` (kernel correlation congruence) or ``"repdistiller"``.
        normalize: L2-normalize the embeddings before the kernel (``form="paper"``).
        embed_dim: width of the two linear embeddings.
        gamma: the kernel's :math:`\gamma` (``form="paper"``).
        order: the Taylor expansion order (``form="paper"``).
        cc_weight: :math:`\beta`.
        ce_weight: weight of the cross-entropy.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layer: Layer = "pre_logits",
        teacher_layer: Layer = "pre_logits",
        form: Literal["paper", "repdistiller"] = "paper",
        normalize: bool = True,
        embed_dim: int = 128,
        gamma: float = 0.4,
        order: int = 2,
        cc_weight: float = 0.02,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], ce_weight=ce_weight, **kwargs)
        if form not in ("paper", "repdistiller"):
            raise ValueError(f"CC form must be 'paper' or 'repdistiller', got {form!r}")
        (student_shape,), (teacher_shape,) = self.student_shapes, self.teacher_shapes
        self.student_embed = CorrelationEmbed(math.prod(student_shape), embed_dim)
        self.teacher_embed = CorrelationEmbed(math.prod(teacher_shape), embed_dim)
        self.form, self.normalize, self.gamma, self.order, self.cc_weight = form, normalize, gamma, order, cc_weight

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "student_embed": self.student_embed, "teacher_embed": self.teacher_embed}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if any(len(shape) > 1 for shape in (*self.student_shapes, *self.teacher_shapes)):
            self.require_probe_size("CC")  # the embeddings of flattened maps are sized for the probe images

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        (student,), (teacher,) = student_features, teacher_features
        student_embedding, teacher_embedding = self.student_embed(student), self.teacher_embed(teacher)
        if self.form == "repdistiller":
            value = cc_loss_repdistiller(student_embedding, teacher_embedding)
        else:
            if self.normalize:
                student_embedding = F.normalize(student_embedding, dim=1)
                teacher_embedding = F.normalize(teacher_embedding, dim=1)
            value = cc_loss(student_embedding, teacher_embedding, self.gamma, self.order)
        return {"cc": (self.cc_weight, value)}

