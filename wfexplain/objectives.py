"""Losses and forget-set sampling for training the memory matrices.

The objective follows Poppi et al., "Multi-Class Unlearning for Image Classification via
Weight Filtering" (arXiv 2304.02049), as implemented here (docs/method.md)::

    L = lambda_r * CE(f_{S not containing y}(x_r), y_r)       retain: still right
      + lambda_f / (CE(f_{S containing y}(x_f), y_f) + eps)   forget: bounded push away
                                                              (per-sample CE capped: see forget_loss)
      + lambda_s * mean(1 - alpha)                            few components switched off

"Label expansion" splits each batch: the forget half gets a set containing the sample's
own label, the retain half a random set that does not contain it. Set sizes are drawn
uniformly from 1..k so that products of rows (several classes at once) are trained too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


def retain_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on samples whose class is *not* forgotten (lower is better)."""
    return F.cross_entropy(logits, targets)


def forget_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-3,
                ce_cap: float | None = None, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Bounded reciprocal ``1 / (mean_i min(CE_i, cap) + eps)``: pushes forgotten samples away without diverging.

    Without a cap (``ce_cap=None``) this is ``1 / (CE + eps)`` of the specification (docs/method.md). The cap is our
    addition: a few samples pushed far away (CE of 20+) would otherwise dominate the batch
    mean and stop the gradient for samples that are still classified correctly.

    ``reduce`` maps this process's batch mean to the global one (data-parallel runs): the
    value is then the global term, and its gradient, once DDP averages it over ranks, is
    the gradient of the global term.
    """
    ce = F.cross_entropy(logits, targets, reduction="none")
    if ce_cap is not None:
        ce = ce.clamp(max=ce_cap)
    mean = ce.mean()
    if reduce is not None:
        mean = mean + (reduce(mean.detach()) - mean.detach())
    return 1.0 / (mean + eps)


def sparsity_loss(alphas: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean of ``1 - alpha`` over every entry of every memory matrix (few components off)."""
    flat = torch.cat([a.flatten() for a in alphas])
    return (1.0 - flat).mean()


def sample_forget_sets(targets: torch.Tensor, num_classes: int, max_size: int, contains_label: bool,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one forget set per sample as a boolean mask ``[B, num_classes]``.

    Args:
        targets: labels ``[B]``.
        num_classes: N.
        max_size: k; each set size is uniform in ``1..k`` (capped so a retain set fits).
        contains_label: True for the forget half (the set includes the label), False for
            the retain half (the set excludes it).
        generator: seeded torch generator.

    Returns:
        Boolean mask ``[B, num_classes]``.
    """
    b = targets.shape[0]
    k = max(1, min(max_size, num_classes - 1))
    sizes = torch.randint(1, k + 1, (b,), generator=generator)
    # Random scores; the label is forced first (forget) or last (retain) in the ranking.
    scores = torch.rand(b, num_classes, generator=generator)
    scores[torch.arange(b), targets] = 2.0 if contains_label else -1.0
    ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return ranks < sizes[:, None]


def wf_objective(forget_logits: torch.Tensor, forget_targets: torch.Tensor,
                 retain_logits: torch.Tensor, retain_targets: torch.Tensor,
                 alphas: Iterable[torch.Tensor], lambda_r: float = 1.0, lambda_f: float = 1.0,
                 lambda_s: float = 0.1, eps: float = 1e-3, ce_cap: float | None = None,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full objective; returns ``{"loss", "retain", "forget", "sparsity"}`` (``reduce``: see :func:`forget_loss`)."""
    r = retain_loss(retain_logits, retain_targets)
    f = forget_loss(forget_logits, forget_targets, eps, ce_cap, reduce)
    s = sparsity_loss(alphas)
    return {"loss": lambda_r * r + lambda_f * f + lambda_s * s, "retain": r, "forget": f, "sparsity": s}
