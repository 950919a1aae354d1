"""Scoring one network for one forget set on every metric of the catalogue.

:class:`Probe` holds the images every network is scored on (a seeded, class-stratified subset of
the test split and of the training split); :func:`score` computes each metric of
:data:`~wfexplain.benchmark.catalogue.METRICS` with the pure functions of :mod:`wfexplain.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import head_module
from ..evaluation.metrics import (
    forget_accuracy,
    in_set,
    mia_efficacy,
    per_class_accuracy,
    probe_accuracy,
    relearn_steps,
    retain_accuracy,
    true_class_confidence,
    zrf,
)
from ..hooks import watch


@dataclass(frozen=True)
class Probe:
    """Everything a network is scored on for one forget class (tensors on the CPU)."""

    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train: torch.Tensor  # seeded class-stratified subset of the training split
    y_train: torch.Tensor


@torch.no_grad()
def _outputs(net: nn.Module, x: torch.Tensor, head: nn.Module | None = None, batch: int = 500):
    """Softmax probabilities (and penultimate features when ``head`` is given), on the CPU."""
    device = next(net.parameters()).device
    feats: list[torch.Tensor] = []
    with watch({"head": head} if head else {}, on_input=lambda p, m, inputs, o: feats.append(inputs[0].detach().cpu())):
        probs = torch.cat([net(xb.to(device)).softmax(1).cpu() for xb in x.split(batch)])
    return probs, (torch.cat(feats) if head else None)


def score(net: nn.Module, heads: list[str], data: Probe, forget: Sequence[int], num_classes: int,
          p_random: torch.Tensor, seed: int = 0) -> dict:
    """Every metric of :data:`METRICS` (but ``seconds``) for one network and forget set, plus the per-class views.

    ``p_random``: softmax of a randomly initialised network on the forget images of ``data.x_train`` (for ZRF).
    """
    net.eval()
    head = head_module(net, heads)
    p_test, f_test = _outputs(net, data.x_test, head)
    p_train, f_train = _outputs(net, data.x_train, head)
    pred_test, pred_train = p_test.argmax(1), p_train.argmax(1)
    fm_test, fm_train = in_set(data.y_test, forget), in_set(data.y_train, forget)
    g = torch.Generator().manual_seed(seed)
    few = torch.nonzero(fm_train).flatten()
    few = few[torch.randperm(len(few), generator=g)[:32]]
    first = forget[0]
    return {
        "metrics": {
            "forget_accuracy_test": forget_accuracy(pred_test, data.y_test, forget),
            "retain_accuracy_test": retain_accuracy(pred_test, data.y_test, forget),
            "forget_accuracy_train": forget_accuracy(pred_train, data.y_train, forget),
            "retain_accuracy_train": retain_accuracy(pred_train, data.y_train, forget),
            "mia_efficacy": mia_efficacy(true_class_confidence(p_train[~fm_train], data.y_train[~fm_train]),
                                         true_class_confidence(p_test, data.y_test),
                                         true_class_confidence(p_train[fm_train], data.y_train[fm_train]), seed=seed),
            "zrf": zrf(p_train[fm_train], p_random),
            "relearn_steps": float(relearn_steps(net, data.x_train[few], data.y_train[few], data.x_test[fm_test],
                                                 data.y_test[fm_test], seed=seed)),
            "probe_accuracy": probe_accuracy(f_train, data.y_train, f_test, data.y_test, forget, seed=seed),
        },
        "per_class_accuracy": per_class_accuracy(pred_test, data.y_test, num_classes),
        "forget_predictions": torch.bincount(pred_test[data.y_test == first], minlength=num_classes).div(
            max(int((data.y_test == first).sum()), 1)).tolist(),
    }
