"""Classifier heads, found from what reaches the logits.

A *head* is a layer whose output reaches the network's output with no other layer holding
weights in between: only parameter-free operations (pooling, reshaping, activations, dropout,
sums, maxima, averages). That is the classifier, and every auxiliary classifier the forward pass
adds to it (timm VOLO's ``aux_head``, DeiT's ``head_dist``), wherever it is registered. Gating such
a layer per class would let a class's filter mask its own logit, so heads are never gated.

:func:`trace_heads` finds them with one forward pass (batch 1, eval mode, no weight changes):
forward hooks on every module that holds parameters record the autograd node of its output, and a
walk back over the autograd graph from the network's output stops, on every path, at the first
node a module produced. The modules it stops at are the heads. An eval-mode BatchNorm (a
per-channel affine: it mixes nothing) is passed through as well, so a Linear before a BatchNorm1d
on the logits is a head too. A parameter used outside any module (``x @ self.proj`` in ``forward``)
is not a layer, so the walk goes past it: the layer before it counts as a head (left ungated),
the safe side.

Without an input size (a bare :func:`find_heads`) the probe input is guessed from the network
(its first convolution's channels; sizes it declares — timm ``patch_embed.img_size``,
``pretrained_cfg``, torchvision's ``image_size`` — then 32, 64 and 224 px). Where no forward pass
works, :func:`find_heads` falls back to the usual names with a :class:`HeadGuessWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import hooks

HEAD_NAMES = ("fc", "classifier", "heads", "head", "head_dist", "last_linear")


class HeadGuessWarning(UserWarning):
    """No forward pass could trace the heads: they were guessed from the usual names."""


@dataclass(frozen=True)
class Trace:
    """What reaches a network's output: ``heads`` (module paths, main classifier first) and the output ``width``."""

    heads: tuple[str, ...]
    width: int | None  # last dimension of a [B, K] output, None for any other shape


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _logits(out) -> torch.Tensor | None:
    """The logits of a forward pass's result: the tensor, the first of a tuple, or a ``.logits`` field."""
    found = getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    return next(_tensors(out), None)


def under(path: str, roots: Sequence[str]) -> bool:
    """``path`` is one of the module paths ``roots`` or lies inside one."""
    return any(path == r or path.startswith(r + ".") for r in roots)


def _ordered(model: nn.Module, reached: set[str]) -> tuple[str, ...]:
    """``reached`` outermost paths only, timm's ``get_classifier()`` first, then the usual names, then the rest."""
    outer = [p for p in reached if not any(p != q and under(p, [q]) for q in reached)]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    first = _classifier_paths(model)

    def rank(p: str) -> tuple[bool, bool, int]:
        named = under(p, first) or any(under(f, [p]) for f in first)
        return not named, p.rpartition(".")[2] not in HEAD_NAMES, order.get(p, 0)

    return tuple(sorted(outer, key=rank))


def _classifier_paths(model: nn.Module) -> list[str]:
    paths = {id(m): n for n, m in model.named_modules() if n}
    getter = getattr(model, "get_classifier", None)
    if not callable(getter):
        return []
    try:
        got = getter()
    except (TypeError, AttributeError, NotImplementedError):
        return []
    return [paths[id(m)] for m in (got if isinstance(got, tuple) else (got,)) if isinstance(m, nn.Module) and id(m) in paths]


def _trace_once(model: nn.Module, x: torch.Tensor) -> Trace:
    """Raises whatever the forward pass raises (a wrong input size): the caller tries another."""
    produced: dict[object, list[str]] = {}  # autograd node -> paths of the modules whose output it is
    keep: list[object] = []  # the nodes stay alive, so their identity does

    def record(path: str, _module: nn.Module, _inputs: tuple, output: object) -> None:
        for t in _tensors(output):
            if t.grad_fn is not None:
                produced.setdefault(t.grad_fn, []).append(path)
                keep.append(t.grad_fn)

    weighted = {path: m for path, m in model.named_modules() if path and any(True for _ in m.parameters(recurse=False))}
    transparent = {path for path, m in weighted.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    with hooks.watch(weighted, on_output=record), torch.enable_grad():
        out = _logits(model(x.requires_grad_(True)))
    if out is None or out.grad_fn is None:
        raise LookupError("the output does not depend on the input through autograd")
    reached: set[str] = set()
    seen: set[int] = set()
    stack: list[Any] = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        keep.append(node)
        paths = produced.get(node)
        if paths:
            reached.update(paths)
            if not all(p in transparent for p in paths):
                continue
        stack.extend(n for n, _ in node.next_functions)
    return Trace(_ordered(model, reached), int(out.shape[-1]) if out.ndim == 2 else None)


def _declared_sizes(model: nn.Module) -> list[int]:
    sizes: list[int] = []
    for owner, name in ((getattr(model, "patch_embed", None), "img_size"), (model, "image_size"), (model, "img_size")):
        v = getattr(owner, name, None) if owner is not None else None
        v = v[-1] if isinstance(v, list | tuple) and v else v
        if isinstance(v, int) and 1 < v <= 1024:
            sizes.append(v)
    cfg = getattr(model, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(size, list | tuple) and size and isinstance(size[-1], int):
        sizes.append(size[-1])
    return sizes


def probe_inputs(model: nn.Module) -> list[tuple[int, int, int]]:
    """Input sizes ``(C, H, W)`` worth trying on a network whose own is unknown (see the module docstring)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    chans = conv.in_channels if conv is not None else 3
    sizes = dict.fromkeys([*_declared_sizes(model), 32, 64, 224])
    return [(chans, s, s) for s in sizes]


def trace_heads(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> Trace | None:
    """The heads of ``model`` traced from one forward pass at ``input_size`` (default: :func:`probe_inputs`, tried
    in turn); None where no forward pass succeeds. Train/eval modes are restored; nothing else changes."""
    try:
        param = next(model.parameters())
    except StopIteration:
        return None
    if param.device.type == "meta":
        return None
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    g = torch.Generator().manual_seed(0)
    try:
        for size in [input_size] if input_size is not None else probe_inputs(model):
            x = torch.randn(1, *size, generator=g).to(device=param.device, dtype=param.dtype)
            try:
                return _trace_once(model, x)
            except Exception:  # a size the network does not take, or an output autograd cannot follow: next
                continue
        return None
    finally:
        for m, mode in modes:
            m.training = mode


def heads_by_name(model: nn.Module, num_classes: int | None = None) -> list[str]:
    """The old guess: timm's ``get_classifier()``, else the usual names (a container: its last Linear/Conv with
    ``num_classes`` outputs). Only where :func:`trace_heads` cannot run."""
    found = _classifier_paths(model)
    for name in HEAD_NAMES:
        m = getattr(model, name, None)
        if isinstance(m, nn.Module) and not isinstance(m, nn.Identity) and not any(
                name == h or name.startswith(h + ".") or h.startswith(name + ".") for h in found):
            found.append(name)
    if num_classes is None:
        return found
    heads = []
    for path in found:
        outs = [n for n, c in model.get_submodule(path).named_modules()
                if isinstance(c, nn.Linear | nn.Conv2d) and getattr(c, "out_features", getattr(c, "out_channels", 0))
                == num_classes]
        if outs:
            heads.append(f"{path}.{outs[-1]}" if outs[-1] else path)
    return heads


def find_heads(model: nn.Module, num_classes: int | None = None,
               input_size: tuple[int, int, int] | None = None) -> list[str]:
    """Paths of the classifier head(s): every layer whose output reaches the logits directly (:func:`trace_heads`).

    With ``num_classes``, a network whose output is not ``[B, num_classes]`` has none (``[]``). Where no forward
    pass works, the heads are guessed from the usual names, with a :class:`HeadGuessWarning`.
    """
    trace = trace_heads(model, input_size)
    if trace is None:
        warnings.warn(f"could not run {type(model).__name__} to trace its classifier heads"
                      + (f" at input size {input_size}" if input_size else "")
                      + "; guessed them from the usual names (pass head= to be sure)", HeadGuessWarning, stacklevel=2)
        return heads_by_name(model, num_classes)
    if num_classes is not None and trace.width != num_classes:
        return []
    return list(trace.heads)
