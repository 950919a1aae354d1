"""Read the memory matrices: what each filter switches off, and for which class.

A :class:`~wfexplain.filtering.FilteredModel` holds one memory matrix ``alpha`` in
``[0,1]^(N x K)`` per gate site (N classes, K components: BN channels, FC units or
attention heads). Row ``c`` is the filter that forgets class ``c``; ``alpha[c,k]`` near 0
means component ``k`` is switched off when class ``c`` is forgotten. The quantities here
are pure functions of those matrices (the one exception, :func:`top_activating`, runs the
network on a private copy):

- **suppression** ``s = 1 - alpha``: how strongly filter ``c`` suppresses component ``k``
  (0 = untouched, 1 = switched off).
- **specificity** ``spec[c,k] = s[c,k] - mean_{c' != c} s[c',k]``: how much more component
  ``k`` is suppressed for class ``c`` than for the other classes, in ``[-1, 1]``. Near 1:
  the component is off only when ``c`` is forgotten, i.e. it carries class-``c`` evidence;
  near 0: shared (off for all filters or for none).
- **class similarity** ``cos(s_c, s_c')`` of suppression vectors concatenated over layers:
  two classes are similar when their filters switch off the same components. A zero
  suppression vector has cosine 0 with every other class (1 with itself).
- **sparsity** ``mean_k [alpha[c,k] < t]``: the fraction of components filter ``c`` switches
  off (threshold ``t``, default 0.5); per layer, or over all layers (weighted by K).
- **memory size**: ``sum_l N * K_l`` entries, compared with the backbone parameter count.

Inputs may be torch tensors (live ``nn.Parameter`` included: they are detached) or numpy
arrays; matrix outputs are CPU ``torch.float64`` tensors, list outputs plain Python floats.
Nothing here modifies a model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from .. import gates as G
from ..filtering import FilteredModel
from ..hooks import watch

ORDER_MODES = ("original", "specificity", "clustered")
CLUSTER_METRICS = ("cosine", "euclidean")

Memory = Mapping[str, torch.Tensor] | FilteredModel


def _t(x) -> torch.Tensor:
    """A detached CPU float64 copy of a tensor / array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _matrix(alpha) -> torch.Tensor:
    a = _t(alpha)
    if a.ndim != 2:
        raise ValueError(f"a memory matrix must be 2-D [num_classes, K], got shape {tuple(a.shape)}")
    return a


def as_memory(memory: Memory) -> dict[str, torch.Tensor]:
    """Layer -> detached float64 ``[N, K]`` (accepts a FilteredModel or a mapping); rejects an empty memory."""
    if isinstance(memory, FilteredModel):
        memory = memory.memory
    out = {k: _matrix(v) for k, v in memory.items()}
    if not out:
        raise ValueError("the memory is empty (no gate sites)")
    return out


def select_layers(memory: dict[str, torch.Tensor], layers: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """The chosen layers of a memory (all for None); an unknown name raises ValueError listing the layers."""
    if layers is None:
        return memory
    if isinstance(layers, str):
        layers = [layers]
    unknown = [layer for layer in layers if layer not in memory]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; layers are: {', '.join(memory)}")
    if not layers:
        raise ValueError("no layers selected")
    return {layer: memory[layer] for layer in layers}


# ---------------------------------------------------------------- per matrix


def suppression(alpha) -> torch.Tensor:
    """``s = 1 - alpha``: 0 = component untouched by filter ``c``, 1 = switched off."""
    return 1.0 - _matrix(alpha)


def specificity(alpha) -> torch.Tensor:
    """How specific component ``k`` is to class ``c``, ``[N, K]`` in ``[-1, 1]``.

    ``spec[c,k] = (1 - alpha[c,k]) - mean_{c' != c} (1 - alpha[c',k])``.
    With a single class there are no other classes and ``spec = 1 - alpha``.
    """
    s = suppression(alpha)
    n = s.shape[0]
    if n == 1:
        return s
    others = (s.sum(0, keepdim=True) - s) / (n - 1)
    return s - others


def _cosine_similarity(x: torch.Tensor, zero_zero: float) -> torch.Tensor:
    """Row-wise cosine similarity ``[M, M]``; a zero row has cosine 0 with a non-zero row,
    ``zero_zero`` with another zero row and 1 with itself. Never NaN."""
    norms = x.norm(dim=1)
    nz = norms > 1e-12
    unit = torch.where(nz[:, None], x / norms.clamp_min(1e-12)[:, None], torch.zeros_like(x))
    sim = (unit @ unit.T).clamp(-1.0, 1.0)
    both_zero = ~nz[:, None] & ~nz[None, :]
    sim = torch.where(both_zero, torch.full_like(sim, zero_zero), sim)
    sim.fill_diagonal_(1.0)
    return sim


def order_components(alpha, mode: str = "original", metric: str = "cosine") -> torch.Tensor:
    """A permutation (LongTensor ``[K]``) of the components of ``alpha`` for display.

    Args:
        alpha: memory matrix ``[N, K]``.
        mode: ``"original"``: identity; ``"specificity"``: components grouped by the class
            they are most specific to (``argmax_c spec[c,k]``, classes in index order), then
            by decreasing specificity within a group; ``"clustered"``: leaf order of an
            average-linkage hierarchical clustering of the columns.
        metric: distance between columns for ``"clustered"``: ``"cosine"`` (on the
            suppression columns ``1 - alpha[:,k]``, so unused components, all-zero
            suppression, are identical to each other and at distance 1 from used ones) or
            ``"euclidean"``.

    Use as ``alpha[:, perm]``.
    """
    a = _matrix(alpha)
    k = a.shape[1]
    if mode not in ORDER_MODES:
        raise ValueError(f"unknown order mode {mode!r}; choose one of {', '.join(ORDER_MODES)}")
    if metric not in CLUSTER_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(CLUSTER_METRICS)}")
    if mode == "original" or k <= 1:
        return torch.arange(k, dtype=torch.long)
    if mode == "specificity":
        spec = specificity(a)
        best_val, best_cls = spec.max(0)
        # np.lexsort: last key is primary; stable, so ties keep the original order.
        perm = np.lexsort((-best_val.numpy(), best_cls.numpy()))
        return torch.as_tensor(perm, dtype=torch.long)
    cols = suppression(a).T  # [K, N]
    dist = 1.0 - _cosine_similarity(cols, zero_zero=1.0) if metric == "cosine" else torch.cdist(cols, cols)
    d = dist.numpy().copy()
    d = np.maximum((d + d.T) / 2, 0.0)
    np.fill_diagonal(d, 0.0)
    z = linkage(squareform(d, checks=False), method="average")
    return torch.as_tensor(leaves_list(z), dtype=torch.long)


# ---------------------------------------------------------------- across layers


def class_similarity(memory: Memory, layers: Sequence[str] | None = None) -> torch.Tensor:
    """Cosine similarity ``[N, N]`` of the classes' suppression vectors.

    ``sim[c,c'] = <s_c, s_c'> / (|s_c| |s_c'|)`` with ``s_c`` = ``1 - alpha[c]`` concatenated
    over ``layers`` (all by default). A zero vector (a filter that switches nothing off)
    has similarity 0 with every other class and 1 on the diagonal.
    """
    mem = select_layers(as_memory(memory), layers)
    s = torch.cat([suppression(a) for a in mem.values()], dim=1)
    return _cosine_similarity(s, zero_zero=0.0)


def most_alike(memory: Memory) -> tuple[int, int]:
    """The two classes whose memory rows are most alike (:func:`class_similarity`, the first pair of ties), sorted."""
    sim = class_similarity(memory).clone()
    if sim.shape[0] < 2:
        raise ValueError("most_alike needs at least two classes")
    sim.fill_diagonal_(-torch.inf)
    a, b = divmod(int(sim.argmax()), sim.shape[1])
    return min(a, b), max(a, b)


def class_dendrogram(similarity) -> dict:
    """Average-linkage clustering of classes on the distance ``1 - similarity``.

    Returns:
        ``{"linkage": scipy linkage matrix [N-1, 4] (float ndarray), "leaves": leaf order
        (list[int]), "distance": the symmetric [N, N] distance matrix used (ndarray)}``.
    """
    sim = _matrix(similarity).numpy()
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(f"a similarity matrix must be square, got shape {sim.shape}")
    d = np.clip(1.0 - (sim + sim.T) / 2, 0.0, None)
    np.fill_diagonal(d, 0.0)
    n = d.shape[0]
    if n < 2:
        return {"linkage": np.zeros((0, 4)), "leaves": list(range(n)), "distance": d}
    z = linkage(squareform(d, checks=False), method="average")
    return {"linkage": z, "leaves": [int(i) for i in leaves_list(z)], "distance": d}


def sparsity(memory: Memory, threshold: float = 0.5) -> dict[str, list[float]]:
    """Per layer, per class: the fraction of components switched off, ``mean_k [alpha[c,k] < t]``."""
    return {layer: (a < threshold).double().mean(1).tolist() for layer, a in as_memory(memory).items()}


def overall_sparsity(memory: Memory, threshold: float = 0.5) -> list[float]:
    """Per class, over all layers: ``sum_l #{k: alpha_l[c,k] < t} / sum_l K_l``.

    Every component counts once, so large layers weigh more than in the mean of
    :func:`sparsity`'s per-layer fractions.
    """
    mem = as_memory(memory)
    off = torch.stack([(a < threshold).double().sum(1) for a in mem.values()]).sum(0)  # as_memory: never empty
    total = sum(a.shape[1] for a in mem.values())
    return (off / total).tolist()


def top_components(memory: Memory, cls: int, k: int = 10) -> list[dict]:
    """The ``k`` components most specific to class ``cls``, across all layers.

    Ranked by ``spec[cls, k]`` (see :func:`specificity`, computed within each layer).
    Returns dicts ``{"layer", "index", "alpha", "specificity"}``, most specific first.
    """
    mem = as_memory(memory)
    n = next(iter(mem.values())).shape[0]
    if not 0 <= int(cls) < n:
        raise ValueError(f"class index {cls} out of range: valid classes are 0..{n - 1}")
    rows: list[dict[str, Any]] = []
    for layer, a in mem.items():
        spec = specificity(a)[cls]
        for i in range(a.shape[1]):
            rows.append({"layer": layer, "index": i, "alpha": float(a[cls, i]), "specificity": float(spec[i])})
    rows.sort(key=lambda r: -r["specificity"])  # stable: ties keep layer order
    return rows[: max(int(k), 0)]


def component_profile(memory: Memory, layer: str, index: int) -> list[float]:
    """``alpha[:, index]`` of ``layer``: that component's gate in each class's filter."""
    mem = select_layers(as_memory(memory), [layer])
    a = mem[layer]
    if not 0 <= int(index) < a.shape[1]:
        raise ValueError(f"component {index} out of range for {layer!r}: valid are 0..{a.shape[1] - 1}")
    return a[:, int(index)].tolist()


# ---------------------------------------------------------------- activations


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the site is reached."""


def _site(model: FilteredModel, layer: str):
    for s in model.sites:
        if s.path == layer:
            return s
    raise ValueError(f"unknown layer {layer!r}; layers are: {', '.join(s.path for s in model.sites)}")


@torch.no_grad()
def component_activations(model: FilteredModel, images: torch.Tensor, layer: str, index: int,
                          batch_size: int = 64) -> torch.Tensor:
    """Mean activation ``[B]`` of one component at its gate site, original network (no filter).

    - ``"channels"``: output channel ``index`` (e.g. of a BN, before the ReLU) averaged over H x W;
    - ``"features"``: output feature ``index`` averaged over tokens or positions (if any);
    - ``"norm_act"``: the normalisation's channel ``index``, before the fused activation;
    - ``"heads"``/``"mha"``: the L2 norm of head ``index``'s output, averaged over tokens.

    Runs on a private ``copy.deepcopy(model)`` with a temporary hook (removed in
    ``finally``); the forward pass stops at the site. ``images``: model-ready
    (normalised) ``[B, C, H, W]``.
    """
    site = _site(model, layer)
    if not 0 <= int(index) < site.size:
        raise ValueError(f"component {index} out of range for {layer!r}: valid are 0..{site.size - 1}")
    index = int(index)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    private = copy.deepcopy(model).eval()
    module = dict(private.backbone.named_modules())[layer]
    device = next(private.backbone.parameters()).device
    captured: list[torch.Tensor] = []

    def keep(y: torch.Tensor) -> None:
        captured.append(y.float().reshape(y.shape[0], -1).mean(1))
        raise _Captured

    lo, hi = index * site.head_dim, (index + 1) * site.head_dim

    def mha(path, mod, inputs, output) -> None:
        a = G.mha_call(*inputs)
        keep(G.mha_heads(mod, a["query"], a["key"], a["value"], a.get("key_padding_mask"),
                         a.get("attn_mask"))[:, index].norm(dim=-1))

    watching = {  # where each kind's component is seen
        "heads": lambda: watch({layer: module}, on_input=lambda p, m, inputs, o: keep(inputs[0][..., lo:hi].norm(dim=-1))),
        "mha": lambda: watch({layer: module}, on_output=mha, with_kwargs=True),
        "norm_act": lambda: watch({layer: module.drop},  # the normalisation's output, before the fused activation
                                  on_input=lambda p, m, inputs, o: keep(inputs[0].select(1, index))),
    }.get(site.kind, lambda: watch({layer: module},  # the other kinds' modules return one tensor
                                   on_output=lambda p, m, i, output: keep(cast(torch.Tensor, output).select(site.dim, index))))
    out = []
    with watching():
        for start in range(0, images.shape[0], batch_size):
            captured.clear()
            with contextlib.suppress(_Captured):
                private(images[start : start + batch_size].to(device), forget=None)
            if not captured:
                raise RuntimeError(f"the forward pass never reached {layer!r}")
            out.append(captured[0].cpu())
    return torch.cat(out) if out else torch.zeros(0)


def top_activating(model: FilteredModel, images: torch.Tensor, layer: str, index: int, k: int = 8) -> list[int]:
    """Indices into ``images`` of the (at most) ``k`` images with the highest mean activation
    of component ``index`` at gate site ``layer`` (see :func:`component_activations`),
    highest first."""
    acts = component_activations(model, images, layer, index)
    k = min(max(int(k), 0), acts.numel())
    return acts.topk(k).indices.tolist() if k else []


# ---------------------------------------------------------------- sizes


def memory_summary(model: FilteredModel) -> list[dict]:
    """One row per gate site plus a final ``"total"`` row.

    Keys: ``layer`` (path), ``kind``, ``components`` (K), ``memory_entries`` (N x K),
    ``percent_of_backbone`` (100 x entries / backbone parameter count).
    """
    n = model.num_classes
    params = sum(p.numel() for p in model.backbone.parameters())
    rows: list[dict[str, Any]] = [
        {"layer": s.path, "kind": s.kind, "components": s.size, "memory_entries": n * s.size,
         "percent_of_backbone": 100.0 * n * s.size / params} for s in model.sites]
    entries = sum(r["memory_entries"] for r in rows)
    rows.append({"layer": "total", "kind": f"{len(rows)} sites", "components": sum(r["components"] for r in rows),
                 "memory_entries": entries, "percent_of_backbone": 100.0 * entries / params})
    return rows
