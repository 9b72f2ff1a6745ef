"""Evaluation metrics."""

from vlparse.eval.metrics import majority_fraction, recall_at_k

__all__ = ["recall_at_k", "majority_fraction"]
