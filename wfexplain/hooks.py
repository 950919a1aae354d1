"""Scoped, reversible hooks: see what a module receives or returns, and always leave the network as it was.

Every temporary hook of the library (Grad-CAM's activations, the benchmark's penultimate features,
a component's activations, the Grad-CAM layer probe, the classifier-head trace of :mod:`wfexplain.heads`,
the BatchNorm folding of :mod:`wfexplain.inference`) goes through :func:`watch`: the hooks exist
only inside the ``with`` block and are removed in ``finally``, whatever happens inside it.
Weight filtering's own gates are permanent hooks installed once (:mod:`wfexplain.gates`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from torch import nn

Seen = Callable[[str, nn.Module, tuple, object], object]  # (path, module, inputs, output) -> replacement or None


@contextmanager
def watch(modules: Mapping[str, nn.Module], on_output: Seen | None = None, on_input: Seen | None = None,
          with_kwargs: bool = False) -> Iterator[None]:
    """Call ``on_output(path, module, inputs, output)`` after, and ``on_input(path, module, inputs, None)``
    before, each module of ``modules`` runs, inside the block only.

    With ``with_kwargs`` the inputs are ``(args, kwargs)``. A callback may raise to stop the forward
    pass early (the hooks are removed all the same) or return a replacement value.
    """
    handles = []
    try:
        for path, module in modules.items():
            if on_input is not None:
                handles.append(module.register_forward_pre_hook(
                    (lambda p: lambda m, a, k=None: on_input(p, m, (a, k) if with_kwargs else a, None))(path),
                    with_kwargs=with_kwargs))
            if on_output is not None:
                handles.append(module.register_forward_hook(
                    (lambda p: lambda m, a, *rest: on_output(p, m, (a, rest[0]) if with_kwargs else a, rest[-1]))(path),
                    with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


def count(module: nn.Module) -> int:
    """Forward hooks and pre-hooks on ``module`` and its children (a test that none survive uses it)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
