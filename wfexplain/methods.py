"""The unlearning methods the benchmark compares: one registry, every other list derived from it.

A :class:`Method` record names a method, says what it is (a reference, ours or a baseline), cites its
paper and reference code, and for a baseline carries its config dataclass, its run function and its tuning
grid. The references and weight filtering are registered here; each baseline registers itself at the end
of its own module in :mod:`wfexplain.baselines` (importing that package registers them all). The CLI's
choices, the benchmark's rows, the Compare page's labels and the docs' method table come from
:func:`methods`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .configs import RemovalConfig, UnlearnConfig

ROLES = ("reference", "ours", "baseline")


@dataclass(frozen=True)
class Method:
    """One unlearning method (or reference) of the benchmark.

    Attributes:
        key: the name used in commands, files and tables (``neggrad_plus``).
        label: the display name (``NegGrad+``).
        role: ``"reference"`` (no unlearning, or the Retrain oracle: shown, never "best"), ``"ours"`` or
            ``"baseline"``.
        summary: what it does, in one line.
        paper: the paper it implements.
        code: the reference implementation it follows (URL; empty when there is none).
        config: its frozen hyperparameter dataclass (None: none of its own).
        run: a baseline's ``unlearn(net, retain, forget, num_classes, cfg, seed, progress, should_stop) -> dict``.
        grid: the tuning grid, field -> values tried; every configuration of the product is run on the
            validation split (:mod:`wfexplain.benchmark.tuning`). Empty: not tuned.
    """

    key: str
    label: str
    role: str
    summary: str
    paper: str
    code: str = ""
    config: type | None = None
    run: Callable[..., dict] | None = None
    grid: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"method {self.key!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.role == "baseline" and (self.config is None or self.run is None):
            raise ValueError(f"baseline {self.key!r} needs a config dataclass and a run function")
        names = {f.name for f in dataclasses.fields(self.config)} if self.config else set()
        unknown = sorted(set(self.grid) - names)
        if unknown:
            raise ValueError(f"method {self.key!r}: grid fields {unknown} are not fields of its config")
        object.__setattr__(self, "grid", MappingProxyType({k: tuple(v) for k, v in self.grid.items()}))

    def default_config(self) -> dict[str, Any]:
        """The defaults of its config as a plain dict (empty without one)."""
        return dataclasses.asdict(self.config()) if self.config else {}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every configuration of :attr:`grid` (overrides of the defaults), in a fixed order."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(self.grid[k] for k in keys))]


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (once per key; registering the same record again is a no-op)."""
    known = _REGISTRY.get(method.key)
    if known is not None and known != method:
        raise ValueError(f"a different method is already registered as {method.key!r}")
    _REGISTRY[method.key] = method
    return method


def methods(role: str | None = None) -> dict[str, Method]:
    """The registered methods in registration order (references, ours, then baselines), optionally of one role.

    Baselines register when :mod:`wfexplain.baselines` is imported; import it (or :mod:`wfexplain.benchmark`)
    to see them.
    """
    return {k: m for k, m in _REGISTRY.items() if role is None or m.role == role}


def get_method(key: str) -> Method:
    """The method registered as ``key``; ``ValueError`` naming the valid ones otherwise."""
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {key!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def method_label(key: str) -> str:
    """A display name for a method key (an unregistered key, e.g. a brought-your-own network, as it is)."""
    return _REGISTRY[key].label if key in _REGISTRY else key


register_method(Method(
    "original", "Original (no unlearning)", "reference", "the trained network, unchanged", "—"))
register_method(Method(
    "retrain", "Retrain (oracle)", "reference",
    "the same backbone and recipe trained from scratch without the forget set", "the exact-unlearning gold standard"))
register_method(Method(
    "wf", "WF (weight filtering)", "ours",
    "the memory matrices of one round for every class, baked for the forget set (suppression)",
    "Poppi et al., Multi-Class Unlearning for Image Classification via Weight Filtering, arXiv 2304.02049",
    "https://github.com/aimagelab/multi-class-unlearning",
    config=UnlearnConfig, grid={"lambda_f": (1.0, 4.0), "steps": (468, 936, 1872)}))
register_method(Method(
    "wf_removed", "WF + removal", "ours",
    "WF's filter, then the components below the threshold pruned and the rest repaired on retain images "
    "(`wfexplain remove`)", "this project (docs/method.md#suppression-and-removal)",
    config=RemovalConfig, grid={"lr": (1e-4, 1e-3), "steps": (250, 500, 1000)}))
