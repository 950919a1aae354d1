"""Scoring an unlearned model: the metrics (pure functions) and the evaluation of every forget set."""

from .forgetting import dataset_targets, evaluate, predict

__all__ = ["dataset_targets", "evaluate", "predict"]
