"""Gate sites: the components of a classifier that the memory matrices switch off, found automatically.

Weight filtering (Poppi et al., arXiv 2304.02049) multiplies the output of chosen components by a
learned gate per class. A gate is useful only where it equals a change of weights, so that a
forget set can be *baked* into a plain copy of the network. :func:`discover_sites` walks any
torchvision or timm classifier (modules in registration order) and returns such sites:

- ``"channels"``: output channels (dim 1) of a normalisation that follows a convolution
  (BatchNorm, GroupNorm, timm ``LayerNorm2d`` and its subclasses), and the hidden 1×1 convolution of a
  squeeze-excitation block; baked into the weight rows and bias;
- ``"features"``: output features (last dim) of a hidden Linear (every Linear of a block but its
  last one, so MLP ``fc1``), of the last Linear of a Transformer block's MLP (``fc2``: what the MLP
  writes into the residual stream), of a ``LayerNorm`` over the channels of a channels-last
  convolution (ConvNeXt), and of a Transformer's final ``LayerNorm`` (timm ``norm``/``fc_norm``,
  torchvision ``encoder.ln``); baked into the weight rows and bias (or the affine);
- ``"residual"``: the channels an attention block or a patch embedding writes into the residual
  stream, gated on the pass-through layer right after the writer (timm ``blocks.i.ls1``, an
  ``Identity`` or a ``LayerScale``; torchvision's ``dropout`` after ``self_attention``; timm
  ``patch_embed.norm`` when it is an ``Identity``); baked into the ``LayerScale`` or the writer's
  rows and bias (``attn.proj``, ``self_attention.out_proj``, ``patch_embed.proj``) — see
  :func:`residual_writer`. Without these the class token carries what the heads computed straight
  past every gate to the classifier;
- ``"norm_act"``: timm's fused ``BatchNormAct2d``/``GroupNormAct``/``LayerNormAct2d``, gated between the
  normalisation and the activation (a pre-hook on its ``drop``); baked into its affine;
- ``"heads"``: the attention heads of a module with ``qkv``, ``num_heads`` and a ``proj`` Linear (timm
  ``Attention``, Swin/Swin-v2/BEiT/DaViT/GCViT/MaxxViT attention: a pre-hook on ``proj``, so a ``qkv`` used
  functionally does not matter); baked into ``proj``'s column blocks;
- ``"mha"``: the heads of ``nn.MultiheadAttention`` (which never calls ``out_proj`` as a module, so
  the gated attention is recomputed in a hook); baked into ``out_proj``'s column blocks.

The classifier head(s) (:func:`find_heads`, :mod:`wfexplain.heads`: every layer whose output reaches the
logits with no layer holding weights in between) are never gated. Anything else is left alone and
listed by :func:`skipped`; :mod:`wfexplain.layout` checks each site's activation (batch-folded attention, a
channels-first norm) and the probe in :func:`wfexplain.wrap` checks every site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .heads import Trace, find_heads, under

__all__ = ["KINDS", "GateSite", "check_sites", "direct_sites", "discover_sites", "find_heads", "residual_writer",
           "select", "skipped"]

KINDS = ("channels", "features", "norm_act", "heads", "mha", "residual")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NormLayer = nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm  # the layers _channels reads
_FINAL_NORMS = ("norm", "fc_norm", "encoder.ln")  # a Transformer's last normalisation before the head


@dataclass(frozen=True)
class GateSite:
    """One gated layer: ``size`` components of the module at ``path``."""

    path: str  # dotted module path inside the backbone
    kind: str  # one of KINDS
    size: int  # number of components K
    head_dim: int = 1  # features per component ("heads", "mha")

    @property
    def dim(self) -> int:
        """The activation dimension the gate scales (1: channels of NC..., -1: last)."""
        return 1 if self.kind in ("channels", "norm_act") else -1

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "size": self.size, "head_dim": self.head_dim}


def _is_layernorm2d(m: nn.Module) -> bool:
    """A ``LayerNorm`` over dim 1 of NCHW (timm ``LayerNorm2d`` and its subclasses: MetaFormer's ``LayerNorm2dNoBias``,
    ``LayerNormAct2d``), which a last-dimension gate would misread."""
    return isinstance(m, nn.LayerNorm) and any("2d" in c.__name__.lower() for c in type(m).__mro__
                                             if issubclass(c, nn.LayerNorm))


def _is_norm_act(m: nn.Module) -> bool:  # timm BatchNormAct2d, GroupNormAct, LayerNormAct2d: drop, then act
    return (isinstance(m, _NORMS) or _is_layernorm2d(m)) and hasattr(m, "act") and hasattr(m, "drop")


def _head_dim(m: nn.Module) -> int | None:
    """Features per head of an attention module that projects its concatenated heads with a ``proj`` Linear (timm
    ``Attention``, Swin, Swin-v2, BEiT, DaViT, GCViT, MaxViT attention; torchvision Swin): None if not one."""
    proj, heads = getattr(m, "proj", None), getattr(m, "num_heads", None)
    if not isinstance(getattr(m, "qkv", None), nn.Module) or not isinstance(proj, nn.Linear) \
            or not isinstance(heads, int) or heads < 1 or proj.in_features % heads:
        return None
    return proj.in_features // heads


def _is_timm_attention(m: nn.Module) -> bool:
    return _head_dim(m) is not None


def _is_layer_scale(m: nn.Module) -> bool:
    return type(m).__name__ == "LayerScale" and isinstance(getattr(m, "gamma", None), nn.Parameter)


def _is_attention(m: nn.Module | None) -> bool:
    return m is not None and (_is_timm_attention(m) or isinstance(m, nn.MultiheadAttention))


def residual_writer(model: nn.Module, path: str) -> str | None:
    """The path of the layer a ``"residual"`` gate at ``path`` is baked into (None: ``path`` is no such site).

    That is the ``LayerScale`` at ``path`` itself, or the layer whose output passes unchanged through
    ``path`` into the residual stream: ``attn.proj`` before a timm block's ``ls1``,
    ``self_attention.out_proj`` before a (batch-first) torchvision block's ``dropout``, and
    ``proj`` before the ``norm`` of a timm patch embedding that flattens to ``[B, L, C]``.
    """
    parent, _, name = path.rpartition(".")
    try:
        m, block = model.get_submodule(path), model.get_submodule(parent)
    except AttributeError:
        return None
    attn = getattr(block, "attn", None)
    if name == "ls1" and isinstance(attn, nn.Module) and _is_timm_attention(attn):
        return path if _is_layer_scale(m) else f"{parent}.attn.proj" if isinstance(m, nn.Identity) else None
    mha = getattr(block, "self_attention", None)
    if name == "dropout" and isinstance(mha, nn.MultiheadAttention) and mha.batch_first and isinstance(m, nn.Dropout):
        return f"{parent}.self_attention.out_proj"
    proj = getattr(block, "proj", None)
    if name == "norm" and isinstance(m, nn.Identity) and isinstance(proj, nn.Conv2d) and getattr(block, "flatten", False):
        return f"{parent}.proj"
    return None


def _writer_size(model: nn.Module, path: str) -> int:
    w = model.get_submodule(residual_writer(model, path) or path)
    if _is_layer_scale(w):
        return int(cast(torch.Tensor, w.gamma).numel())
    return getattr(w, "out_features", getattr(w, "out_channels", 0))


def _affine(m: nn.Module) -> bool:
    return isinstance(getattr(m, "weight", None), nn.Parameter)


def _channels(m: _NormLayer) -> int:
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1]
    return m.num_features


def _is_1x1(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1


def discover_sites(model: nn.Module, heads: Sequence[str]) -> list[GateSite]:
    """The gate sites of ``model`` (see the module docstring); nothing under ``heads`` is ever gated."""
    return _walk(model, heads)[0]


def skipped(model: nn.Module, heads: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, reason)`` of layers that look gateable but are left alone."""
    return _walk(model, heads)[1]


def _walk(model: nn.Module, heads: Sequence[str]) -> tuple[list[GateSite], list[tuple[str, str]]]:
    sites: list[GateSite] = []
    left: list[tuple[str, str]] = []
    children = {n: list(m.named_children()) for n, m in model.named_modules()}
    done: set[str] = set()  # subtrees already handled (attention modules)
    prev_leaf: tuple[str, nn.Module] | None = None
    gated_convs: set[str] = set()
    seq_first = [n for n, m in model.named_modules()  # blocks whose activations are [L, B, ...]: the batch is not dim 0
                 if any(isinstance(c, nn.MultiheadAttention) and not c.batch_first for _, c in m.named_children())]
    for path, m in model.named_modules():
        if not path or under(path, heads) or under(path, list(done)):
            continue
        if isinstance(m, nn.Linear) and under(path, seq_first):
            left.append((path, "a sequence-first ([L, B, F]) block: per-sample gates need the batch in dim 0"))
            prev_leaf = (path, m)
            continue
        if isinstance(m, nn.MultiheadAttention):
            done.add(path)
            if m.bias_k is not None or m.add_zero_attn or not m._qkv_same_embed_dim:
                left.append((path, "MultiheadAttention with bias_k/add_zero_attn/kdim is not supported"))
            else:
                sites.append(GateSite(path, "mha", m.num_heads, m.head_dim))
            continue
        if (head_dim := _head_dim(m)) is not None:
            done.add(path)
            extra = [a for a in ("norm", "gate") if getattr(m, a, None) is not None
                     and not isinstance(getattr(m, a), nn.Identity)]
            if extra:
                left.append((path, f"attention with {'/'.join(extra)} before its projection"))
            else:
                sites.append(GateSite(f"{path}.proj", "heads", cast(int, m.num_heads), head_dim))
            continue
        if isinstance(m, nn.LayerNorm) and path in _FINAL_NORMS and _affine(m):
            sites.append(GateSite(path, "channels" if _is_layernorm2d(m) else "features", _channels(m)))
            prev_leaf = (path, m)
            continue
        if residual_writer(model, path) is not None:
            sites.append(GateSite(path, "residual", _writer_size(model, path)))
            prev_leaf = (path, m)
            done.add(path)
            continue
        if isinstance(m, (*_NORMS, nn.LayerNorm)):  # timm's fused norm+act layers are _NORMS too
            prev_path, prev = prev_leaf if prev_leaf is not None else ("", None)
            after_conv = isinstance(prev, _CONVS) and prev.out_channels == _channels(m)
            if after_conv and prev_path not in gated_convs:
                if hasattr(m, "act") and not _is_norm_act(m):
                    left.append((path, "a normalisation fused with its activation over the last dim: a gate on its "
                                       "output would follow the activation"))
                elif not _affine(m):
                    left.append((path, "normalisation without affine parameters"))
                elif _is_norm_act(m):
                    sites.append(GateSite(path, "norm_act", _channels(m)))
                elif isinstance(m, _NORMS) or _is_layernorm2d(m):
                    sites.append(GateSite(path, "channels", _channels(m)))
                else:  # a LayerNorm over a channels-last conv output
                    sites.append(GateSite(path, "features", _channels(m)))
            prev_leaf = (path, m)
            if _is_norm_act(m):
                done.add(path)
            continue
        if not children[path]:
            parent = path.rpartition(".")[0]
            siblings = children[parent]
            if isinstance(m, nn.Linear):
                linears = [n for n, c in siblings if isinstance(c, nn.Linear)]
                name = path.rpartition(".")[2]
                block = parent.rpartition(".")[0]
                in_transformer = parent and any(_is_attention(c) for _, c in children[block])  # an MLP's residual write
                if linears and (name != linears[-1] or in_transformer) and m.out_features > 1:
                    sites.append(GateSite(path, "features", m.out_features))
            elif _is_1x1(m) and m.bias is not None:
                convs = [n for n, c in siblings if isinstance(c, _CONVS)]
                no_norm = not any(isinstance(c, (*_NORMS, nn.LayerNorm)) for _, c in siblings)
                if len(convs) == 2 and all(_is_1x1(c) for n, c in siblings if n in convs) and no_norm \
                        and path.rpartition(".")[2] == convs[0]:  # squeeze-excitation: its hidden layer
                    sites.append(GateSite(path, "channels", m.out_channels))
                    gated_convs.add(path)
            prev_leaf = (path, m)
    return sites, left


def select(model: nn.Module, sites: Sequence[GateSite], left: Sequence[tuple[str, str]], only: Sequence[str] | None = None,
           exclude: Sequence[str] = ()) -> tuple[list[GateSite], list[tuple[str, str]]]:
    """The ``sites`` under a path of ``only`` (None: all) and under none of ``exclude`` (module paths or their
    prefixes), and ``left`` with every site dropped and why.

    Raises:
        ValueError: a path that is no module of ``model``, or an ``only`` path that holds no gate site.
    """
    modules = dict(model.named_modules())
    for option, paths in (("sites", only or ()), ("exclude", exclude)):
        for p in paths:
            if p not in modules:
                raise ValueError(f"{option}: {p!r} is no module of this {type(model).__name__}")
            if option == "sites" and not any(under(s.path, [p]) for s in sites):
                why = next((f"{q}: {w}" for q, w in left if under(q, [p]) or under(p, [q])), None)
                raise ValueError(f"sites: {p!r} holds no gate site" + (f" (left ungated: {why})" if why else ""))
    kept, out = [], list(left)
    for s in sites:
        if only is not None and not under(s.path, only):
            out.append((s.path, "not among the sites asked for (sites=, --sites)"))
        elif under(s.path, exclude):
            out.append((s.path, "excluded (exclude=, --exclude)"))
        else:
            kept.append(s)
    return kept, out


def check_sites(model: nn.Module, sites: Sequence[GateSite], heads: Sequence[str]) -> None:
    """Raise ValueError naming the first site that cannot be gated as its kind says."""
    modules = dict(model.named_modules())
    seen = set()
    for s in sites:
        where = f"gate site {s.path!r} ({s.kind})"
        if s.kind not in KINDS:
            raise ValueError(f"{where}: unknown kind; choose one of {', '.join(KINDS)}")
        if s.path in seen:
            raise ValueError(f"{where}: listed twice")
        seen.add(s.path)
        if s.path not in modules:
            raise ValueError(f"{where}: no such module in the network")
        if under(s.path, heads) or (s.kind == "heads" and under(s.path.rpartition(".")[0], heads)):
            raise ValueError(f"{where}: inside the classifier head {', '.join(heads)}, which is never gated")
        m = modules[s.path]
        ok = {"channels": isinstance(m, (*_CONVS, *_NORMS)) or _is_layernorm2d(m),
              "features": isinstance(m, nn.Linear | nn.LayerNorm),
              "norm_act": _is_norm_act(m),
              "heads": isinstance(m, nn.Linear),
              "mha": isinstance(m, nn.MultiheadAttention),
              "residual": residual_writer(model, s.path) is not None}[s.kind]
        if not ok:
            raise ValueError(f"{where}: a {type(m).__name__} cannot be gated as {s.kind!r}")
        if s.kind == "residual" and _writer_size(model, s.path) != s.size:
            raise ValueError(f"{where}: its writer {residual_writer(model, s.path)} has {_writer_size(model, s.path)} "
                             f"channels, the site says {s.size}")
        if s.kind in ("channels", "features", "norm_act") and not _affine(m):
            raise ValueError(f"{where}: {type(m).__name__} has no weight to bake the gate into")
        if s.kind != "residual" and (size := _size(m, s)) != s.size:
            raise ValueError(f"{where}: the module has {size} components, the site says {s.size}")
        if s.kind in ("heads", "mha"):
            width = m.in_features if s.kind == "heads" else m.num_heads * m.head_dim
            if s.head_dim < 1 or s.size * s.head_dim != width:
                raise ValueError(f"{where}: {s.size} heads x head_dim {s.head_dim} do not make the module's {width} features")


def _size(m: nn.Module, s: GateSite) -> int:
    # check_sites has checked the module's class for its kind, so the asserts below always hold.
    if s.kind == "heads":
        assert isinstance(m, nn.Linear)
        return m.in_features // s.head_dim
    if s.kind == "mha":
        assert isinstance(m, nn.MultiheadAttention)
        return m.num_heads
    if isinstance(m, _CONVS):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    assert isinstance(m, _NormLayer)
    return _channels(m)


def direct_sites(model: nn.Module, sites: Sequence[GateSite], heads: Sequence[str], trace: Trace) -> list[GateSite]:
    """The sites outside ``heads`` whose output (or, for a ``"residual"`` site, its writer's) reaches the logits
    directly (:func:`wfexplain.heads.trace_heads`): gating one would mask a class's own logit."""
    def direct(path: str | None) -> bool:
        return path is not None and (under(path, trace.heads) or any(under(h, [path]) for h in trace.heads))

    return [s for s in sites if not under(s.path, heads)
            and (direct(s.path) or (s.kind == "residual" and direct(residual_writer(model, s.path))))]
