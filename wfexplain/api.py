"""Bring your own classifier: wrap it, check its gates, unlearn, evaluate, save and load it.

Weight filtering (Poppi et al., arXiv 2304.02049) needs only a frozen network and a set of gate
sites whose gates equal a change of weights. :func:`wrap` finds the sites of any torchvision or
timm classifier (:mod:`wfexplain.sites`) and *probes* them before anything is trained: every
site's gate must be applied in a forward pass, and with a different gate per sample each
sample's output must equal its own baked network; a site that fails is an error naming it,
never a silent no-op. Layers that look gateable but are left alone are reported as a warning.
The other functions take any map-style dataset of ``(image tensor, label)`` and return dicts.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.data import Dataset

from .atomic import replace_dir
from .backbones import BuildRefused, build_network, check_spec, default_heads, list_backbones, weight_shapes
from .checkpoint import load, save_checkpoint
from .configs import UnlearnConfig
from .data import DatasetInfo
from .engine import Progress, StopFlag, reset_memory, train_memory
from .evaluation import evaluate as _evaluate
from .filtering import FilteredModel, Sites, bake_gates
from .gate_coverage import Coverage, inert_sites, record
from .gates import strip_hooks
from .heads import Trace, trace_heads
from .inference import relative_error
from .layout import check_layout
from .manifest import CheckpointError, Manifest
from .sites import GateSite, check_sites, direct_sites, discover_sites, select, skipped


def wrap(module: nn.Module, class_names: Sequence[str], *, input_size: tuple[int, int, int],
         mean: Sequence[float], std: Sequence[float], head: str | Sequence[str] | None = None,
         sites: Sites | Sequence[str] = "auto", exclude: Sequence[str] = (), arch: str | None = None,
         arch_kwargs: dict | None = None, dataset: str = "custom", crop_pct: float | None = None,
         interpolation: str = "bilinear") -> FilteredModel:
    """A :class:`FilteredModel` over your own trained classifier (left in place, frozen, eval mode).

    Its :func:`wfexplain.coverage` (gated components per stage and kind, the layers left ungated and why,
    the sites whose gate never changed the output in the probe) is recorded; layers left ungated and sites with no
    effect are also warned about (:class:`UngatedLayersWarning`, :class:`InertSitesWarning`).

    Args:
        module: the classifier; its output must be ``[B, len(class_names)]`` logits.
        class_names: one name per output.
        input_size: ``(C, H, W)`` the network expects.
        mean, std: per-channel normalisation of its inputs.
        head: classifier head path(s), never gated (default: every layer whose output reaches the logits with no
            layer with weights in between, traced in one forward pass: :mod:`wfexplain.heads`). Given, a gate site
            that reaches the logits directly is refused.
        sites: ``"auto"``; module paths (or their prefixes): only the sites found under them; a list of
            :class:`~wfexplain.sites.GateSite`; or ``callable(module) -> sites``.
        exclude: module paths (or their prefixes) whose sites are left ungated (e.g. GoogLeNet's ``aux1``, ``aux2``).
        arch: how to rebuild it (``timm:NAME``, ``torchvision:NAME``, ``package.module:factory``), needed to save.
        arch_kwargs: keyword arguments of ``arch``.
        dataset: a name for the data (recorded in checkpoints).
        crop_pct, interpolation: how an image is resized to ``(H, W)`` (:class:`~wfexplain.data.DatasetInfo`): None,
            the whole image; else keeping its aspect, then its centre cropped (timm's ``crop_pct``); the filter.

    Raises:
        ValueError: no head or no site found, a site that cannot be gated (never applied, or its activation not laid
            out as its kind says: :mod:`wfexplain.layout`) or that feeds the logits directly, or a probe failure (the
            site named); the module is then left without gates.
    """
    c, h, w = input_size
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need one value per input channel ({c}), got {len(mean)} and {len(std)}")
    info = DatasetInfo(dataset, tuple(class_names), c, h, tuple(float(m) for m in mean), tuple(float(s) for s in std),
                       interpolation, crop_pct, w)
    name = check_spec(arch) if arch else f"<{type(module).__name__}>"
    if h != w and name in list_backbones():
        raise ValueError(f"the built-in backbone {name} takes square inputs, not {h}x{w}")
    trace, heads = _heads(module, name, head, input_size, len(class_names))
    heads = heads if heads is not None else default_heads(name, module, len(class_names))
    found, left, strict = _candidates(module, sites, exclude, heads)
    layout = check_layout(module, found, input_size)
    layout.check(strict)
    if not layout.sites:
        raise ValueError(f"no gate site of {type(module).__name__} can be gated: "
                         + ("; ".join(f"{p}: {why}" for p, why in layout.refused or left) or "none found"))
    model = FilteredModel(name, info, module, sites=layout.sites, heads=heads, arch_kwargs=arch_kwargs)
    try:
        direct = direct_sites(module, model.sites, model.heads, trace) if trace is not None else []
        if direct:
            assert trace is not None
            every = [*model.heads, *(p for p in trace.heads if p not in model.heads)]
            raise ValueError("gate site(s) whose output reaches the logits with no layer with weights between (a "
                             "class's filter would mask its own logit): " + ", ".join(f"{s.path} ({s.kind})" for s in direct)
                             + f"; they are classifier heads too: name them all (head={every!r}, "
                             f"--head {' '.join(every)})")
        result = probe(model)
    except ValueError:
        strip_hooks(module)  # the module is left as it came, ready to wrap again
        raise
    left = [*left, *layout.refused]
    record(model, Coverage.of(module, model.sites, left, result["inert"], layout.folded))
    if left:
        warnings.warn("left ungated: " + "; ".join(f"{p} ({why})" for p, why in left[:8])
                      + (f"; and {len(left) - 8} more" if len(left) > 8 else ""), UngatedLayersWarning, stacklevel=2)
    if result["inert"]:
        warnings.warn("gate site(s) whose gate, zeroed, never changed the output in the probe (kept; a filter there "
                      "does nothing on these inputs): " + ", ".join(result["inert"][:8])
                      + (f"; and {len(result['inert']) - 8} more" if len(result["inert"]) > 8 else ""),
                      InertSitesWarning, stacklevel=2)
    return model


def _candidates(module: nn.Module, sites: Sites | Sequence[str], exclude: Sequence[str],
                heads: list[str]) -> tuple[list[GateSite], list[tuple[str, str]], bool]:
    """``(sites to check, layers left ungated and why, whether the caller named the sites)``."""
    paths = not isinstance(sites, str) and isinstance(sites, Sequence) and bool(sites) \
        and all(isinstance(s, str) for s in sites)
    if sites is None or sites == "auto" or paths:
        found, left = discover_sites(module, heads), skipped(module, heads)
        return *select(module, found, left, cast(Sequence[str], sites) if paths else None, exclude), False
    if callable(sites):
        given = list(sites(module))
    elif isinstance(sites, str):
        raise ValueError(f"sites must be 'auto', module paths, a list of GateSite or a callable, got {sites!r}")
    else:
        given = [s if isinstance(s, GateSite) else GateSite(**cast(dict, s)) for s in sites]
    check_sites(module, given, heads)
    return *select(module, given, [], None, exclude), True


def _heads(module: nn.Module, name: str, head: str | Sequence[str] | None, input_size: tuple[int, int, int],
           num_classes: int) -> tuple[Trace | None, list[str] | None]:
    """The traced heads (:mod:`wfexplain.heads`) and the heads to use (None: the name-based fallback)."""
    if name in list_backbones():
        return None, [head] if isinstance(head, str) else list(head) if head is not None else None
    trace = trace_heads(module, input_size)
    if trace is None:  # say why the network does not run, rather than guess heads for a failing probe
        param = next(module.parameters(), None)
        x = torch.zeros(1, *input_size, device=param.device if param is not None else None,
                        dtype=param.dtype if param is not None and param.is_floating_point() else None)
        try:
            with torch.no_grad():
                module.eval()(x)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{type(module).__name__} cannot run on inputs of {input_size} (C, H, W): {first}") from None
    if head is not None:
        return trace, [head] if isinstance(head, str) else list(head)
    if trace is None:
        return None, None
    if trace.width != num_classes or not trace.heads:
        raise ValueError(f"no classifier head with {num_classes} outputs found in {type(module).__name__}: its output "
                         f"is {f'[B, {trace.width}]' if trace.width else 'not [B, K]'} for {num_classes} class names")
    return trace, list(trace.heads)


class UngatedLayersWarning(UserWarning):
    """:func:`wrap` found layers that look gateable but cannot be gated exactly (they stay as they are)."""


class InertSitesWarning(UserWarning):
    """:func:`wrap` kept gate sites whose gate, zeroed alone, never changed the output in the probe."""


@torch.no_grad()
def probe(model: FilteredModel, tolerance: float = 1e-4) -> dict:
    """Check every gate site: its gate is applied in a forward pass, and gated == baked (relative error < ``tolerance``).

    Returns:
        ``{"sites", "max_relative_error", "inert"}``: the sites whose gate, zeroed alone, changed no logit
        (:func:`wfexplain.gate_coverage.inert_sites`; kept, but a filter there does nothing).

    Raises:
        ValueError: the output is not ``[B, num_classes]``, or naming each site whose gate is never applied
            or does not bake exactly.
    """
    g = torch.Generator().manual_seed(0)
    device = next(model.backbone.parameters()).device
    info = model.info
    x = torch.randn(2, *info.input_size, generator=g).to(device)
    base = model.run_gated(x, None)
    if tuple(base.shape) != (2, model.num_classes):
        raise ValueError(f"the network returns {tuple(base.shape)} for 2 inputs of {tuple(x.shape[1:])}; expected "
                         f"(2, {model.num_classes}) logits (one per class name)")
    ones = {s.path: torch.ones(1, s.size, device=device) for s in model.sites}
    seen = _Recording(ones)
    model.run_gated(x, seen)
    dead = [s for s in model.sites if s.path not in seen.read]
    if dead:
        raise ValueError("gate site(s) whose gate is never applied (the hook never fires: the module is not called "
                         "as a module, or not at all): " + ", ".join(f"{s.path} ({s.kind})" for s in dead)
                         + "; pass sites= without them")
    # Two different gate rows, one per sample: each sample's gated output must equal its own baked network.
    rand = {s.path: 0.3 + 0.7 * torch.rand(2, s.size, generator=g).to(device) for s in model.sites}

    def error(gates: dict[str, torch.Tensor]) -> float:
        gated = model.run_gated(x, gates)
        worst = 0.0
        for b in range(2):
            baked = bake_gates(model, {k: v[b if len(v) == 2 else 0] for k, v in gates.items()}).to(device)(x[b:b + 1])
            worst = max(worst, relative_error(baked, gated[b:b + 1]))
        return worst

    worst = error(rand)
    if worst > tolerance:
        bad = [(s, e) for s in model.sites if (e := error({**ones, s.path: rand[s.path]})) > tolerance]
        raise ValueError("gated != baked at " + (", ".join(f"{s.path} ({s.kind}, relative error {e:.1e})" for s, e in bad)
                                                  or f"the sites together (relative error {worst:.1e})")
                         + "; pass sites= without them")
    return {"sites": len(model.sites), "max_relative_error": worst, "inert": inert_sites(model, x[:1])}


class _Recording(dict):
    """Gate values that remember which sites' hooks read them."""

    def __init__(self, gates: dict):
        super().__init__(gates)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def unlearn(model: FilteredModel, train_dataset: Dataset, config: UnlearnConfig = UnlearnConfig(),
            progress: Progress | None = None, should_stop: StopFlag | None = None, workers: int = 0) -> dict:
    """Train the memory matrices of every class in one round, from the original network (all gates 1).

    Returns:
        ``{"steps", "seconds", "final", "cancelled"}`` (:func:`wfexplain.engine.train_memory`).
    """
    if config.max_set_size >= model.num_classes:
        raise ValueError(f"max_set_size must be below the number of classes ({model.num_classes})")
    reset_memory(model)
    return train_memory(model, train_dataset, config, progress, should_stop, workers)


def evaluate(model: FilteredModel, test_dataset: Dataset, limit: int | None = None, pairs: bool = False,
             seed: int = 0, progress: Progress | None = None) -> dict:
    """Forget and retain accuracy of every single-class filter (and pair): the report ``wfexplain evaluate`` prints."""
    return _evaluate(model, test_dataset, limit=limit, pairs=pairs, seed=seed, progress=progress)


def save(model: FilteredModel, directory: str | os.PathLike, arch: str | None = None, arch_kwargs: dict | None = None,
         overwrite: bool = False, data_dir: str | os.PathLike | None = None, trust: bool = False, **fields) -> Manifest:
    """Write a checkpoint that :func:`wfexplain.load` rebuilds: ``arch`` says how (default: the model's own).

    The architecture is built once here, bounded by and compared with the model (names and shapes of
    every tensor); the checkpoint is then written aside, loaded back as a new process would and its logits
    compared (:func:`check_loads`), and only then swapped in for ``directory``: a checkpoint that cannot be
    loaded back is never saved (``CheckpointError``, ``directory`` untouched). ``trust`` allows a
    ``package.module:factory`` spec to be imported (else ``$WFEXPLAIN_TRUSTED_MODULES``).
    """
    spec = arch or model.backbone_name
    kwargs = dict(arch_kwargs if arch_kwargs is not None else model.arch_kwargs)
    try:
        check_spec(spec)
    except ValueError:
        raise ValueError(f"say how to rebuild this {type(model.backbone).__name__}: wfexplain.save(model, dir, "
                         "arch='timm:NAME' | 'torchvision:NAME' | 'package.module:factory')") from None
    info = model.info
    try:
        build_network(spec, info.num_classes, info.in_chans, info.img_size, kwargs, trust=trust,
                      expect=weight_shapes(model.backbone))
    except BuildRefused as e:
        raise ValueError(f"{spec} does not rebuild this network ({e}): pass the arch_kwargs it was created with, "
                         "or a package.module:factory that builds it") from None
    old = model.backbone_name, model.arch_kwargs
    model.backbone_name, model.arch_kwargs = spec, kwargs
    data = str(Path(data_dir).resolve()) if data_dir is not None else fields.pop("data_dir", None)
    try:
        with replace_dir(directory, overwrite=overwrite) as tmp:  # swapped in only once it loads back
            staged = tmp / "checkpoint"
            manifest = save_checkpoint(model, staged, {**fields, "data_dir": data})
            check_loads(model, staged, trust)
            moved = {p.name for p in staged.iterdir()}
            for name in moved:
                os.replace(staged / name, tmp / name)
            staged.rmdir()
            for p in tmp.iterdir():  # the staged directory's own lock file
                if p.name not in moved:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
    except BaseException:
        model.backbone_name, model.arch_kwargs = old
        raise
    return manifest


@torch.no_grad()
def check_loads(model: FilteredModel, directory: str | os.PathLike, trust: bool = False, tolerance: float = 1e-4) -> None:
    """Load ``directory`` as a new process would (:func:`wfexplain.load`: manifest, digests, the network rebuilt
    from its spec) and compare its logits with ``model``'s, unfiltered and forgetting class 0.

    Raises:
        CheckpointError: it does not load, or computes other logits (saying which and why).
    """
    try:
        loaded = load(directory, trust=trust)
    except Exception as e:  # anything a fresh process would hit
        raise CheckpointError(f"the checkpoint written for {model.backbone_name} cannot be loaded back, so it was not "
                              f"saved: {type(e).__name__}: {e}") from None
    param = next(model.backbone.parameters())
    info = model.info
    x = torch.randn(2, *info.input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(param.device, param.dtype)
    loaded.to(param.device, param.dtype)
    tolerance = tolerance if param.dtype in (torch.float32, torch.float64) else max(tolerance, 1e-2)
    was_training = model.training
    try:  # compared in eval mode (dropout off), the caller's mode restored
        with torch.no_grad():
            errors = [relative_error(loaded(x, forget=f), model.eval()(x, forget=f)) for f in (None, 0)]
    finally:
        model.train(was_training)
    for forget, err in zip((None, 0), errors, strict=True):
        if not err <= tolerance:
            what = "unfiltered" if forget is None else "forgetting class 0"
            raise CheckpointError(f"the checkpoint written for {model.backbone_name} loads back with other logits "
                                  f"({what}: relative error {err:.1e}), so it was not saved: the network "
                                  f"{model.backbone_name} builds does not compute what this one does")
