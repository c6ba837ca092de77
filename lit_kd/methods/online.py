"""Online distillation: several networks trained together teach each other; none is frozen.

:class:`OnlineDistillation` is the base (peers instead of a frozen teacher); :class:`DML` (Deep
Mutual Learning) and :class:`BDKD` (balanced divergences) are its methods. The losses are in
:mod:`lit_kd.losses.online`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses import bd_kd_student_loss, bd_kd_teacher_loss, dml_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import InputAdapter, StudentModule, network_record, weighted_sum
from lit_kd.models import ModelSpec, create_model, normalization_origin, resolve_normalization

__all__ = ["OnlineDistillation", "DML", "BDKD"]


class OnlineDistillation(StudentModule):
    """The base of online distillation: ``K >= 2`` peer networks trained together from scratch (or
    from their checkpoints), each learning from the others' current predictions. No network is
    frozen, so this is a :class:`~lit_kd.methods.base.StudentModule` and not a
    ``DistillationModule``.

    Peer 0 is the student: ``self.student``, what ``lit-kd export`` writes and what ``val/acc``
    measures. Peer ``i >= 1`` is ``self.peer_<i>``. Every peer has its own input adapter (its own
    normalization and input size) and reads the student's view of the batch. All peers are
    trainable modules: in the optimizer, in checkpoints (so a resumed run continues every peer), in
    training mode. One optimizer updates all of them from the sum of the peers' losses; since each
    peer's loss treats the other peers' outputs as constants (detached), the gradient of the sum
    with respect to a peer's weights is the gradient of that peer's own loss, exactly as with one
    optimizer per peer with the same settings (not so for a global gradient-norm clip, which then
    spans all peers). Validation logs every peer's accuracy as ``<split>/peer<i>_acc`` (peer 0 is
    also ``<split>/acc``).

    Subclasses implement :meth:`peer_losses`.

    Args:
        peers: the networks (specs or modules), the student first; at least two.
        **kwargs: the :class:`~lit_kd.methods.base.StudentModule` arguments.
    """

    def __init__(self, peers: Sequence[ModelSpec | nn.Module], **kwargs: Any) -> None:
        peers = list(peers)
        if len(peers) < 2:
            raise ValueError(f"{type(self).__name__} trains peers that teach each other and needs at least two "
                             f"networks in peers (the student first); got {len(peers)}.")
        if "student" in kwargs or "teacher" in kwargs:
            raise ValueError(f"{type(self).__name__} takes its networks as peers (the student is peers[0]); "
                             "it has no student or teacher argument.")
        super().__init__(peers[0], **kwargs)
        self.peer_names: list[str] = ["student"]
        for index, peer in enumerate(peers[1:], start=1):
            self._add_peer(f"peer_{index}", peer)
        # The peers are one list argument: record them as such, so a checkpoint reloads with the same call.
        del self.hparams["student"]
        self.hparams["peers"] = [network_record(p) for p in peers]

    def _add_peer(self, name: str, network: ModelSpec | nn.Module | dict) -> None:
        if isinstance(network, nn.Module):
            module, spec = network, None
        else:
            spec = ModelSpec(**network) if isinstance(network, dict) else network
            if spec.num_classes is None and self.num_classes is not None:
                spec = dataclasses.replace(spec, num_classes=self.num_classes)
            module = create_model(spec)
        mean, std, size = resolve_normalization(spec, module)
        setattr(self, name, module)
        setattr(self, f"{name}_input", InputAdapter(mean, std, size, normalize=self.normalize_inputs,
                                                    origin=normalization_origin(spec, module)))
        self.peer_names.append(name)

    @property
    def num_peers(self) -> int:
        return len(self.peer_names)

    def peers(self) -> dict[str, nn.Module]:
        """Every peer by attribute name, the student first."""
        return {name: getattr(self, name) for name in self.peer_names}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return self.peers()

    def _probe_networks(self) -> dict[str, nn.Module]:
        return self.peers()

    def _input_adapters(self) -> list[InputAdapter]:
        return [getattr(self, f"{name}_input") for name in self.peer_names]

    def peer_logits(self, images: Tensor) -> list[Tensor]:
        """Every peer's logits for pixels in [0, 1] (with autograd), the student's first."""
        return [getattr(self, name)(getattr(self, f"{name}_input")(images)) for name in self.peer_names]

    # ------------------------------------------------------------------ training
    def peer_losses(self, logits: list[Tensor], batch: KDBatch) -> list[Tensor]:
        """Each peer's loss, in the order of the peers, each treating the other peers' logits as constants."""
        raise NotImplementedError(f"{type(self).__name__} must implement peer_losses(logits, batch)")

    def require_labels(self, batch: KDBatch) -> Tensor:
        if batch.target is None or batch.target.ndim != 1:
            raise DataContractError(f"{type(self).__name__} trains every peer with the cross-entropy on class labels, "
                                    "and the batch has none. Give labelled data.")
        return batch.target

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.peer_logits(batch.image)
        losses = self.peer_losses(logits, batch)
        terms = {f"peer{index}_loss": (1.0, loss) for index, loss in enumerate(losses)}
        return logits[0], weighted_sum(**terms)

    # ------------------------------------------------------------------ every peer's accuracy
    def _setup_metrics(self, num_classes: int) -> None:
        super()._setup_metrics(num_classes)
        self.peer_metrics = nn.ModuleDict()

    def peer_metric_key(self, split: str, index: int) -> str:
        """The key in ``self.peer_metrics`` of peer ``index``'s accuracy on split ``split`` (made on first use)."""
        from torchmetrics.classification import MulticlassAccuracy

        key = f"{split.replace('.', '_')}:peer{index}"
        if key not in self.peer_metrics:
            self.peer_metrics[key] = MulticlassAccuracy(self.output_classes, average="micro").to(self.device)
        return key

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        batch = KDBatch.from_any(batch)
        logits = super().validation_step(batch, batch_idx, dataloader_idx)
        split = self.split_name(dataloader_idx)
        others = [getattr(self, name)(getattr(self, f"{name}_input")(batch.image)) for name in self.peer_names[1:]]
        all_logits = [logits, *others]
        for index, peer_logits in enumerate(all_logits):
            key = self.peer_metric_key(split, index)
            self.peer_metrics[key].update(peer_logits, batch.target)
            self.log(f"{split}/peer{index}_acc", self.peer_metrics[key], batch_size=batch.size,
                     add_dataloader_idx=False, metric_attribute=f"peer_metrics.{key}")
        return logits


class DML(OnlineDistillation):
    r"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018): K peers trained together,
    each with the cross-entropy and the KL from every other peer's prediction to its own.

    .. math::
        L_k = \mathrm{CE}(z^k, y) + \frac{1}{K-1}\sum_{l \ne k}
              \frac{1}{B}\sum_b \mathrm{KL}\big(p^l_b \,\|\, p^k_b\big), \qquad p = \mathrm{softmax}(z)

    (:func:`~lit_kd.losses.dml_loss`), the other peers detached; the peers minimize
    :math:`\sum_k L_k` (one optimizer, see :class:`OnlineDistillation`), which updates every peer
    with its own loss from the same forward pass, as the official TensorFlow code does. No
    temperature. ``label_smoothing`` (a :class:`StudentModule` argument) smooths each peer's CE
    (the official scripts use 0.1; the paper none).

    **Official reading.** The official code sums the KL terms over the other peers instead of
    averaging (the same for two peers) and guards the KL with two 1e-8 constants;
    ``official=True`` reproduces both.

    Args:
        peers: the networks, the student first (the DML paper pairs equal or different networks,
            e.g. two ResNet-32s, or WRN-28-10 with ResNet-32).
        official: the official KL (summed over peers, with the 1e-8 guards).
        **kwargs: the :class:`OnlineDistillation` arguments.
    """

    def __init__(self, peers: Sequence[ModelSpec | nn.Module], official: bool = False, **kwargs: Any) -> None:
        super().__init__(peers, **kwargs)
        self.official = official

    def peer_losses(self, logits: list[Tensor], batch: KDBatch) -> list[Tensor]:
        labels = self.require_labels(batch)
        return [dml_loss(own, [other for j, other in enumerate(logits) if j != k], labels, self.label_smoothing,
                         self.official) for k, own in enumerate(logits)]


class BDKD(OnlineDistillation):
    r"""BD-KD, balanced divergences for online distillation (Amara, Sepahvand, Meyer, Gross & Clark,
    "BD-KD: Balancing the Divergences for Online Knowledge Distillation", 2022): a compact student
    (peer 0) and a larger teacher (peer 1) trained together.

    .. math::
        L_S &= \mathrm{CE}(z^s, y) + \beta T^2 \frac{1}{B}\sum_b
              \big[w^F_b\, \mathrm{KL}(p^t_b \| p^s_b) + w^R_b\, \mathrm{KL}(p^s_b \| p^t_b)\big] \\
        L_T &= \mathrm{CE}(z^t, y) + \beta T^2 \frac{1}{B}\sum_b \mathrm{KL}(p^s_b \| p^t_b)

    (:func:`~lit_kd.losses.bd_kd_student_loss`, :func:`~lit_kd.losses.bd_kd_teacher_loss`), each with
    the other network detached, :math:`p = \mathrm{softmax}(z/T)`; the per-sample weights
    :math:`(w^F, w^R)` are ``(1, emphasis)`` where the student's softened prediction has a higher
    entropy than the teacher's and ``(emphasis, 1)`` elsewhere
    (:func:`~lit_kd.losses.bd_kd_balance_weights`).

    **Reconstruction, not the official method.** No official code of BD-KD was found and only the
    abstract of the paper could be read here: the balancing rule above (sample-wise weighting of
    the forward and the reverse KL by the entropy gap) is lit_kd's reconstruction of the published
    description, and the defaults (``temperature`` 1, ``emphasis`` 2, ``kd_weight`` 1) are not the
    paper's values. The losses are tested against hand-derived numbers only.

    Args:
        peers: exactly two networks: the student, then the (larger) teacher.
        temperature: softmax temperature T of the divergences.
        emphasis: the weight λ of the emphasized divergence.
        kd_weight: β, the weight of the divergence terms of both losses.
        **kwargs: the :class:`OnlineDistillation` arguments.
    """

    def __init__(
        self,
        peers: Sequence[ModelSpec | nn.Module],
        temperature: float = 1.0,
        emphasis: float = 2.0,
        kd_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if len(list(peers)) != 2:
            raise ValueError(f"BDKD trains a student and a teacher together: give exactly two peers (the student, then "
                             f"the larger teacher); got {len(list(peers))}.")
        super().__init__(peers, **kwargs)
        if self.label_smoothing:
            raise ValueError("BDKD's losses use the plain cross-entropy: leave label_smoothing at 0.")
        if not emphasis > 0:
            raise ValueError(f"emphasis must be > 0, got {emphasis}.")
        self.temperature = check_temperature(temperature)
        self.emphasis = emphasis
        self.kd_weight = kd_weight

    def peer_losses(self, logits: list[Tensor], batch: KDBatch) -> list[Tensor]:
        labels = self.require_labels(batch)
        student, teacher = logits
        return [bd_kd_student_loss(student, teacher, labels, self.temperature, self.emphasis, self.kd_weight),
                bd_kd_teacher_loss(teacher, student, labels, self.temperature, self.kd_weight)]
