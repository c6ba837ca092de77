"""Deterministic seeds for per-batch randomness that survives resuming and differs across ranks.

Randomness that must continue exactly after a resume (augmentation, mixup, dropped guides) is not
drawn from a global generator: each batch reseeds a local ``torch.Generator`` from a base seed and
counters saved in checkpoints (epoch, batches seen, rank), combined by :func:`mix_seed`.
"""

from __future__ import annotations

import torch

__all__ = ["mix_seed", "base_seed", "SeededDraws"]


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


class SeededDraws:
    """A stream of per-batch generators that a resumed run replays exactly: draw ``n`` is seeded from
    ``mix_seed(seed, rank, n)``, where ``seed`` is :func:`base_seed` at the first draw. The seed and
    the draw count are the state to checkpoint (:meth:`state_dict`); generators are rebuilt on
    demand, one per device (they cannot be pickled, e.g. for ``ddp_spawn``)."""

    def __init__(self) -> None:
        self.seed: int | None = None
        self.draws = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    def next(self, device: torch.device, rank: int = 0) -> torch.Generator:
        """The generator for the next draw on ``device``, seeded for this rank and draw."""
        if self.seed is None:
            self.seed = base_seed()
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        generator = self._generators[device]
        generator.manual_seed(mix_seed(self.seed, rank, self.draws))
        self.draws += 1
        return generator

    def state_dict(self) -> dict[str, int | None]:
        return {"seed": self.seed, "batches": self.draws}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.seed = state.get("seed")
        self.draws = int(state.get("batches") or 0)

    def __getstate__(self) -> dict[str, object]:
        return {"seed": self.seed, "draws": self.draws, "_generators": {}}

