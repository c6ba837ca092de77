"""FSP: the "flow of solution procedure" matrices, learned in an initialization stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from lit_kd.contract import KDBatch
from lit_kd.losses import fsp_loss
from lit_kd.methods.base import weighted_sum
from lit_kd.methods.feature import Layer
from lit_kd.methods.staged import StagedFeatureDistillation
from lit_kd.models import ModelSpec
from lit_kd.taps import stage_count

__all__ = ["FSP"]


class FSP(StagedFeatureDistillation):
    r"""Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network
    Minimization and Transfer Learning" (CVPR 2017).

    **Initialization stage** (``pretrain_epochs``, RepDistiller's ``--init_epochs 30``): the student's
    layers (everything but its classifier) learn to reproduce the teacher's FSP matrices,

    .. math::
        L_{init} = w_{init} \sum_{k=1}^{n-1} \frac{1}{B C_k C_{k+1}} \sum_b
                   \big\lVert G^t_k(b) - G^s_k(b) \big\rVert_F^2, \qquad
        G_k = \mathrm{FSP}(F_k, F_{k+1}) = \frac{1}{HW} \sum_{h,w} F_{k,\cdot,h,w} F_{k+1,\cdot,h,w}^\top

    (:func:`lit_kd.losses.fsp_loss`) over consecutive layers of the list, with their own
    optimizer at a constant learning rate. **Main stage**: the task, ``ce_weight · CE`` (plus
    ``kd_weight`` · KD and ``fsp_weight`` · FSP if set). One ``lit-kd fit`` runs both (see
    :mod:`lit_kd.methods.staged`).

    **Which layers.** The paper builds each FSP matrix from two layers of the *same* spatial size
    (the first and last layer of a residual stage). RepDistiller, whose schedule and numbers lit_kd
    follows, pairs consecutive entries of its feature list instead: the stem and the three stage
    outputs (``feat[:-1]``; for ResNets 32×32, 32×32, 16×16, 8×8), average-pooling the larger map of
    a pair to the smaller size (square, from the height): the inputs and outputs of the stages.
    That is the default here: every stage (``0 .. n-1``), ``pairing="consecutive"``,
    ``pool_pairs=True``. The paper's reading is ``pairing="disjoint"`` (layers ``[a1, b1, a2, b2,
    ...]`` give the matrices of ``(a1, b1), (a2, b2), ...``) with ``pool_pairs=False``, which refuses
    a pair of different spatial sizes; tap such pairs by module name (for the CIFAR ResNets e.g.
    ``layer2.0`` and ``layer2``, the outputs of the first and last block of a stage). Student and
    teacher need the same channel counts at every listed layer (the matrices are compared entry by
    entry).

    **Weights.** RepDistiller's initialization loss is the plain sum over pairs (``pretrain_weight``
    1); its ``-b 50`` for FSP multiplies a term the main stage never computes, so it has no effect,
    and the main stage is cross-entropy only (``-a 0``): ``fsp_weight`` 0, ``kd_weight`` 0.

    Args:
        student_layers: student layers, in network order; ``None``: every stage.
        teacher_layers: the teacher's layers; ``None``: every stage.
        pool_pairs: average-pool the larger map of a pair (RepDistiller); ``False``: refuse pairs
            of different spatial sizes (the paper).
        pairing: ``"consecutive"`` (every neighbouring pair, RepDistiller) or ``"disjoint"`` (layers
            taken two by two, the paper).
        pretrain_weight: weight of the FSP loss in the initialization stage.
        fsp_weight: weight of the FSP loss added in the main stage (0: none, as RepDistiller).
        pretrain_epochs: epochs of the initialization stage.
        pretrain_lr: its constant learning rate (``None``: the main optimizer's initial one).
        ce_weight: weight of the cross-entropy in the main stage.
        **kwargs: the :class:`~lit_kd.methods.staged.StagedFeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: Sequence[Layer] | None = None,
        teacher_layers: Sequence[Layer] | None = None,
        pool_pairs: bool = True,
        pairing: Literal["consecutive", "disjoint"] = "consecutive",
        pretrain_weight: float = 1.0,
        fsp_weight: float = 0.0,
        pretrain_epochs: int = 30,
        pretrain_lr: float | None = None,
        ce_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, student_layers, teacher_layers, pretrain_epochs=pretrain_epochs,
                         pretrain_lr=pretrain_lr, ce_weight=ce_weight, **kwargs)
        count = self.require_pairs("FSP")
        self.require_feature_maps("FSP")
        if pairing not in ("consecutive", "disjoint"):
            raise ValueError(f"FSP pairing must be 'consecutive' or 'disjoint', got {pairing!r}")
        if count < 2 or (pairing == "disjoint" and count % 2):
            raise ValueError(f"FSP builds matrices from pairs of layers: list at least 2 layers, and an even number "
                             f"for pairing='disjoint' (got {count}).")
        self.pairing = pairing
        student_channels = [shape[0] for shape in self.student_shapes]
        teacher_channels = [shape[0] for shape in self.teacher_shapes]
        if student_channels != teacher_channels:
            raise ValueError(
                f"FSP compares the matrices entry by entry, so student and teacher need the same channels at every "
                f"listed layer; got {student_channels} and {teacher_channels}. Choose layers of equal width (same-"
                "family pairs such as resnet32x4 -> resnet8x4), or use a method with connectors (FitNet, VID, AB)."
            )
        if not pool_pairs:
            for role, layers, shapes in (("student", self.student_tap.layers, self.student_shapes),
                                         ("teacher", self.teacher_tap.layers, self.teacher_shapes)):
                for k in self._pair_starts():
                    if shapes[k][1:] != shapes[k + 1][1:]:
                        raise ValueError(
                            f"FSP with pool_pairs=False pairs layers of one spatial size, but the {role} layers "
                            f"{layers[k]!r} {shapes[k][1:]} and {layers[k + 1]!r} {shapes[k + 1][1:]} differ. Set "
                            "pool_pairs: true (RepDistiller average-pools the larger map) or tap pairs of equal size "
                            "by module name (e.g. the first and last block of one stage)."
                        )
        self.pool_pairs = pool_pairs
        self.pretrain_weight, self.fsp_weight = pretrain_weight, fsp_weight

    def _pair_starts(self) -> range:
        count = len(self.student_tap.layers)
        return range(0, count - 1, 2) if self.pairing == "disjoint" else range(count - 1)

    def fsp(self, student_features: list[Tensor], teacher_features: list[Tensor]) -> Tensor:
        """The FSP loss over the layer pairs (consecutive layers, or disjoint pairs)."""
        if self.pairing == "consecutive":
            return fsp_loss(student_features, teacher_features)
        return sum(fsp_loss(student_features[k:k + 2], teacher_features[k:k + 2]) for k in self._pair_starts())

    def default_layers(self, network: nn.Module) -> list[Layer]:
        """Every stage, the stem included (RepDistiller's ``feat[:-1]``)."""
        return list(range(stage_count(network)))

    def pretrain_parameters(self) -> list[nn.Parameter]:
        return self.student_feature_parameters()

    def pretrain_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, student_features, _, teacher_features = self.forward_features(batch)
        return logits, weighted_sum(fsp=(self.pretrain_weight, self.fsp(student_features, teacher_features)))

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.fsp_weight:
            return self.plain_losses(batch)
        return super().training_losses(batch)

    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        return {"fsp": (self.fsp_weight, self.fsp(student_features, teacher_features))}
