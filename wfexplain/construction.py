"""Bounded construction of a network: it may not build more than the weights it must hold.

A spec's arguments come from a file (``arch_kwargs`` in a manifest, ``--arch-kwargs``); building
what they ask for could take minutes or terabytes. :func:`bounded` counts every parameter, buffer and
submodule an ``nn.Module`` constructor registers in this thread, through torch's global registration
hooks, and aborts (:class:`BuildRefused`) as soon as it registers twice the tensors or elements the
weights hold, or runs past its time; :func:`check_shapes` then compares names and shapes exactly.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Mapping

import torch
from torch import nn

__all__ = ["BUILD_SECONDS", "BuildRefused", "BuildTimeout", "bounded", "check_shapes", "shape_mismatch", "weight_shapes"]

BUILD_SECONDS = 60.0  # the most a network's construction may take before it is refused


class BuildRefused(ValueError):
    """A network's construction ran past its budget (tensors, elements or seconds), or built other tensors than expected."""


class BuildTimeout(BuildRefused):
    """The construction ran past its time budget: a busy machine may succeed later, so it is not remembered."""


_budget = threading.local()  # the budget of the construction running in this thread (None: unbounded)
_hooks: list = []


def _charge(tensor: torch.Tensor | None = None) -> None:
    b = getattr(_budget, "active", None)
    if b is None:
        return
    if tensor is not None:
        b["tensors"] += 1
        b["elements"] += tensor.numel()
    if b["tensors"] > b["max_tensors"] or b["elements"] > b["max_elements"]:
        raise BuildRefused(f"it creates more than {b['max_tensors']:,} tensors or {b['max_elements']:,} elements, "
                           f"more than the weights hold ({b['what']})")
    if time.monotonic() > b["deadline"]:
        raise BuildTimeout(f"building it took over {b['seconds']:g} s ({b['what']})")


@contextlib.contextmanager
def bounded(expect: Mapping[str, tuple[int, ...]], seconds: float = BUILD_SECONDS) -> Iterator[None]:
    """Abort any ``nn.Module`` construction in this thread (raising :class:`BuildRefused`) once it registers
    twice the tensors or elements ``expect`` holds (plus a margin for buffers outside the state dict), or
    runs past ``seconds``. Counted through torch's global registration hooks, before anything else is built."""
    if not _hooks:
        from torch.nn.modules import module as M

        _hooks.extend([M.register_module_parameter_registration_hook(lambda m, n, p: _charge(p)),
                       M.register_module_buffer_registration_hook(lambda m, n, b: _charge(b)),
                       M.register_module_module_registration_hook(lambda m, n, s: _charge())])
    elements = sum(math.prod(s) for s in expect.values())
    outer = getattr(_budget, "active", None)
    _budget.active = {"tensors": 0, "elements": 0, "max_tensors": 2 * len(expect) + 64,
                      "max_elements": 2 * elements + (1 << 20), "deadline": time.monotonic() + seconds,
                      "seconds": seconds, "what": f"{len(expect):,} tensors, {elements:,} elements"}
    try:
        yield
    finally:
        _budget.active = outer


def weight_shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of a network's state dict: what a rebuilt copy must hold (``expect``)."""
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def shape_mismatch(built: Mapping[str, tuple[int, ...]], held: Mapping[str, tuple[int, ...]]) -> str | None:
    """What differs between the tensors a network ``built`` and those its weights ``held`` (None: nothing)."""
    missing, extra = sorted(set(built) - set(held)), sorted(set(held) - set(built))
    shapes = [f"{k}: expected {tuple(built[k])}, found {tuple(held[k])}" for k in built if k in held
              and tuple(held[k]) != tuple(built[k])]
    problems = [f"{label} {', '.join(items[:5])}" + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
                for label, items in (("missing weights", missing), ("unexpected weights", extra),
                                     ("shape mismatch", shapes)) if items]
    return " | ".join(problems) or None


def check_shapes(expect: Mapping[str, tuple[int, ...]], net: nn.Module) -> None:
    """:class:`BuildRefused` naming what differs between ``net``'s tensors and ``expect``."""
    why = shape_mismatch(weight_shapes(net), expect)
    if why:
        raise BuildRefused(why)
