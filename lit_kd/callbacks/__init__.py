"""Lightning callbacks for cross-cutting work: run summaries, throughput, assistant chains, retrieval evaluation."""

from lit_kd.callbacks.chain import AssistantChain, ChainStep
from lit_kd.callbacks.retrieval import RetrievalEvaluation
from lit_kd.callbacks.summary import RunSummary
from lit_kd.callbacks.throughput import ImagesPerSecond

__all__ = ["RunSummary", "ImagesPerSecond", "AssistantChain", "ChainStep", "RetrievalEvaluation"]
