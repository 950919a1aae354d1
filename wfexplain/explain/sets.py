"""What a forget SET does to each layer, read from the memory matrices alone (the dashboard's Memory page).

A forget set ``S`` (class indices) is applied as the product of its classes' filters: at a gate site (layer) ``l``
with memory ``alpha_l`` in ``[0,1]^(N x K_l)`` component ``k`` gets the **combined gate**

    ``g_l[k] = prod_{c in S} alpha_l[c,k]``          (what :meth:`~wfexplain.filtering.FilteredModel.combined_gates`
                                                       computes; ``1 - g`` is the set's combined mask)

and counts as **switched off** by the set when ``g_l[k] < t`` (threshold ``t``, default 0.5). An off component is
**shared** when at least one retained class's own row switches it off too (``exists c' not in S: alpha_l[c',k] < t``)
and **unique** to the set otherwise (:func:`wfexplain.explain.deletion.shared_components`); the others are **kept**.
Per layer ``unique + shared + kept = K_l``; the page shows each as a fraction of ``K_l``.

The default layer of the page's heatmap is the one whose rows differ most between classes
(:func:`layer_spread`, :func:`default_layer`): a layer every filter leaves alone (a ViT's final ``norm``, all
ones) reads as one flat colour and says nothing, whichever classes are chosen.

Inputs are memories as :func:`~wfexplain.explain.analysis.as_memory` accepts them (a FilteredModel or a mapping
layer -> ``[N, K]`` tensor / array); nothing here modifies a model or runs one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .analysis import Memory, as_memory
from .deletion import shared_components

THRESHOLD = 0.5


def members(memory: Memory, forget: Sequence[int]) -> list[int]:
    """The set's class indices, sorted and merged; raises ValueError for an empty set or an index out of range."""
    n = next(iter(as_memory(memory).values())).shape[0]
    out = sorted({int(c) for c in forget})
    if not out:
        raise ValueError("the forget set is empty")
    if out[0] < 0 or out[-1] >= n:
        raise ValueError(f"class indices are 0 to {n - 1}, got {out}")
    return out


def combined_gate(memory: Memory, forget: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per layer, the gate ``[K]`` the set applies: ``g[k] = prod_{c in S} alpha[c,k]`` (float64, in ``[0,1]``).

    Equals :meth:`FilteredModel.combined_gates` (float32 there); ``1 - g`` is the set's combined mask."""
    s = members(memory, forget)
    return {layer: a[s].prod(0) for layer, a in as_memory(memory).items()}


def set_components(memory: Memory, forget: Sequence[int], threshold: float = THRESHOLD) -> list[dict]:
    """One row per layer, in network order: what the set switches off there.

    Each row: ``layer``, ``components`` (``K``), the counts ``off = #{k: g[k] < t}``, ``unique``, ``shared`` and
    ``kept = K - off``, and each count over ``K`` as ``unique_fraction``, ``shared_fraction``, ``kept_fraction``
    (``off_fraction = unique_fraction + shared_fraction``). Plain Python ints and floats.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    s = members(memory, forget)
    rows = []
    for layer, parts in shared_components(as_memory(memory), s, threshold).items():
        k = int(parts["off"].numel())
        off, shared, unique = (int(parts[p].sum()) for p in ("off", "shared", "unique"))
        rows.append({"layer": layer, "components": k, "off": off, "unique": unique, "shared": shared,
                     "kept": k - off, "off_fraction": off / k, "unique_fraction": unique / k,
                     "shared_fraction": shared / k, "kept_fraction": (k - off) / k})
    return rows


def set_totals(rows: Sequence[dict]) -> dict:
    """Sums of :func:`set_components`' rows over all layers: ``layers``, ``components`` (``sum_l K_l``), ``off``,
    ``unique``, ``shared``, ``kept``, and ``off_fraction = off / components`` (every component counts once)."""
    out: dict = {key: sum(int(r[key]) for r in rows) for key in ("components", "off", "unique", "shared", "kept")}
    out["layers"] = len(rows)
    out["off_fraction"] = out["off"] / out["components"] if out["components"] else 0.0
    return out


def set_first(num_classes: int, forget: Iterable[int]) -> list[int]:
    """Row order that puts the set's classes first (ascending), then the retained ones (ascending)."""
    chosen = sorted({int(c) for c in forget if 0 <= int(c) < num_classes})
    return chosen + [c for c in range(num_classes) if c not in chosen]


def layer_spread(memory: Memory) -> dict[str, float]:
    """Per layer, how much its filters differ between classes: the mean over components of the spread of alpha
    over the classes,

        ``spread_l = mean_k std_c alpha_l[c,k]``   (population std, ``ddof = 0``; 0 for a single class),

    in ``[0, 0.5]``. 0: every class's filter treats each component alike (all kept, or all off): its heatmap is
    a set of flat columns. Large: components switched off for some classes and kept for others, the class-specific
    structure the page is about. Threshold-free, so it does not move with the page's threshold slider."""
    return {layer: float(a.std(0, unbiased=False).mean()) if a.shape[1] else 0.0
            for layer, a in as_memory(memory).items()}


def default_layer(memory: Memory) -> str:
    """The layer the Memory page opens on: the largest :func:`layer_spread`, ties (e.g. an untrained memory,
    all spreads 0) to the deepest such layer, so a memory with no structure opens on the last layer as before.

    ``argmax_l (spread_l, position_l)``. On the shipped checkpoints: fmnist-cnn ``features.9``, fmnist-vit
    ``blocks.3.mlp.fc2`` (not ``norm``, all ones), fmnist-resnet18 ``layer3.1.bn2``."""
    spread = layer_spread(memory)
    return max(enumerate(spread), key=lambda item: (spread[item[1]], item[0]))[1]
