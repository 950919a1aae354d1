"""Baseline unlearning methods, to compare with weight filtering (Poppi et al., arXiv 2304.02049).

Every baseline is a module with a frozen ``Config`` dataclass (defined, with each field's default
and valid range, in :mod:`wfexplain.configs`) and one function::

    unlearn(net, retain, forget, num_classes, cfg=Config(), seed=0, progress=None, should_stop=None) -> dict

Contract shared by all of them:

- ``net`` (a plain classifier, e.g. ``wfexplain.load(...).backbone``) is never modified: the
  method works on ``copy.deepcopy(net)`` with every parameter trainable, on the device of
  ``net``'s parameters.
- ``retain`` / ``forget`` are datasets of ``(image tensor, label)``, e.g.
  ``torch.utils.data.Subset`` of a training split by label.
- Everything random (batch order, random labels, dropout, subsets) derives from ``seed``:
  a fixed seed gives the same model. Batches come from seeded ``torch.Generator`` draws and
  the global RNG is seeded inside a forked RNG state (the caller's state is untouched).
- Cost is budgeted in steps (gradient batches), not epochs, so it does not grow with the
  data set.
- ``progress(step, total, metrics)`` is called after every step; ``should_stop()`` is
  checked before every step and, when it returns True, the method stops.
- The result is ``{"model", "steps", "seconds", "cancelled"}`` (plus method-specific
  extras): ``model`` is the unlearned copy in eval mode with ``net``'s ``requires_grad``
  flags, or ``None`` when cancelled; ``steps`` counts the gradient batches actually run.

Methods (:data:`BASELINES`): ``finetune`` (FT), ``neggrad_plus`` (NegGrad+),
``random_labels`` (RL), ``salun`` (SalUn) and ``ssd`` (Selective Synaptic Dampening).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from torch import nn
from torch.utils.data import Dataset

from ..engine import Progress, StopFlag
from . import finetune, neggrad_plus, random_labels, salun, ssd

BASELINES: dict[str, ModuleType] = {
    "finetune": finetune,
    "neggrad_plus": neggrad_plus,
    "random_labels": random_labels,
    "salun": salun,
    "ssd": ssd,
}


def list_baselines() -> list[str]:
    return list(BASELINES)


def get_baseline(name: str) -> ModuleType:
    """The module of a baseline; ``ValueError`` naming the valid ones for an unknown name."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return BASELINES[name]


def default_config(name: str) -> dict:
    """The default ``Config`` of a baseline as a plain dict (for manifests)."""
    return dataclasses.asdict(get_baseline(name).Config())


def run_baseline(name: str, net: nn.Module, retain: Dataset, forget: Dataset, num_classes: int, cfg=None, seed: int = 0,
                 progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Run one baseline by name. Returns its result dict (see module doc).

    ``cfg`` is the module's ``Config``, a dict of overrides of its defaults (e.g. from a
    manifest written with :func:`default_config`), or ``None`` for the defaults.
    """
    module = get_baseline(name)
    if cfg is None:
        cfg = module.Config()
    elif isinstance(cfg, dict):
        cfg = module.Config(**cfg)
    elif not isinstance(cfg, module.Config):
        raise TypeError(f"cfg for {name!r} must be a {module.__name__}.Config or a dict, got {type(cfg).__name__}")
    return module.unlearn(net, retain, forget, num_classes, cfg, seed=seed, progress=progress, should_stop=should_stop)


__all__ = ["BASELINES", "default_config", "get_baseline", "list_baselines", "run_baseline"]
