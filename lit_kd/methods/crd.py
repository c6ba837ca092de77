"""CRD: embedding heads, the momentum memory bank of all samples' embeddings, and negative sampling.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_kd.losses.crd import contrast_scores, crd_nce_loss, estimate_normalization
from lit_kd.losses.logits import check_temperature

__all__ = ["CRDCriterion", "CRDEmbed", "ContrastMemory", "draw_negatives",
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
