"""InDistill: width matching by pruning, a layer-wise curriculum, then PKT on the embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_kd import metric_names as names
from lit_kd.contract import KDBatch
from lit_kd.losses import hint_loss, kd_loss, pkt_loss
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.base import DistillationModule, check_weights, weighted_sum
from lit_kd.models import ModelSpec
from lit_kd.pruning import l1_kept_filters, output_conv, prune_output_filters
from lit_kd.taps import FeatureTap, TapError, feature_channels, feature_info, stage_count

Layer = int | str


class LayerReader:
    """Logits, stage features and an embedding of one network from a single forward pass.

    ``embedding="pre_logits"`` is the classifier's input (``forward_head(..., pre_logits=True)``,
    which needs timm's ``forward_intermediates``/``forward_head``); anything else is a stage index
    or module name read with :class:`~lit_kd.taps.FeatureTap` and flattened.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], embedding: Layer) -> None:
        self.model = model
        self.pre_logits = embedding == "pre_logits"
        if self.pre_logits:
            missing = [a for a in ("forward_intermediates", "forward_head", "get_classifier") if not hasattr(model, a)]
            if missing:
                raise TapError(f"{type(model).__name__} has no {', '.join(missing)}, so its 'pre_logits' embedding "
                               "cannot be read: name the embedding layer (a module name) instead.")
            self.tap = FeatureTap(model, list(layers))  # checks the indices
            count = stage_count(model)
            self.layers = [int(layer) % count for layer in layers]
        else:
            self.tap = FeatureTap(model, [*layers, embedding])
        self._forward = self._read  # replaced by a compiled version by compile()

    def compile(self, **options: Any) -> None:
        """Read through ``torch.compile(**options)``: logits, features and embedding from one compiled
        graph (the method compiles its readers with their networks; see ``docs/speed.md``)."""
        self._forward = torch.compile(self._read, **options)

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`compile` replaced the eager read."""
        return self._forward != self._read

    def __call__(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        return self._forward(x)

    def _read(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        if not self.pre_logits:
            logits, features = self.tap(x)
            return logits, features[:-1], features[-1].flatten(1)
        stages = sorted(set(self.layers))
        if stages:
            final, features = self.model.forward_intermediates(x, indices=stages)
        else:  # PKT only: no layer pairs
            final, features = self.model.forward_features(x), []
        by_stage = dict(zip(stages, features))
        embedding = self.model.forward_head(final, pre_logits=True)
        return self.model.get_classifier()(embedding), [by_stage[i] for i in self.layers], embedding.flatten(1)


def pool_to_common_size(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two feature maps to the other's spatial size (per axis)."""
    if student.ndim != 4 or tuple(student.shape[-2:]) == tuple(teacher.shape[-2:]):
        return student, teacher
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)


class InDistill(DistillationModule):
    """Sarridis et al., "InDistill: Information flow-preserving knowledge distillation for model
    compression" (arXiv:2205.10003; official code ``gsarridis/InDistill``; spec §4).

    1. **Width matching**: teacher layer ``teacher_layers[l]`` is L1-pruned to the width of student
       layer ``student_layers[l]`` (output filters of its last conv with the smallest L1 norm go).
       The pruned layer reads the *unpruned* teacher activation of the layer before it, so with its
       kept bias, BN parameters and running statistics (eval mode) its output is exactly the kept
       channels of the teacher's layer output, read from the teacher's single forward pass.
       ``official_pruning=True`` runs physically pruned copies as the official code does instead
       (fresh conv bias, BN shift 0 and statistics reset, batch statistics) on the captured input.
    2. **Curriculum**, shallow to deep, one layer at a time: layer ``l`` (1-based) for
       ``base_epochs + l`` epochs with ``MSE(flatten(s_l), flatten(t~_l))`` (the larger map is
       average-pooled to the smaller one's size).
    3. **Embedding stage**: PKT (:func:`~lit_kd.losses.pkt_loss`) between the embeddings, until
       ``handover_epoch``, or to the end.
    4. Optional **hand-over** (the paper's v4 "warm-up" framing): from ``handover_epoch`` on, Hinton
       KD with the full teacher (``ce_weight * CE + kd_weight * T² KL``). For any other main method,
       start it from this run's checkpoint instead (``student.checkpoint``).

    No cross-entropy is used before the hand-over (as in the official code), so the classifier is
    untrained then: judge warm-up runs by retrieval mAP (:class:`~lit_kd.callbacks.RetrievalEvaluation`).

    Args:
        student_layers: student stage indices (``feature_info``), shallow to deep.
        teacher_layers: the matching teacher stage indices, same count.
        student_embedding: the student's embedding: ``"pre_logits"`` or a stage index / module name.
        teacher_embedding: the teacher's embedding, likewise.
        base_epochs: ``a`` of the curriculum: layer ``l`` is trained for ``a + l`` epochs.
        official_pruning: reproduce the official code's pruned layers (see 1.).
        reset_optimizer_each_epoch: clear the optimizer's state (e.g. Adam moments) at every epoch
            start, like the official code's per-epoch re-instantiation (the learning rate stays).
        handover_epoch: epoch at which KD takes over (``None``: PKT to the end).
        feature_weight: weight of the layer MSE.
        pkt_weight: weight of the PKT loss.
        temperature, ce_weight, kd_weight: the KD loss after the hand-over.
        probe_size: image size of the dummy forward that reads the layer widths.
        **kwargs: the :class:`~lit_kd.methods.base.DistillationModule` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        student_layers: list[int] = [0, 1, 2],  # noqa: B006  (LightningCLI shows the default)
        teacher_layers: list[int] = [0, 1, 2],  # noqa: B006
        student_embedding: Layer = "pre_logits",
        teacher_embedding: Layer = "pre_logits",
        base_epochs: int = 2,
        official_pruning: bool = False,
        reset_optimizer_each_epoch: bool = False,
        handover_epoch: int | None = None,
        feature_weight: float = 1.0,
        pkt_weight: float = 1.0,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, **kwargs)
        if len(student_layers) != len(teacher_layers):
            raise ValueError(
                f"InDistill pairs layers one to one: got {len(student_layers)} student layers {list(student_layers)} "
                f"and {len(teacher_layers)} teacher layers {list(teacher_layers)}. Give both lists the same length."
            )
        if base_epochs < 0:
            raise ValueError(f"base_epochs must be >= 0, got {base_epochs}")
        self.student_reader = LayerReader(self.student, student_layers, student_embedding)
        self.teacher_reader = LayerReader(self.teacher, teacher_layers, teacher_embedding)
        student_shapes = feature_channels(self.student_reader.tap, self.student_input.size or probe_size)
        teacher_shapes = feature_channels(self.teacher_reader.tap, self.teacher_input.size or probe_size)
        self.layer_epochs = [base_epochs + index for index in range(1, len(student_layers) + 1)]
        self.official_pruning = official_pruning
        self.reset_optimizer_each_epoch = reset_optimizer_each_epoch
        self.handover_epoch = handover_epoch
        check_weights(feature_weight=feature_weight, pkt_weight=pkt_weight, ce_weight=ce_weight, kd_weight=kd_weight)
        self.feature_weight, self.pkt_weight = feature_weight, pkt_weight
        self.temperature, self.ce_weight, self.kd_weight = check_temperature(temperature), ce_weight, kd_weight

        teacher_modules = [self._teacher_module(layer) for layer in teacher_layers]
        kept: list[Tensor] = []
        for pair, (s_shape, t_shape, module) in enumerate(zip(student_shapes[:len(student_layers)], teacher_shapes,
                                                               teacher_modules)):
            s_width, t_width = s_shape[0], t_shape[0]
            if s_width > t_width:
                raise ValueError(
                    f"Layer pair {pair}: student layer {student_layers[pair]} has {s_width} channels but teacher "
                    f"layer {teacher_layers[pair]} only {t_width}. Pruning can only narrow the teacher: pair each "
                    "student layer with a teacher layer at least as wide."
                )
            conv = output_conv(module)
            if conv.out_channels != t_width:
                raise ValueError(
                    f"Teacher layer {teacher_layers[pair]} outputs {t_width} channels but its last conv has "
                    f"{conv.out_channels} filters, so they cannot be ranked: pick a stage that ends in a conv block."
                )
            kept.append(l1_kept_filters(conv, s_width))
        for index, indices in enumerate(kept):  # buffers: they move with the module and are saved
            self.register_buffer(f"kept_filters_{index}", indices, persistent=True)
        self.pruned_teacher_layers = nn.ModuleList()
        if official_pruning:
            for module, indices in zip(teacher_modules, kept):
                self.pruned_teacher_layers.append(prune_output_filters(module, indices, reset=True).requires_grad_(False))
            self._captured: dict[int, Tensor] = {}
            for index, module in enumerate(teacher_modules):  # the unpruned input of each pruned layer
                module.register_forward_pre_hook(lambda _m, args, index=index: self._captured.__setitem__(index, args[0]))
            self._check_pruned_layers(teacher_layers, probe_size)

    @torch.no_grad()
    def _check_pruned_layers(self, teacher_layers: Sequence[int], probe_size: int) -> None:
        """Run every physically pruned layer once on the teacher's real input to it."""
        self.teacher_reader(self.teacher_input(torch.zeros(2, 3, *(2 * [self.teacher_input.size or probe_size]))))
        for index, layer in enumerate(self.pruned_teacher_layers):
            try:
                width = layer.eval()(self._captured.pop(index)).shape[1]
            except RuntimeError as err:
                width, reason = None, str(err).splitlines()[0]
            if width != len(self.kept_filters(index)):
                raise ValueError(
                    f"official_pruning needs plain stages (conv -> BN -> activation -> pooling); teacher layer "
                    f"{teacher_layers[index]} ({type(layer).__name__}) does not run pruned"
                    f"{'' if width is None else f' to {len(self.kept_filters(index))} channels'}"
                    f"{': ' + reason if width is None else ''}. Residual stages add a full-width shortcut: use "
                    "official_pruning=False, which reads the kept channels of the teacher's layer output."
                )
            layer.train()

    def _teacher_module(self, layer: int) -> nn.Module:
        return self.teacher.get_submodule(feature_info(self.teacher)[layer]["module"])

    def kept_filters(self, pair: int) -> Tensor:
        """Indices of the teacher filters kept for layer pair ``pair``."""
        return getattr(self, f"kept_filters_{pair}")

    # ------------------------------------------------------------------ the schedule
    def curriculum_stage(self, epoch: int) -> tuple[str, int | None]:
        """``("layer", pair)`` during the curriculum, then ``("embedding", None)``, then ``("handover", None)``."""
        if self.handover_epoch is not None and epoch >= self.handover_epoch:
            return "handover", None
        end = 0
        for pair, epochs in enumerate(self.layer_epochs):
            end += epochs
            if epoch < end:
                return "layer", pair
        return "embedding", None

    def curriculum_position(self, epoch: int) -> int:
        """The schedule as one number (logged as ``indistill/curriculum_stage``): ``1 .. L`` while layer
        pair ``1 .. L`` is trained, ``L + 1`` for the embedding (PKT), ``L + 2`` after the hand-over."""
        stage, pair = self.curriculum_stage(epoch)
        if stage == "layer":
            return int(pair) + 1
        return len(self.layer_epochs) + (1 if stage == "embedding" else 2)

    def on_train_epoch_start(self) -> None:
        if self.reset_optimizer_each_epoch:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
        position = self.curriculum_position(self.current_epoch)
        self.log(names.INDISTILL_STAGE, float(position), on_step=False, on_epoch=True, sync_dist=False)
        if self.current_epoch == 0 or position != self.curriculum_position(self.current_epoch - 1):
            stage, pair = self.curriculum_stage(self.current_epoch)
            what = {"layer": f"layer pair {position} of {len(self.layer_epochs)} (MSE)",
                    "embedding": "the embedding (PKT)", "handover": "the hand-over (KD with the full teacher)"}[stage]
            rank_zero_info(f"InDistill: from epoch {self.current_epoch}, training {what}")

    # ------------------------------------------------------------------ the losses
    def teacher_targets(self, teacher_image: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Teacher logits, pruned-layer outputs (one per pair) and embedding, from one teacher pass."""
        with self.no_teacher_grad():
            logits, features, embedding = self.teacher_reader(self.teacher_input(teacher_image))
            if self.official_pruning:
                pruned = [layer(self._captured.pop(i)) for i, layer in enumerate(self.pruned_teacher_layers)]
            else:
                pruned = [feature[:, self.kept_filters(i)] for i, feature in enumerate(features)]
        return self.in_run_precision((logits, pruned, embedding), teacher_image)

    def training_losses(self, batch: KDBatch) -> tuple[Tensor, dict[str, Tensor]]:
        teacher_logits, teacher_layers, teacher_embedding = self.teacher_targets(batch.teacher_image)
        logits, student_layers, student_embedding = self.student_reader(self.student_input(batch.image))
        stage, pair = self.curriculum_stage(self.current_epoch)
        if stage == "layer":
            student_feature, teacher_feature = pool_to_common_size(student_layers[pair], teacher_layers[pair])
            layer = hint_loss(student_feature.flatten(1), teacher_feature.flatten(1))
            return logits, weighted_sum(layer_mse=(self.feature_weight, layer))
        if stage == "embedding":
            return logits, weighted_sum(pkt=(self.pkt_weight, pkt_loss(student_embedding, teacher_embedding)))
        return logits, weighted_sum(ce=(self.ce_weight, self.cross_entropy(logits, batch.target)),
                                    kd=(self.kd_weight, kd_loss(logits, teacher_logits, self.temperature)))
