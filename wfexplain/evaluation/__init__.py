"""Scoring an unlearned model: forget/retain accuracy (pure functions) and their evaluation over forget sets."""

from .forgetting import dataset_targets, evaluate, forget_sets, predict

__all__ = ["dataset_targets", "evaluate", "forget_sets", "predict"]
