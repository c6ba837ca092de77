"""Retrieval evaluation: mAP (11-point interpolated) and precision@k, chunked over the queries.

The protocol of InDistill's official code (``utils/retrieval_evaluation.py``, spec §4.1): the
embeddings of the training set (without augmentation) are the database, the test images are the
queries, and a database item is relevant to a query when it has the query's label.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["retrieval_metrics", "retrieval_curve", "Distance", "RECALL_LEVELS"]

Distance = Literal["euclidean", "cosine"]
RECALL_LEVELS = 11  # 0, 0.1, ..., 1


def retrieval_curve(
    queries: Tensor,
    query_labels: Tensor,
    database: Tensor,
    database_labels: Tensor,
    distance: Distance = "euclidean",
    top_k: int = 100,
    max_elements: int = 2**23,
) -> dict[str, float | list[float]]:
    """:func:`retrieval_metrics` plus the interpolated precision-recall curve that the mAP averages:
    ``"recall"`` (0, 0.1, ..., 1) and ``"precision"``, the mean over the queries of the interpolated
    precision at each recall level (so ``mean(precision) == map`` up to rounding). Same arguments."""
    return _retrieval(queries, query_labels, database, database_labels, distance, top_k, max_elements, curve=True)


def retrieval_metrics(
    queries: Tensor,
    query_labels: Tensor,
    database: Tensor,
    database_labels: Tensor,
    distance: Distance = "euclidean",
    top_k: int = 100,
    max_elements: int = 2**23,
) -> dict[str, float]:
    r"""Mean average precision and precision@``top_k`` of ranking ``database`` for every query.

    For one query, the database is ranked by increasing distance; ties keep the database order
    (a stable sort). With ``n`` relevant items, the ``j``-th of them at rank ``k_j`` (1-based) has
    precision ``j / k_j`` and recall ``j / n``. The interpolated precision at recall ``r`` is the
    best precision at recall ``>= r``, and

    .. math::
        AP = \frac{1}{11} \sum_{r \in \{0, 0.1, \dots, 1\}} \max_{j:\, j/n \ge r} \frac{j}{k_j},
        \qquad P@k = \frac{\#\{\text{relevant in the first } k\}}{k}

    A query with no relevant item has AP = 0 and P@k = 0 (it still counts in the means).
    ``mAP`` and ``precision@k`` are the means over the queries, as fractions in [0, 1].

    Memory: queries are processed in chunks of ``max_elements // len(database)`` (at least one),
    so the ``chunk x database`` work arrays stay near ``max_elements`` entries (~40 bytes each);
    the database itself is never copied per query.

    Args:
        queries: ``(Q, D)`` query embeddings.
        query_labels: ``(Q,)`` integer labels.
        database: ``(N, D)`` database embeddings, on the same device.
        database_labels: ``(N,)`` integer labels.
        distance: ``"euclidean"`` (L2) or ``"cosine"`` (1 - cosine similarity).
        top_k: the ``k`` of precision@k (``min(k, N)`` if the database is smaller).
        max_elements: budget of ``chunk x database`` entries per step.
    """
    return _retrieval(queries, query_labels, database, database_labels, distance, top_k, max_elements)


def _retrieval(queries: Tensor, query_labels: Tensor, database: Tensor, database_labels: Tensor, distance: Distance,
               top_k: int, max_elements: int, curve: bool = False) -> dict[str, Any]:
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries and database must be (count, dim) with the same dim; got "
                         f"{tuple(queries.shape)} and {tuple(database.shape)}")
    if len(queries) != len(query_labels) or len(database) != len(database_labels):
        raise ValueError("every query and database embedding needs one label")
    if len(database) == 0 or len(queries) == 0:
        raise ValueError("retrieval needs at least one query and one database item")
    queries, database = queries.float(), database.float()
    if distance == "cosine":
        queries, database = F.normalize(queries, dim=1), F.normalize(database, dim=1)
    k = min(top_k, len(database))
    chunk = max(1, max_elements // len(database))
    ap_sum, precision_sum = 0.0, 0.0
    level_sums = torch.zeros(RECALL_LEVELS, dtype=torch.float64)
    for start in range(0, len(queries), chunk):
        stop = start + chunk
        levels, precision = _score_chunk(queries[start:stop], query_labels[start:stop], database, database_labels,
                                         distance, k)
        ap_sum += float(levels.mean(1).sum())
        precision_sum += float(precision.sum())
        if curve:
            level_sums += levels.sum(0).double().cpu()
    scores: dict[str, Any] = {"map": ap_sum / len(queries), f"precision@{top_k}": precision_sum / len(queries)}
    if curve:
        scores["recall"] = [level / (RECALL_LEVELS - 1) for level in range(RECALL_LEVELS)]
        scores["precision"] = (level_sums / len(queries)).tolist()
    return scores


def _stable_order(dist: Tensor) -> Tensor:
    """``argsort(dist, dim=1, stable=True)`` for non-negative distances, about twice as fast on CPUs:
    the bit pattern of a non-negative float32 orders like its value, so one plain sort of the
    int64 keys ``bits << b | index`` ranks by distance, then by database position."""
    index_bits = max(1, (dist.shape[1] - 1).bit_length())
    index = torch.arange(dist.shape[1], device=dist.device)
    keys = (dist.float().view(torch.int32).long() << index_bits) | index
    return torch.sort(keys, dim=1).values & ((1 << index_bits) - 1)


def _score_chunk(queries: Tensor, query_labels: Tensor, database: Tensor, database_labels: Tensor,
                 distance: Distance, k: int) -> tuple[Tensor, Tensor]:
    if distance == "cosine":
        dist = (1.0 - queries @ database.T).clamp_(min=0.0)
    else:
        dist = torch.cdist(queries, database)
    order = _stable_order(dist)
    del dist
    relevant = database_labels[order] == query_labels.unsqueeze(1)
    del order
    hits = relevant.cumsum(1)
    n_relevant = hits[:, -1]
    ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device)
    precision_at_hits = torch.where(relevant, hits / ranks, 0.0)
    # best precision at this rank or later = interpolated precision (only hits can be maxima)
    best_from_here = precision_at_hits.flip(1).cummax(1).values.flip(1)
    levels = torch.arange(RECALL_LEVELS, device=relevant.device)
    # the j-th relevant item reaches recall level r = l/10 first for j = ceil(l * n / 10), at least 1
    needed = ((levels.unsqueeze(0) * n_relevant.unsqueeze(1) + RECALL_LEVELS - 2) // (RECALL_LEVELS - 1)).clamp(min=1)
    position = torch.searchsorted(hits, needed).clamp(max=relevant.shape[1] - 1)
    # interpolated precision at each recall level (its mean over the levels is the query's AP)
    levels = torch.where(n_relevant.unsqueeze(1) > 0, best_from_here.gather(1, position), 0.0)
    precision = relevant[:, :k].sum(1) / k
    return levels, precision
