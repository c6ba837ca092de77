"""Deterministic seeds for per-batch randomness that survives resuming and differs across ranks.

Randomness that must continue exactly after a resume (augmentation, mixup, dropped guides) is not
drawn from a global generator: each batch reseeds a local ``torch.Generator`` from a base seed and
counters saved in checkpoints (epoch, batches seen, rank), combined by :func:`mix_seed`.
"""

from __future__ import annotations

import torch

__all__ = ["mix_seed", "base_seed"]


def mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit seed (a SplitMix64-style hash): order matters, and nearby
    inputs give unrelated seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state >> 1


def base_seed() -> int:
    """The process's current torch seed as a non-negative 63-bit int (``lightning.seed_everything``
    sets it), the usual base of :func:`mix_seed`."""
    return int(torch.initial_seed()) & 0x7FFFFFFFFFFFFFFF
