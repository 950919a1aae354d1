"""Scoring one network for one forget set on every metric of the catalogue.

:class:`Probe` holds the images every network is scored on (a seeded, class-stratified subset of
the test split and of the training split); :func:`score` computes each metric of
:data:`~wfexplain.benchmark.catalogue.METRICS` but the attack's with the pure functions of
:mod:`wfexplain.evaluation.metrics` and :mod:`wfexplain.evaluation.privacy`, and keeps the per-example
logit-confidences on the forget-train images; :func:`attack_metrics` compares those with Retrain's (the
attack needs both networks' outputs, so it is computed when results are aggregated).
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
    per_class_accuracy,
    probe_accuracy,
    relearn_steps,
    retain_accuracy,
    true_class_confidence,
    zrf,
)
from ..evaluation.privacy import logit_confidence, mean_loss, mia_efficacy_salun, retrain_attack, zrf_reference_code
from ..hooks import watch
from .catalogue import METRICS

ATTACK = ("attack_auc", "attack_tpr_at_1fpr")  # computed against Retrain's outputs by :func:`attack_metrics`
SCORED = tuple(k for k in METRICS if k not in ATTACK and k != "seconds")  # computed by :func:`score`
RELEARN = {"relearn_steps_lr1e3": (1e-3, 100), "relearn_steps_lr1e4": (1e-4, 200)}  # metric -> (lr, step cap)


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
    """Every metric of :data:`SCORED` for one network and forget set, the per-class views, and ``forget_scores``:
    the logit-confidence of each forget-train image (in ``data`` order) that :func:`attack_metrics` compares.

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
    conf = true_class_confidence
    metrics = {
        "forget_accuracy_test": forget_accuracy(pred_test, data.y_test, forget),
        "retain_accuracy_test": retain_accuracy(pred_test, data.y_test, forget),
        "forget_accuracy_train": forget_accuracy(pred_train, data.y_train, forget),
        "retain_accuracy_train": retain_accuracy(pred_train, data.y_train, forget),
        "mia_efficacy_salun": _mia_salun(conf(p_train[~fm_train], data.y_train[~fm_train]),
                                         conf(p_test[~fm_test], data.y_test[~fm_test]),
                                         conf(p_train[fm_train], data.y_train[fm_train]), seed),
        "zrf_paper": zrf(p_train[fm_train], p_random),
        "zrf_code": zrf_reference_code(p_train[fm_train], p_random),
        **{k: float(relearn_steps(net, data.x_train[few], data.y_train[few], data.x_test[fm_test],
                                  data.y_test[fm_test], lr=lr, max_steps=cap, seed=seed))
           for k, (lr, cap) in RELEARN.items()},
        "probe_accuracy": probe_accuracy(f_train, data.y_train, f_test, data.y_test, forget, seed=seed),
        "forget_loss_train": mean_loss(p_train[fm_train], data.y_train[fm_train]),
    }
    return {
        "metrics": metrics,
        "per_class_accuracy": per_class_accuracy(pred_test, data.y_test, num_classes),
        "forget_predictions": torch.bincount(pred_test[data.y_test == first], minlength=num_classes).div(
            max(int((data.y_test == first).sum()), 1)).tolist(),
        "forget_scores": logit_confidence(p_train[fm_train], data.y_train[fm_train]).tolist(),
    }


def _mia_salun(member: torch.Tensor, nonmember: torch.Tensor, forget: torch.Tensor, seed: int) -> float:
    """SalUn's MIA-efficacy (:func:`~wfexplain.evaluation.privacy.mia_efficacy_salun`: members = retain-train images,
    non-members = test images of the retained classes, a seeded random draw of members since our training subset
    is class-stratified, not shuffled). When fewer members than non-members were scored (a small ``train_limit``),
    a seeded subset of the non-members of the same size is used."""
    if len(member) < len(nonmember):
        nonmember = nonmember[torch.randperm(len(nonmember), generator=torch.Generator().manual_seed(seed))[:len(member)]]
    return mia_efficacy_salun(member, nonmember, forget, seed=seed)


def attack_metrics(scores: Sequence[float] | None, retrain_scores: Sequence[float] | None, seed: int = 0
                   ) -> dict[str, float]:
    """The attack's metrics of :data:`ATTACK`: this network's forget-set logit-confidences against Retrain's on the
    same images (:func:`wfexplain.evaluation.privacy.retrain_attack`); NaN when either is missing or too short."""
    nan = {k: float("nan") for k in ATTACK}
    if scores is None or retrain_scores is None or len(scores) != len(retrain_scores) or len(scores) < 4:
        return nan
    r = retrain_attack(torch.tensor(scores, dtype=torch.float64), torch.tensor(retrain_scores, dtype=torch.float64),
                       seed=seed, fpr=0.01)
    return {"attack_auc": float(r["auc"]), "attack_tpr_at_1fpr": float(r["tpr_at_fpr"])}
