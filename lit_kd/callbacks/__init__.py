"""Lightning callbacks for cross-cutting work: run summaries, throughput, assistant chains."""

from lit_kd.callbacks.chain import AssistantChain, ChainStep
from lit_kd.callbacks.summary import RunSummary
from lit_kd.callbacks.throughput import ImagesPerSecond

__all__ = ["RunSummary", "ImagesPerSecond", "AssistantChain", "ChainStep"]
