"""Pure metric functions on tensors (docs/benchmark.md gives each one's definition and direction); directions
are stated per function."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import numpy as np
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


# ---------------------------------------------------------------- unlearning metrics beyond accuracy


def true_class_confidence(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``probs[i, targets[i]]``: the probability the model gives the true class of each sample, shape ``[B]``.

    The feature of the confidence-based membership-inference attack
    (:func:`wfexplain.evaluation.privacy.mia_efficacy_salun`).
    """
    return probs.gather(1, targets.long().view(-1, 1).to(probs.device)).squeeze(1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen-Shannon divergence of two ``[B, N]`` distributions, shape ``[B]``.

    ``JS(p, q) = ½ KL(p || m) + ½ KL(q || m)`` with ``m = (p + q) / 2``, natural log and ``0 · log 0 = 0``
    (:func:`torch.xlogy`, so one-hot rows give exact values). Symmetric, 0 for identical rows, at most ln 2
    (rows with disjoint supports). Lower = closer distributions.
    """
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return (torch.xlogy(a, a) - torch.xlogy(a, m)).sum(1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp(0.0, math.log(2))


def zrf(p_model: torch.Tensor, p_random: torch.Tensor) -> float:
    """Zero Retrain Forgetting score: ``1 - mean_i JS(p_model(x_i) || p_random(x_i))`` over the forget samples.

    ``p_model`` and ``p_random`` are ``[B, N]`` softmax outputs on the same forget samples, of the unlearned network
    and of a randomly initialised network of the same architecture; JS is :func:`js_divergence` (one value per
    sample, averaged over samples, not classes). In ``[1 - ln 2, 1]``; higher is better (the closer to a random
    network's outputs, the more forgotten); nan for no samples.
    Reference: Chundawat et al., "Can bad teaching induce forgetting?", AAAI 2023.
    """
    if len(p_model) == 0:
        return float("nan")
    return 1.0 - js_divergence(p_model, p_random.to(p_model.device)).mean().item()


def probe_accuracy(train_features, train_targets, test_features, test_targets, forget: Iterable[int],
                   seed: int = 0, max_train: int = 5000) -> float:
    """Residual knowledge: accuracy on the forgotten classes' test images of a linear probe on penultimate features.

    A multinomial ``LogisticRegression(max_iter=1000)`` on standardised features (a ``StandardScaler`` fit on the
    training features) is fit on the training images of all classes (a seeded random subset of at most
    ``max_train``), then scored on the test images whose class is in ``forget``:
    ``probe acc. = #{forget test images the probe classifies right} / #{forget test images}``.
    Lower is better: the output may hide a class that the features still carry; nan for no forget test images.
    Reference: residual knowledge in the representation (linear probing).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = np.asarray(torch.as_tensor(train_features).detach().cpu(), dtype=np.float64)
    y_train = np.asarray(torch.as_tensor(train_targets).detach().cpu()).reshape(-1)
    x_test = np.asarray(torch.as_tensor(test_features).detach().cpu(), dtype=np.float64)
    y_test = np.asarray(torch.as_tensor(test_targets).detach().cpu()).reshape(-1)
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    mask = np.isin(y_test, np.asarray(list(forget)))
    if not mask.any():
        return float("nan")
    if len(x_train) > max_train:
        keep = np.random.default_rng(seed).permutation(len(x_train))[:max_train]
        x_train, y_train = x_train[keep], y_train[keep]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(x_train, y_train)
    return float((probe.predict(x_test[mask]) == y_test[mask]).mean())


@torch.no_grad()
def _batched_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    correct = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch), strict=True))
    return correct / len(y)


def relearn_steps(net: torch.nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, eval_x: torch.Tensor,
                  eval_y: torch.Tensor, lr: float = 1e-3, batch_size: int = 16, max_steps: int = 100,
                  threshold: float = 0.5, seed: int = 0) -> int:
    """Relearn time: Adam steps on a few forget samples until accuracy on held-out forget images is >= ``threshold``.

    A ``copy.deepcopy`` of ``net`` (``net`` itself is left untouched) is fine-tuned, all its parameters (frozen ones
    included: the attacker owns the whole network), with ``Adam(lr)`` and cross-entropy on mini-batches of
    ``batch_size`` drawn from (``forget_x``, ``forget_y``) (e.g. 32 images; seeded ``torch.Generator``, a fresh
    permutation per pass, its incomplete last batch dropped). The copy stays in eval mode: BatchNorm statistics
    and dropout are frozen, only weights move. After each step the accuracy on (``eval_x``, ``eval_y``) (held-out
    images of the forgotten class) is measured; the result is the first step at which it reaches ``threshold``:
    0 if it already does before any step, and ``max_steps`` if it never does (censored: ``max_steps`` means
    "at least max_steps"). Runs on the device of ``net``'s parameters.
    Higher is better (harder to relearn = more forgotten).
    Reference: Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (relearn time).
    """
    if len(forget_x) == 0 or len(eval_x) == 0:
        raise ValueError(f"relearn_steps needs forget and eval samples (got {len(forget_x)} and {len(eval_x)})")
    model = copy.deepcopy(net).eval()
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    for prm in params:
        prm.requires_grad_(True)
    fx, fy = forget_x.to(device), forget_y.long().to(device)
    ex, ey = eval_x.to(device), eval_y.long().to(device)
    if _batched_accuracy(model, ex, ey) >= threshold:
        return 0
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for step in range(1, max_steps + 1):
        if len(order) < min(batch_size, len(fx)):  # a fresh pass (the remainder of the last one is dropped)
            order = torch.randperm(len(fx), generator=g).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        idx_t = torch.as_tensor(idx, device=device)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(fx[idx_t]), fy[idx_t])
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        if _batched_accuracy(model, ex, ey) >= threshold:
            return step
    return max_steps
