"""AMD's picture: the candidates' accuracy against their scale, with the chosen teacher assistant marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_candidates"]


def plot_candidates(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy vs scale of the candidates, with the chosen teacher assistant marked."""
    # A bare Figure (no pyplot): the caller's matplotlib backend, e.g. a notebook's inline one, is left alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot([r["scale"] for r in rows], [100 * r["val_acc"] for r in rows], "o-", label="candidates")
    for r in rows:
        if r["chosen"]:
            ax.plot([r["scale"]], [100 * r["val_acc"]], "r*", markersize=16, label=f"chosen TA (scale {r['scale']:g})")
    ax.set_xlabel("scale (fraction of the teacher's parameters)")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
