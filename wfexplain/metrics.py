"""Pure metric functions on tensors (DESIGN.md §2); directions are stated per function."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of ``preds == targets`` (nan for no samples)."""
    return (preds == targets).float().mean().item() if len(targets) else float("nan")


def per_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy on the test images of each class k (nan for an absent class)."""
    return [accuracy(preds[targets == k], targets[targets == k]) for k in range(num_classes)]


def in_set(targets: torch.Tensor, forget: Iterable[int]) -> torch.Tensor:
    """Boolean mask of the samples whose label is in the forget set."""
    return torch.isin(targets, torch.as_tensor(list(forget), dtype=targets.dtype))


def forget_accuracy(preds: torch.Tensor, targets: torch.Tensor, forget: Iterable[int]) -> float:
    """Accuracy on images of the forgotten classes under their filter (lower is better; Retrain ~0)."""
    m = in_set(targets, forget)
    return accuracy(preds[m], targets[m])


def retain_accuracy(preds: torch.Tensor, targets: torch.Tensor, forget: Iterable[int]) -> float:
    """Accuracy on images of the other classes under the filter (higher is better)."""
    m = ~in_set(targets, forget)
    return accuracy(preds[m], targets[m])
