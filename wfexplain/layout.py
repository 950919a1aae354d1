"""Where each gate lands: the layout of every site's activation, checked with a forward pass before anything is gated.

A gate ``[B, K]`` scales dim 1 (``"channels"``, ``"norm_act"``) or the last dim (the other kinds) of its site's
activation, one row per sample. Attention over windows or patches folds the batch (``[B*windows, N, C]``: timm
Swin, Swin-v2, MobileViT, DaViT, GCViT, MaxViT, TinyViT): such a site is gated per sample when the fold is
sample-major (each sample's rows together, as timm and torchvision partition windows), each sample's gate repeated
over its rows (:func:`wfexplain.gates.expand`). :func:`check_layout` runs the network once on two inputs and once on
the first alone (:func:`wfexplain.gates.gated_tensors`) and refuses, naming the layer and why, a site

- whose module is never called although its parent is (the parent computes with its weights directly, as
  torchvision's Swin attention does with ``proj``): a hook there would never fire;
- whose activation does not hold its components where its kind says (a channels-first norm read as a
  last-dimension one, or the reverse);
- whose dim 0 is not the batch (``[L, B, C]``), or folds it in another order than sample-major.

Discovered sites are left out with the reason, listed with :func:`wfexplain.sites.skipped`'s; sites the caller
named are an error (:meth:`Layout.check` with ``strict``). A site inside a branch the forward pass never enters
(torchvision GoogLeNet's and Inception's ``aux1``/``aux2``, run only in training) is always an error that says what
to exclude.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .gates import gated_tensors
from .sites import GateSite

_TOLERANCE = 1e-3  # batched vs single-sample activations agree to float error, far below this


@dataclass(frozen=True)
class Layout:
    """What :func:`check_layout` found: the sites kept, those refused (``(path, reason)``) and the folded ones."""

    sites: list[GateSite]
    refused: list[tuple[str, str]] = field(default_factory=list)
    folded: dict[str, int] = field(default_factory=dict)  # site path -> activation rows per sample (> 1)
    never_run: list[str] = field(default_factory=list)  # roots of branches holding sites that the forward never enters

    def check(self, strict: bool) -> None:
        """Raise ValueError for sites in a branch never run (saying what to exclude), and with ``strict`` for any
        site refused (each named with the reason)."""
        if self.never_run:
            roots = self.never_run
            raise ValueError(f"gate site(s) whose gate is never applied: {', '.join(roots)} never run in an eval-mode "
                             f"forward pass (a training-only branch, such as an auxiliary classifier), so their gates "
                             f"would never fire: exclude them (exclude={roots!r}; wfexplain import --exclude "
                             f"{' '.join(roots)})")
        if strict and self.refused:
            raise ValueError("gate site(s) that cannot be gated as given (a gate never applied or not on its components "
                             "per sample): " + "; ".join(f"{p}: {why}" for p, why in self.refused)
                             + "; pass sites= without them")


def _where(site: GateSite) -> str:
    """The layer a refusal names: the attention module for its heads, else the site itself."""
    return site.path.rpartition(".")[0] if site.kind == "heads" else site.path


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= _TOLERANCE * float(b.abs().max().clamp_min(1e-12))


def _problem(site: GateSite, two: torch.Tensor, one: torch.Tensor) -> tuple[str, int]:
    """``(why the site cannot be gated or "", rows per sample)`` from its activation on 2 inputs and on the first."""
    shape, width = list(two.shape), site.size * (site.head_dim if site.kind in ("heads", "mha") else 1)
    what = "heads not gated here" if site.kind == "heads" else "not gated here"
    if two.ndim < 2 or two.shape[site.dim] != width:
        return (f"its activation is {shape}, whose dim {site.dim} does not hold its {width} "
                f"{'channels' if site.dim == 1 else 'features'} (a channels-first layout read as channels-last, or the "
                f"reverse); {what}"), 1
    rows = one.shape[0]
    if two.shape[0] != 2 * rows or two.shape[1:] != one.shape[1:]:
        return (f"dim 0 of its activation is not the batch ({shape} for 2 inputs, {list(one.shape)} for 1: "
                f"sequence-first?); {what}"), 1
    if not _close(two[:rows].float(), one.float()):
        fold = f"folds the batch ([B*{rows}, ...]) in" if rows > 1 else "mixes the batch in"
        return f"{fold} another order than sample-major (each sample's rows together); {what}", rows
    return "", rows


def check_layout(backbone: nn.Module, sites: Sequence[GateSite], input_size: tuple[int, int, int]) -> Layout:
    """Check every site's activation on ``input_size`` inputs (``(C, H, W)``; see the module docstring); raises
    nothing (:meth:`Layout.check` does)."""
    sites = list(sites)
    param = next(backbone.parameters(), None)
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    if param is not None:
        x = x.to(param.device, param.dtype if param.is_floating_point() else None)
    was_training = backbone.training
    backbone.eval()
    try:
        two, called = gated_tensors(backbone, sites, x)
        one, _ = gated_tensors(backbone, sites, x[:1])
    finally:
        backbone.train(was_training)
    kept, refused, folded, dead = [], [], {}, []
    for s in sites:
        parent = s.path.rpartition(".")[0]
        if s.path not in two or s.path not in one:
            if s.path in called or parent in called:  # called with its weights taken directly, or not its gated part
                how = f"its {s.path.rpartition('.')[2]} is never called as a module (the attention is computed " \
                      "functionally)" if s.kind == "heads" else "its drop is never called as a module" \
                    if s.kind == "norm_act" else \
                    f"never called as a module ({parent or 'the network'} computes with its weights directly)"
                refused.append((_where(s), f"{how}: its gate would never be applied; "
                                           + ("heads not gated here" if s.kind == "heads" else "not gated here")))
            else:
                parts = s.path.split(".")
                dead.append(next(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) not in called))
            continue
        why, rows = _problem(s, two[s.path], one[s.path])
        if why:
            refused.append((_where(s), why))
            continue
        kept.append(s)
        if rows > 1:
            folded[s.path] = rows
    return Layout(kept, refused, folded, list(dict.fromkeys(dead)))
