"""Evaluation metrics beyond classification accuracy."""

from lit_kd.metrics.retrieval import retrieval_curve, retrieval_metrics

__all__ = ["retrieval_metrics", "retrieval_curve"]
