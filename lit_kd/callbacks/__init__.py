"""Lightning callbacks for cross-cutting work: run summaries and throughput."""

from lit_kd.callbacks.summary import RunSummary
from lit_kd.callbacks.throughput import ImagesPerSecond

__all__ = ["RunSummary", "ImagesPerSecond"]
