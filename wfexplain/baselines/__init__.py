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

Each module registers itself at its end as a :class:`wfexplain.methods.Method` (key, label, paper,
reference code, config, run function, tuning grid); importing this package registers them all, and
:data:`BASELINES` is derived from the registry: ``finetune`` (FT), ``neggrad_plus`` (NegGrad+),
``random_labels`` (RL), ``salun`` (SalUn), ``ssd`` (Selective Synaptic Dampening), ``scrub`` (SCRUB)
and ``l1_sparse`` (ℓ1-sparse).
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from ..engine import Progress, StopFlag
from ..methods import Method, get_method, methods
from . import finetune, l1_sparse, neggrad_plus, random_labels, salun, scrub, ssd  # noqa: F401  (each registers itself)

BASELINES: dict[str, Method] = methods("baseline")


def get_baseline(name: str) -> Method:
    """The registered baseline ``name``; ``ValueError`` naming the valid ones otherwise."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return get_method(name)


def default_config(name: str) -> dict:
    """The default ``Config`` of a baseline as a plain dict (for manifests)."""
    return get_baseline(name).default_config()


def run_baseline(name: str, net: nn.Module, retain: Dataset, forget: Dataset, num_classes: int, cfg=None, seed: int = 0,
                 progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict:
    """Run one baseline by name. Returns its result dict (see module doc).

    ``cfg`` is the method's config, a dict of overrides of its defaults (e.g. from a manifest written with
    :func:`default_config`), or ``None`` for the defaults.
    """
    method = get_baseline(name)
    assert method.config is not None and method.run is not None  # a registered baseline has both
    if cfg is None:
        cfg = method.config()
    elif isinstance(cfg, dict):
        cfg = method.config(**cfg)
    elif not isinstance(cfg, method.config):
        raise TypeError(f"cfg for {name!r} must be a {method.config.__name__} or a dict, got {type(cfg).__name__}")
    return method.run(net, retain, forget, num_classes, cfg, seed=seed, progress=progress, should_stop=should_stop)


__all__ = ["BASELINES", "default_config", "get_baseline", "run_baseline"]
