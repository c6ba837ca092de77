"""Lightning callbacks for cross-cutting work: run summaries, throughput, assistant chains, retrieval
evaluation, teacher-student diagnostics,
and the reporting helpers that methods' report callbacks use (:mod:`lit_kd.callbacks.reporting`).

Imported lazily, so that ``import lit_kd.callbacks.reporting`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RunSummary": "lit_kd.callbacks.summary",
    "Checkpoint": "lit_kd.callbacks.checkpoint",
    "ImagesPerSecond": "lit_kd.callbacks.throughput",
    "AssistantChain": "lit_kd.callbacks.chain",
    "ChainStep": "lit_kd.callbacks.chain",
    "RetrievalEvaluation": "lit_kd.callbacks.retrieval",
    "DistillationDiagnostics": "lit_kd.callbacks.diagnostics",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_kd.callbacks' has no attribute {name!r}")
