"""CRD: the method :class:`CRD`, its embedding heads, the momentum memory bank of all samples'
embeddings, and negative sampling.

Tian et al., "Contrastive Representation Distillation" (ICLR 2020). The memory holds one unit
embedding per training sample for each network; every step the current batch is scored against
its positive and ``K`` sampled negatives from the *other* network's memory
(:func:`lit_kd.losses.crd.crd_nce_loss`), and afterwards the batch's rows are moved towards the
new embeddings by :func:`update_memory`.

Distributed training: :func:`update_memory` is stateless and deterministic (duplicates resolved
by a fixed rule), so ranks that gather the global batch's ``(index, embeddings)`` and apply it in
the same order stay identical; negatives come from a ``torch.Generator``, so ranks seeded alike
draw alike; the normalization constants should be estimated from scores averaged over ranks
(:meth:`ContrastMemory.set_normalization`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.contract import DataContractError, KDBatch
from lit_kd.losses.crd import contrast_scores, crd_nce_loss, estimate_normalization
from lit_kd.losses.logits import check_temperature
from lit_kd.methods.feature import FeatureDistillation
from lit_kd.models import ModelSpec
from lit_kd.seeding import SeededDraws, base_seed, mix_seed

__all__ = ["CRD", "CRDCriterion", "CRDEmbed", "ContrastMemory", "draw_negatives",
           "draw_negatives_other_classes", "make_contrast_index", "update_memory"]


class CRDEmbed(nn.Module):
    """CRD's embedding head: flatten, a linear layer to ``embed_dim``, L2 normalization.

    Args:
        in_features: width of the flattened feature (e.g. the pooled penultimate feature).
        embed_dim: width of the contrastive embedding (128 in CRD).
    """

    def __init__(self, in_features: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, embed_dim)

    def forward(self, feature: Tensor) -> Tensor:
        flat = feature.flatten(1)
        if flat.shape[1] != self.linear.in_features:
            raise ValueError(f"CRDEmbed expects {self.linear.in_features} features per sample; got "
                             f"{tuple(feature.shape)}.")
        return F.normalize(self.linear(flat), dim=1, eps=1e-12)


def update_memory(memory: Tensor, index: Tensor, features: Tensor, momentum: float) -> Tensor:
    r"""The memory after one momentum update of rows ``index``; ``memory`` itself is left unchanged.

    .. math::
        m_i \leftarrow \frac{\beta m_i + (1 - \beta) f_i}{\lVert \beta m_i + (1 - \beta) f_i \rVert_2}

    for every updated sample :math:`i` (:math:`\beta` = ``momentum``, 0.5 in CRD). When an index
    occurs more than once, its last occurrence wins (each computed from the old row), which is
    what an in-place ``index_copy_`` does on the CPU and is deterministic everywhere. The result
    depends on the arguments alone, so ranks applying the same gathered batch stay equal. The
    update is out of place: it costs one copy of the memory.

    Args:
        memory: ``(N, D)`` the memory rows.
        index: ``(B,)`` sample indices (long).
        features: ``(B, D)`` new embeddings (detached).
        momentum: weight of the old rows, in ``[0, 1)``.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    index = index.reshape(-1)
    if features.dim() != 2 or features.shape[0] != index.shape[0] or features.shape[1] != memory.shape[1]:
        raise ValueError(f"update_memory needs (B, {memory.shape[1]}) features for (B,) indices; got "
                         f"{tuple(features.shape)} for {tuple(index.shape)}.")
    with torch.no_grad():
        unique, inverse = torch.unique(index, return_inverse=True)
        positions = torch.arange(index.shape[0], device=index.device)
        last = torch.full_like(unique, -1).scatter_reduce(0, inverse, positions, reduce="amax")
        index, features = unique, features.detach()[last].to(memory.dtype)
        rows = memory[index] * momentum + features * (1 - momentum)
        rows = rows / rows.pow(2).sum(dim=1, keepdim=True).sqrt()
        return memory.index_copy(0, index, rows)


def draw_negatives(batch_size: int, num_negatives: int, num_data: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """``(B, K)`` sample indices drawn uniformly with replacement from all ``num_data`` samples.

    What RepDistiller's ``AliasMethod`` draws with its uniform unigram distribution (used when no
    indices are given); they may include the positive itself. Seed ``generator`` alike on every
    rank for identical draws.
    """
    if num_negatives < 1 or num_data < 1:
        raise ValueError(f"num_negatives and num_data must be >= 1; got {num_negatives} and {num_data}.")
    return torch.randint(0, num_data, (batch_size, num_negatives), generator=generator, device=device)


def draw_negatives_other_classes(targets: Tensor, labels: Tensor, num_negatives: int,
                                 generator: torch.Generator | None = None, replacement: bool = False) -> Tensor:
    """``(B, K)`` indices of samples whose class differs from each anchor's class.

    The negatives of RepDistiller's CIFAR-100 benchmark (its data set's ``'exact'`` mode): for an
    anchor of class ``c``, ``K`` samples drawn uniformly from all samples of other classes, without
    replacement by default.

    Args:
        targets: ``(B,)`` class of each anchor.
        labels: ``(N,)`` class of every sample of the data set.
        num_negatives: ``K``.
        generator: the random source (seed it alike on every rank for identical draws).
        replacement: draw with replacement (cheaper: ``O(B K)`` instead of ``O(B N)``).
    """
    targets, labels = targets.reshape(-1).long(), labels.reshape(-1).long()
    num_classes = int(max(labels.max().item(), targets.max().item())) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    available = labels.shape[0] - counts[targets]
    if num_negatives < 1 or (available < 1).any() or (not replacement and (available < num_negatives).any()):
        raise ValueError(
            f"Cannot draw {num_negatives} negatives from the other classes (fewest available: "
            f"{int(available.min())}). Use replacement=True, fewer negatives, or a data set with more classes."
        )
    device = labels.device
    if replacement:
        # Position r among the other classes' samples, in the class-sorted order: skip the anchor's class block.
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        uniform = torch.rand(targets.shape[0], num_negatives, generator=generator, device=device, dtype=torch.float64)
        position = (uniform * available.unsqueeze(1)).long().clamp(max=(available - 1).unsqueeze(1))
        start, count = starts[targets].unsqueeze(1), counts[targets].unsqueeze(1)
        return order[torch.where(position < start, position, position + count)]
    keys = torch.rand(targets.shape[0], labels.shape[0], generator=generator, device=device)
    keys = keys.masked_fill(labels.unsqueeze(0) == targets.unsqueeze(1), -1.0)
    return keys.topk(num_negatives, dim=1).indices


def make_contrast_index(index: Tensor, negatives: Tensor) -> Tensor:
    """``(B, 1 + K)``: each sample's own index (the positive) followed by its negatives."""
    return torch.cat([index.reshape(-1, 1).to(negatives.dtype), negatives], dim=1)


class ContrastMemory(nn.Module):
    r"""The memory bank of CRD: one embedding per training sample for the student and for the teacher.

    Both banks start uniform in :math:`[-\sigma, \sigma]`, :math:`\sigma = 1 / \sqrt{D / 3}`, as in
    the authors' code. Scores are normalized by constants :math:`Z` estimated from the first batch
    scored (one per anchor side; ``-1`` until set) and then kept fixed.

    Args:
        embed_dim: ``D``.
        num_data: ``N``, the number of training samples (the indices the data set reports).
        temperature: :math:`\tau` of the scores (0.07).
        momentum: the memory momentum (0.5).
        generator: the random source of the initial memory (seed it alike on every rank).
    """

    def __init__(self, embed_dim: int, num_data: int, temperature: float = 0.07, momentum: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_temperature(temperature)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.embed_dim, self.num_data = embed_dim, num_data
        self.temperature, self.momentum = temperature, momentum
        bound = 1.0 / math.sqrt(embed_dim / 3)
        for name in ("student_memory", "teacher_memory"):
            initial = torch.rand(num_data, embed_dim, generator=generator) * (2 * bound) - bound
            self.register_buffer(name, initial)
        self.register_buffer("student_normalization", torch.tensor(-1.0))
        self.register_buffer("teacher_normalization", torch.tensor(-1.0))

    def set_normalization(self, student_scores: Tensor, teacher_scores: Tensor) -> None:
        """Estimate each side's :math:`Z` from these unnormalized scores, where not set yet.

        A distributed method should pass scores gathered (or their means reduced) over ranks.
        """
        with torch.no_grad():
            if self.student_normalization < 0:
                self.student_normalization.copy_(estimate_normalization(student_scores, self.num_data))
            if self.teacher_normalization < 0:
                self.teacher_normalization.copy_(estimate_normalization(teacher_scores, self.num_data))

    def forward(self, student_embedding: Tensor, teacher_embedding: Tensor,
                contrast_index: Tensor) -> tuple[Tensor, Tensor]:
        """``(student_anchored, teacher_anchored)`` normalized scores, each ``(B, 1 + K)``.

        ``student_anchored`` scores the student's embedding against the teacher memory rows
        ``contrast_index`` (positive first), ``teacher_anchored`` the teacher's embedding against
        the student memory. The memory is not changed (see :meth:`update`).
        """
        batch = student_embedding.shape[0]
        if contrast_index.dim() != 2 or contrast_index.shape[0] != batch or contrast_index.shape[1] < 2:
            raise ValueError(f"contrast_index must be (B, 1 + K) with the positive first and K >= 1; got "
                             f"{tuple(contrast_index.shape)} for a batch of {batch}.")
        for embedding in (student_embedding, teacher_embedding):
            if embedding.shape != (batch, self.embed_dim):
                raise ValueError(f"ContrastMemory holds {self.embed_dim}-dim embeddings; got student "
                                 f"{tuple(student_embedding.shape)} and teacher {tuple(teacher_embedding.shape)}.")
        if contrast_index.min() < 0 or contrast_index.max() >= self.num_data:
            raise ValueError(f"contrast_index holds sample indices outside [0, {self.num_data}).")
        flat = contrast_index.reshape(-1)
        teacher_rows = self.teacher_memory[flat].detach().view(batch, -1, self.embed_dim)
        student_rows = self.student_memory[flat].detach().view(batch, -1, self.embed_dim)
        student_anchored = contrast_scores(student_embedding, teacher_rows, self.temperature)
        teacher_anchored = contrast_scores(teacher_embedding, student_rows, self.temperature)
        self.set_normalization(student_anchored, teacher_anchored)
        return (student_anchored / self.student_normalization.to(student_anchored.dtype),
                teacher_anchored / self.teacher_normalization.to(teacher_anchored.dtype))

    def update(self, index: Tensor, student_embedding: Tensor, teacher_embedding: Tensor) -> None:
        """Move the rows ``index`` of both banks towards the new embeddings (:func:`update_memory`)."""
        self.student_memory = update_memory(self.student_memory, index, student_embedding, self.momentum)
        self.teacher_memory = update_memory(self.teacher_memory, index, teacher_embedding, self.momentum)


class CRDCriterion(nn.Module):
    """The whole CRD objective: both embedding heads, the memory, and the two-sided NCE loss.

    ``forward`` embeds both features, scores them against the memory, returns
    ``crd_nce_loss(student side) + crd_nce_loss(teacher side)`` and then updates the memory with
    this batch, in the order of the authors' code. Defaults from CRD (``embed_dim`` 128,
    ``num_negatives`` 16384, ``temperature`` 0.07, ``momentum`` 0.5).

    Args:
        student_dim: width of the flattened student feature.
        teacher_dim: width of the flattened teacher feature.
        num_data: number of training samples.
        embed_dim: width of the embeddings and memory rows.
        num_negatives: ``K`` negatives drawn when ``forward`` gets no ``contrast_index``.
        temperature: score temperature.
        momentum: memory momentum.
        eps: the NCE loss's guard.
        generator: random source of the initial memory.
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_data: int, embed_dim: int = 128,
                 num_negatives: int = 16384, temperature: float = 0.07, momentum: float = 0.5, eps: float = 1e-7,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embed_student = CRDEmbed(student_dim, embed_dim)
        self.embed_teacher = CRDEmbed(teacher_dim, embed_dim)
        self.memory = ContrastMemory(embed_dim, num_data, temperature, momentum, generator)
        self.num_negatives, self.eps = num_negatives, eps

    def forward(self, student_feature: Tensor, teacher_feature: Tensor, index: Tensor,
                contrast_index: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The CRD loss of a batch; ``index`` are the samples' data-set indices.

        Without ``contrast_index``, ``num_negatives`` uniform negatives are drawn from ``generator``.
        """
        if contrast_index is None:
            negatives = draw_negatives(index.numel(), self.num_negatives, self.memory.num_data, generator,
                                       device=index.device)
            contrast_index = make_contrast_index(index, negatives)
        student_embedding = self.embed_student(student_feature)
        teacher_embedding = self.embed_teacher(teacher_feature)
        student_anchored, teacher_anchored = self.memory(student_embedding, teacher_embedding, contrast_index)
        loss = (crd_nce_loss(student_anchored, self.memory.num_data, self.eps)
                + crd_nce_loss(teacher_anchored, self.memory.num_data, self.eps))
        self.memory.update(index, student_embedding.detach(), teacher_embedding.detach())
        return loss


# The memory bank's buffers: kept out of DDP's buffer broadcast (every rank applies the same update).
MEMORY_BUFFERS = ("memory.student_memory", "memory.teacher_memory", "memory.student_normalization",
                  "memory.teacher_normalization")


class CRD(FeatureDistillation):
    r"""Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR 2020).

    .. math::
        L = w_{ce}\,\mathrm{CE}(z_s, y) + w_{kd}\,T^2\,\mathrm{KL}(p_t \,\|\, p_s)
            + \beta\,\big[L_{NCE}(h(f_s, M_t)) + L_{NCE}(h(f_t, M_s))\big]

    The penultimate features (``"pre_logits"``, the pooled feature RepDistiller's CRD reads) of both
    networks go through a linear embedding to ``embed_dim`` and L2 normalization
    (:class:`CRDEmbed`, both trainable). Each anchor is scored against its own row (the positive)
    and ``num_negatives`` other rows of the *other* network's memory bank, which holds one
    momentum-averaged embedding per training sample (:class:`ContrastMemory`); the NCE loss of
    both anchor sides is :func:`lit_kd.losses.crd.crd_nce_loss`, and after the loss the batch's
    rows move towards the new embeddings (:func:`update_memory`). Defaults are the authors'
    (RepDistiller ``-r 1 -a 0 -b 0.8``, ``feat_dim`` 128, ``nce_k`` 16384, ``nce_t`` 0.07,
    ``nce_m`` 0.5).

    **Data.** The bank has one row per training sample, found by the sample's index
    (``KDBatch.index``): with :class:`~lit_kd.data.KDDataModule` set ``return_index: true``; it then
    declares every training sample (``DataInfo.training_samples``), so the bank holds exactly the
    training split (held-out samples get no row and are never drawn as negatives). Other data must
    yield ``(image, target, index)`` batches and give ``num_samples`` (indices in ``[0, N)``).

    **Negatives.** ``"uniform"``: drawn uniformly with replacement from all training samples (the
    paper's noise distribution and the authors' memory sampler; it may draw the positive
    itself). ``"other_classes"``: drawn from the samples of the other classes, without
    replacement unless some class has too few others (RepDistiller's CIFAR-100 data set,
    ``mode='exact'``, which the published CIFAR numbers use).

    **Several processes (DDP).** The bank is one logical bank: every rank gathers the global
    batch's indices and embeddings and applies the same update in rank order (so a 2-process run
    holds the bank a 1-process run with the doubled batch holds); negatives come from a generator
    seeded alike on every rank (the seed broadcast from rank 0, the draw counter checkpointed), each
    rank taking its anchors' rows of the global draw; the normalization constants Z are estimated
    from the scores of the whole first global batch. The bank's buffers are kept out of DDP's buffer
    broadcast (they stay identical without it, and the broadcast would copy ``2·N·D`` numbers every
    step). The bank, Z and the draw counter are in the checkpoints: a resumed run continues exactly.

    Args:
        embed_dim: width of the embeddings and bank rows (``feat_dim``).
        num_negatives: negatives per anchor ``K`` (``nce_k``).
        nce_temperature: temperature of the critic scores (``nce_t``).
        nce_momentum: momentum of the bank update (``nce_m``).
        crd_weight: :math:`\beta`, the weight of the summed NCE losses (``-b``).
        negatives: ``"uniform"`` or ``"other_classes"`` (see above).
        num_samples: the number of training samples (bank rows), for data that does not declare
            its training samples; ``None``: from the data.
        student_layer: the student feature to embed (default the classifier's input).
        teacher_layer: the teacher feature to embed.
        ce_weight: weight of the cross-entropy (``-r``).
        kd_weight: weight of Hinton's :math:`T^2`-KL term (``-a``; CRD+KD uses 1).
        temperature: its temperature.
        eps: the NCE loss's guard.
        probe_size: image side of the dummy forward that sizes the embeddings.
        **kwargs: the :class:`~lit_kd.methods.feature.FeatureDistillation` arguments.
    """

    def __init__(
        self,
        student: ModelSpec | nn.Module,
        teacher: ModelSpec | nn.Module,
        embed_dim: int = 128,
        num_negatives: int = 16384,
        nce_temperature: float = 0.07,
        nce_momentum: float = 0.5,
        crd_weight: float = 0.8,
        negatives: Literal["uniform", "other_classes"] = "uniform",
        num_samples: int | None = None,
        student_layer: int | str = "pre_logits",
        teacher_layer: int | str = "pre_logits",
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        eps: float = 1e-7,
        probe_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, [student_layer], [teacher_layer], ce_weight=ce_weight,
                         kd_weight=kd_weight, temperature=temperature, probe_size=probe_size, **kwargs)
        if negatives not in ("uniform", "other_classes"):
            raise ValueError(f"negatives must be 'uniform' or 'other_classes', got {negatives!r}")
        if embed_dim < 1 or num_negatives < 1:
            raise ValueError(f"embed_dim and num_negatives must be >= 1, got {embed_dim} and {num_negatives}")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (or None: from the data), got {num_samples}")
        if not 0 <= nce_momentum < 1:
            raise ValueError(f"nce_momentum must be in [0, 1), got {nce_momentum}")
        self.nce_temperature = check_temperature(nce_temperature)
        self.embed_dim, self.num_negatives, self.nce_momentum = embed_dim, num_negatives, nce_momentum
        self.crd_weight, self.negatives, self.num_samples, self.eps = crd_weight, negatives, num_samples, eps
        self.embed_student = CRDEmbed(math.prod(self.student_shapes[0]), embed_dim)
        self.embed_teacher = CRDEmbed(math.prod(self.teacher_shapes[0]), embed_dim)
        self.memory: ContrastMemory | None = None  # built when a fit starts, once the data is known
        # Negatives: rank 0's stream on every rank (one seed, broadcast), reseeded per step; checkpointed.
        self.negative_draws = SeededDraws()
        self._sample_rows: Tensor | None = None  # KDBatch.index -> bank row (-1: no row); None: the identity
        self._row_classes: Tensor | None = None  # the class of every bank row (other-class negatives)
        self._normalized = False

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "embed_student": self.embed_student, "embed_teacher": self.embed_teacher}

    # ------------------------------------------------------------------ the bank and the data
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        count, sample_rows, row_classes = self._bank_layout()
        if self.negative_draws.seed is None:  # rank 0's seed everywhere: one bank, one sequence of negatives
            seed = base_seed()
            self.negative_draws.seed = int(self.trainer.strategy.broadcast(seed, src=0)) if self._trainer else seed
        if self.memory is None:
            # The initial bank: a stream of its own (no draw stream is seeded from two numbers), alike on every rank.
            generator = torch.Generator().manual_seed(mix_seed(self.negative_draws.seed, -1))
            self.memory = ContrastMemory(self.embed_dim, count, self.nce_temperature, self.nce_momentum,
                                         generator).to(self.device)
        elif self.memory.num_data != count:
            raise ValueError(f"CRD's memory bank has {self.memory.num_data} rows but {self.data_info.source} has "
                             f"{count} training samples. Train on the data the bank was built for (same data set "
                             "and val_split), or start a new run.")
        self._sample_rows, self._row_classes = sample_rows, row_classes  # moved to the batches' device on use
        self._ddp_params_and_buffers_to_ignore = list(MEMORY_BUFFERS)

    def _bank_layout(self) -> tuple[int, Tensor | None, Tensor | None]:
        """``(rows, index -> row lookup or None for the identity, class of every row or None)``."""
        info = self.data_info
        if info.training_samples is not None:
            index, classes = (torch.as_tensor(t).reshape(-1).long() for t in info.training_samples())
            count = index.numel()
            if count == 0 or classes.numel() != count or index.min() < 0 or index.unique().numel() != count:
                raise DataContractError(f"{info.source} declares training_samples that are not one class per distinct, "
                                        "non-negative sample index.")
            if self.num_samples is not None and self.num_samples != count:
                raise ValueError(f"CRD was given num_samples={self.num_samples}, but {info.source} has {count} "
                                 "training samples. Leave num_samples unset to take the count from the data.")
            sample_rows = torch.full((int(index.max()) + 1,), -1, dtype=torch.long)
            sample_rows[index] = torch.arange(count)
            return count, sample_rows, classes
        if self.num_samples is None:
            info.require("training_samples", "CRD", "the index of every training sample (one memory-bank row each)",
                         "Set data.return_index: true (KDDataModule), or give CRD num_samples: N for data whose "
                         "batches are (image, target, index) with index in [0, N).")
        if self.negatives == "other_classes":
            raise DataContractError(
                f"CRD(negatives='other_classes') draws negatives from the other classes and needs the class of every "
                f"training sample, which {info.source} does not declare (DataInfo.training_samples). Use "
                "KDDataModule with return_index: true, declare training_samples in data_info(), or set "
                "negatives: uniform.")
        return int(self.num_samples), None, None

    def memory_rows(self, index: Tensor | None) -> Tensor:
        """The bank rows of the samples ``index`` (``KDBatch.index``)."""
        if index is None:
            raise DataContractError(
                "CRD keeps one memory-bank row per training sample and needs each sample's index, but the training "
                "batch has none (KDBatch.index). With KDDataModule set data.return_index: true; other data must "
                "yield (image, target, index) batches.")
        index = index.reshape(-1).long()
        count = self.memory.num_data
        if self._sample_rows is None:
            rows = index
        else:
            self._sample_rows = self._sample_rows.to(index.device)
            inside = (index >= 0) & (index < self._sample_rows.numel())
            rows = torch.where(inside, self._sample_rows[index.clamp(0, self._sample_rows.numel() - 1)], -1)
        bad = (rows < 0) | (rows >= count)
        if bad.any():
            raise DataContractError(f"Sample indices {index[bad][:5].tolist()} are not among the {count} training "
                                    "samples CRD's memory bank holds. The index must be each sample's position in "
                                    "the training data (set num_samples to the data's size).")
        return rows

    # ------------------------------------------------------------------ one logical bank across processes
    def all_ranks(self, tensor: Tensor) -> tuple[Tensor, int]:
        """``tensor`` (batch first) of every process concatenated in rank order, and the position of this
        process's rows in it; ``(tensor, 0)`` in a single process."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return tensor, 0
        strategy = trainer.strategy
        sizes = strategy.all_gather(torch.tensor([tensor.shape[0]], device=tensor.device)).reshape(-1).tolist()
        largest = max(sizes)
        if tensor.shape[0] < largest:  # uneven batches: pad to gather, then drop the padding
            tensor = torch.cat([tensor, tensor.new_zeros(largest - tensor.shape[0], *tensor.shape[1:])])
        gathered = strategy.all_gather(tensor)
        everyone = torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])
        return everyone, sum(sizes[:trainer.global_rank])

    def draw_contrast_rows(self, rows: Tensor) -> Tensor:
        """``(len(rows), K)`` negative rows for the anchors ``rows`` of the global batch."""
        generator = self.negative_draws.next(rows.device, rank=0)  # rank 0's draw on every rank: one global batch
        if self.negatives == "uniform":
            return draw_negatives(rows.numel(), self.num_negatives, self.memory.num_data, generator, device=rows.device)
        classes = self._row_classes = self._row_classes.to(rows.device)
        anchors = classes[rows]
        available = classes.numel() - torch.bincount(classes)[anchors]
        replacement = self.num_negatives > int(available.min())  # RepDistiller: with replacement only when too few
        return draw_negatives_other_classes(anchors, classes, self.num_negatives, generator, replacement=replacement)

    # ------------------------------------------------------------------ the loss
    def feature_terms(self, student_features: list[Tensor], teacher_features: list[Tensor], batch: KDBatch,
                      student_logits: Tensor, teacher_logits: Tensor) -> dict[str, tuple[float, Tensor]]:
        if self.memory is None:
            raise RuntimeError("CRD's memory bank is built when a fit starts (setup('fit')), from the data's training "
                               "samples; train it with a Trainer.")
        rows = self.memory_rows(batch.index)
        student_embedding = self.embed_student(student_features[0])
        teacher_embedding = self.embed_teacher(teacher_features[0])
        everyone_rows, offset = self.all_ranks(rows)
        negatives = self.draw_contrast_rows(everyone_rows)[offset:offset + rows.numel()]
        contrast_index = make_contrast_index(rows, negatives)
        if not self._normalized:
            self._estimate_normalization(student_embedding, teacher_embedding, contrast_index)
        student_anchored, teacher_anchored = self.memory(student_embedding, teacher_embedding, contrast_index)
        count = self.memory.num_data
        loss = crd_nce_loss(student_anchored, count, self.eps) + crd_nce_loss(teacher_anchored, count, self.eps)
        # One update of the one bank: the global batch, in rank order, on every rank.
        both, _ = self.all_ranks(torch.cat([student_embedding, teacher_embedding], dim=1).detach())
        self.memory.update(everyone_rows, both[:, :self.embed_dim], both[:, self.embed_dim:])
        return {"crd": (self.crd_weight, loss)}

    @torch.no_grad()
    def _estimate_normalization(self, student_embedding: Tensor, teacher_embedding: Tensor,
                                contrast_index: Tensor) -> None:
        """Z from the whole first global batch's scores (in one process the memory does it itself)."""
        memory = self.memory
        if memory.student_normalization >= 0:  # set, e.g. restored from a checkpoint
            self._normalized = True
            return
        if self._trainer is None or self.trainer.world_size == 1:
            self._normalized = True  # ContrastMemory.forward estimates it from this batch
            return
        flat, shape = contrast_index.reshape(-1), (*contrast_index.shape, memory.embed_dim)
        student_scores = contrast_scores(student_embedding, memory.teacher_memory[flat].view(shape), memory.temperature)
        teacher_scores = contrast_scores(teacher_embedding, memory.student_memory[flat].view(shape), memory.temperature)
        sums = torch.stack([student_scores.sum(), teacher_scores.sum(),
                            torch.tensor(float(student_scores.numel()), device=student_scores.device,
                                         dtype=student_scores.dtype)])
        everyone, _ = self.all_ranks(sums.unsqueeze(0))
        total = everyone.sum(dim=0)
        memory.set_normalization((total[0] / total[2]).reshape(1), (total[1] / total[2]).reshape(1))
        self._normalized = True

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lit_kd"]["crd"] = self.negative_draws.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lit_kd", {}).get("crd")
        if state:  # checkpoints before SeededDraws called the count "draws"
            self.negative_draws.load_state_dict({"seed": state.get("seed"),
                                                 "batches": state.get("batches", state.get("draws", 0))})
        self._normalized = False
        bank = checkpoint["state_dict"].get("memory.student_memory")
        if bank is None:
            return
        if self.memory is None:  # loaded outside a fit: the bank takes the checkpoint's size (values follow)
            self.memory = ContrastMemory(self.embed_dim, int(bank.shape[0]), self.nce_temperature, self.nce_momentum)
        elif self.memory.num_data != bank.shape[0]:
            raise ValueError(f"The checkpoint's CRD memory bank has {bank.shape[0]} rows, but the data has "
                             f"{self.memory.num_data} training samples. Resume on the same data (data set and "
                             "val_split).")
