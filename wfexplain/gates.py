"""How a gate acts on each kind of site, on the activation side (hooks) and on the weight side (baking).

The two sides are exact equivalents (Poppi et al., arXiv 2304.02049: a filter is a change of
weights): scaling a normalisation's or a layer's output channels equals scaling its weight rows
and bias (for a ``"residual"`` site, those of the layer writing the residual stream, or its
LayerScale); scaling an attention head's output equals scaling its column block of the output
projection. Hooks read the gate values of the call in progress from thread-local state that only
:func:`run` sets, around one synchronous call of the network, and restores after it: one network
serves many threads, each with its own forget set, and no gate is ever stored on the network. A
forward never yields to another task mid-call, so this is as safe as a ``ContextVar``, whose ``set``
torch.compile cannot trace (a graph break); Dynamo traces thread-local attributes, so a compiled
:class:`~wfexplain.filtering.FilteredModel` is one graph, gates included. The handles of the hooks
installed here are kept, so that they are counted, removed (:func:`strip_hooks`) and left out of a copy
(:func:`ungated_copy`) through torch's public ``RemovableHandle``, never by editing hook dictionaries.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .sites import GateSite, residual_writer


class _Active(threading.local):
    """Gate values of the call in progress in this thread: {site path: [B or 1, K]} (None: ungated)."""

    def __init__(self) -> None:  # run in each thread on its first access: the attribute always exists
        self.gates: dict[str, torch.Tensor] | None = None


ACTIVE = _Active()


def run(backbone: nn.Module, x: torch.Tensor, gates: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """``backbone(x)`` with its hooks reading ``gates`` (restored after the call, even on an error)."""
    outer = ACTIVE.gates
    ACTIVE.gates = gates
    try:
        return backbone(x)
    finally:
        ACTIVE.gates = outer


def expand(gate: torch.Tensor, site: GateSite, x: torch.Tensor) -> torch.Tensor:
    """Reshape ``gate [B or 1, K]`` so it broadcasts over the activation ``x`` along the site's dim.

    An activation whose batch dim holds ``r`` rows per sample (attention over windows or patches folds the
    batch: ``[B*r, N, C]``, sample-major as timm and torchvision partition) takes each sample's gate ``r`` times;
    any other shape is a ValueError naming the site, never a bare broadcasting error.
    """
    width = site.size * (site.head_dim if site.kind in ("heads", "mha") else 1)
    if x.ndim < 2 or x.shape[site.dim] != width:
        raise ValueError(f"gate site {site.path!r} ({site.kind}): its activation is {list(x.shape)}, whose dim "
                         f"{site.dim} does not hold its {width} {'features' if width != site.size else 'components'}")
    if site.kind in ("heads", "mha"):
        gate = gate.repeat_interleave(site.head_dim, dim=1)
    gate = _per_row(gate, site, x)
    shape = [gate.shape[0]] + [1] * (x.ndim - 1)
    shape[site.dim] = gate.shape[1]
    return gate.view(shape)


def _per_row(gate: torch.Tensor, site: GateSite, x: torch.Tensor) -> torch.Tensor:
    """``gate [B or 1, ...]`` with one row per row of ``x`` (a batch-folded ``x``: each sample's row repeated)."""
    rows = gate.shape[0]
    if rows == 1 or x.shape[0] == rows:
        return gate
    if x.shape[0] % rows:
        raise ValueError(f"gate site {site.path!r} ({site.kind}): its activation is {list(x.shape)}, whose dim 0 "
                         f"is not the batch of {rows} (nor a multiple of it)")
    return gate.repeat_interleave(x.shape[0] // rows, dim=0)


def _output_hook(site: GateSite):
    def hook(module, inputs, output):
        gates = ACTIVE.gates
        return None if gates is None else output * expand(gates[site.path], site, output)

    return hook


def _input_hook(site: GateSite):
    def hook(module, inputs):
        gates = ACTIVE.gates
        if gates is None:
            return None
        x = inputs[0]
        return (x * expand(gates[site.path], site, x), *inputs[1:])

    return hook


def _mha_hook(site: GateSite):
    """nn.MultiheadAttention calls its out_proj functionally: recompute the attention with gated heads."""

    def hook(module: nn.MultiheadAttention, args, kwargs, output):
        gates = ACTIVE.gates
        if gates is None:
            return None
        a = mha_call(args, kwargs)
        out = _gated_mha(module, a["query"], a["key"], a["value"], gates[site.path],
                         a.get("key_padding_mask"), a.get("attn_mask"), site)
        return (out, output[1]) if isinstance(output, tuple) else out

    return hook


def mha_heads(m: nn.MultiheadAttention, q, k, v, key_padding_mask=None, attn_mask=None) -> torch.Tensor:
    """Each head's attention output ``[B, H, L, head_dim]`` (what ``out_proj`` mixes), computed as the module does."""
    if not m.batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    b, length, _ = q.shape
    h, d = m.num_heads, m.head_dim
    w = m.in_proj_weight.chunk(3)
    bias = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None,) * 3
    qh, kh, vh = (F.linear(t, wi, bi).view(b, -1, h, d).transpose(1, 2) for t, wi, bi in zip((q, k, v), w, bias, strict=True))
    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dtype != torch.bool else torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(
            attn_mask, float("-inf"))
        mask = mask.view(b, h, length, -1) if mask.ndim == 3 else mask
    if key_padding_mask is not None:
        pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            key_padding_mask.bool(), float("-inf"))[:, None, None, :]
        mask = pad if mask is None else mask + pad
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)  # [B, H, L, d]


def _gated_mha(m: nn.MultiheadAttention, q, k, v, gate, key_padding_mask=None, attn_mask=None,
               site: GateSite | None = None) -> torch.Tensor:
    heads = mha_heads(m, q, k, v, key_padding_mask, attn_mask)
    b, _, length, _ = heads.shape
    gate = _per_row(gate, site, heads) if site is not None else gate
    heads = heads * gate.to(heads.dtype)[:, :, None, None]
    out = m.out_proj(heads.transpose(1, 2).reshape(b, length, m.embed_dim))
    return out if m.batch_first else out.transpose(0, 1)


def mha_call(args, kwargs) -> dict:
    """The arguments of an ``nn.MultiheadAttention`` call, by name."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    return dict(zip(names, args, strict=False)) | kwargs


# The handles of the gate hooks installed on each network (torch's public RemovableHandle): how they are
# counted, removed, and left out of a copy, never by editing a module's hook dictionaries.
_HANDLES: weakref.WeakKeyDictionary[nn.Module, list[RemovableHandle]] = weakref.WeakKeyDictionary()


def install(backbone: nn.Module, sites: list[GateSite]) -> None:
    """Install the hooks of every site on ``backbone`` (once, for the network's lifetime)."""
    modules = dict(backbone.named_modules())
    handles = _HANDLES.setdefault(backbone, [])
    for site in sites:
        m = modules[site.path]
        if site.kind == "heads":
            handles.append(m.register_forward_pre_hook(_input_hook(site)))
        elif site.kind == "norm_act":  # between the normalisation and the activation (timm BatchNormAct2d)
            handles.append(m.drop.register_forward_pre_hook(_input_hook(site)))
        elif site.kind == "mha":
            handles.append(m.register_forward_hook(_mha_hook(site), with_kwargs=True))
        else:
            handles.append(m.register_forward_hook(_output_hook(site)))


@torch.no_grad()
def gated_tensors(backbone: nn.Module, sites: list[GateSite], x: torch.Tensor) -> tuple[dict[str, torch.Tensor], set[str]]:
    """What each site's gate would scale in ``backbone(x)`` (its first call; batch-first for ``"mha"``), ungated,
    and the paths of every module that was called. The hooks are gone again on return."""
    seen: dict[str, torch.Tensor] = {}
    called: set[str] = set()
    modules = dict(backbone.named_modules())
    handles = [m.register_forward_pre_hook(lambda *_, name=name: called.add(name)) for name, m in modules.items()]

    def keep(site: GateSite, t) -> None:
        if isinstance(t, torch.Tensor) and site.path not in seen:
            seen[site.path] = t.detach()

    for site in sites:
        m = modules[site.path]
        if site.kind in ("heads", "norm_act"):
            target = m.drop if site.kind == "norm_act" else m
            handles.append(target.register_forward_pre_hook(lambda _, args, site=site: keep(site, args[0])))
        elif site.kind == "mha":
            def first(mod, args, kwargs, output, site=site):
                q = mha_call(args, kwargs)["query"]
                keep(site, q if mod.batch_first else q.transpose(0, 1))
            handles.append(m.register_forward_hook(first, with_kwargs=True))
        else:
            handles.append(m.register_forward_hook(lambda _, args, out, site=site: keep(site, out)))
    try:
        run(backbone, x, None)
    finally:
        for h in handles:
            h.remove()
    return seen, called


def strip_hooks(module: nn.Module) -> nn.Module:
    """Remove every gate hook installed on ``module`` or on a network inside it (their handles); returns it."""
    for m in module.modules():
        for handle in _HANDLES.pop(m, []):
            handle.remove()
    return module


def ungated_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without the gates a FilteredModel installed on it (``module`` keeps them), ready
    to wrap again.

    The copy is made together with the hooks' handles, so each copied handle refers to the copy's own hook
    dictionaries (``RemovableHandle`` pickles the dictionary it removes from); removing those handles strips
    the copy alone, through torch's public API.
    """
    copied, handles = copy.deepcopy((module, [h for m in module.modules() for h in _HANDLES.get(m, [])]))
    for handle in handles:
        handle.remove()
    return copied


def count_hooks(module: nn.Module) -> int:
    """Gate hooks installed on ``module`` or on a network inside it."""
    return sum(len(_HANDLES.get(m, ())) for m in module.modules())


@torch.no_grad()
def bake_into(backbone: nn.Module, sites: list[GateSite], gates: dict[str, torch.Tensor]) -> nn.Module:
    """Scale the weights of ``backbone`` in place so that it computes what the gated network computes."""
    modules = dict(backbone.named_modules())
    for site in sites:
        m = modules[site.path]
        g = gates[site.path].to(device="cpu", dtype=torch.float32)
        if site.kind in ("heads", "mha"):
            proj = m.out_proj if site.kind == "mha" else m
            proj.weight.mul_(g.repeat_interleave(site.head_dim).to(proj.weight)[None, :])
            continue
        if site.kind == "residual":  # into the LayerScale, or the rows of the layer that writes the residual
            m = modules[residual_writer(backbone, site.path) or site.path]
            if m is modules[site.path]:
                m.gamma.mul_(g.to(m.gamma))
                continue
        g = g.to(m.weight)
        m.weight.mul_(g.view(-1, *[1] * (m.weight.ndim - 1)))  # weight rows (or the affine scale)
        if getattr(m, "bias", None) is not None:
            m.bias.mul_(g)
    return backbone
